import Foundation
import TLLMFuzzTargets

#if TLLM_FUZZING
    /// libFuzzer's driver (from `libclang_rt.fuzzer_no_main`, linked in a `TLLM_SANITIZE=fuzzer` build).
    @_silgen_name("LLVMFuzzerRunDriver")
    private func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    /// The target this process fuzzes, chosen once before the driver starts.
    nonisolated(unsafe) private var selectedTarget: ([UInt8]) -> Void = { _ in }
#endif

/// `tllm-fuzz TARGET [libFuzzer flags] [corpus directories or files]`.
///
/// Built with `TLLM_SANITIZE=fuzzer` (scripts/fuzz.sh) this is a libFuzzer binary with
/// AddressSanitizer; in an ordinary build it replays the given files or directories through the
/// target once each (how a crash found elsewhere is reproduced, and how CI checks the corpora).
@main
struct FuzzMain {
    static func main() {
        var arguments = CommandLine.arguments
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        // `selftest` is no format: it has a planted heap overflow (see FuzzTarget.selfTest).
        var target: (([UInt8]) -> Void)?
        if arguments.count >= 2 {
            if arguments[1] == "selftest" {
                target = FuzzTarget.selfTest
            } else if let format = FuzzTarget(rawValue: arguments[1]) {
                target = format.run
            }
        }
        guard let target else {
            FileHandle.standardError.write(Data("usage: tllm-fuzz TARGET [inputs...]; targets: \(names)\n".utf8))
            exit(2)
        }
        let name = arguments.remove(at: 1)
        #if TLLM_FUZZING
            selectedTarget = target
            FileHandle.standardError.write(Data("tllm-fuzz: fuzzing \(name)\n".utf8))
            var argc = CInt(arguments.count)
            var pointers = arguments.map { strdup($0) } + [nil]
            let status = pointers.withUnsafeMutableBufferPointer { buffer in
                var argv = buffer.baseAddress
                return runFuzzerDriver(&argc, &argv) { data, size in
                    selectedTarget(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
                    return 0
                }
            }
            exit(status)
        #else
            var count = 0
            for path in arguments.dropFirst() {
                for file in inputFiles(path) {
                    guard let data = FileManager.default.contents(atPath: file) else {
                        FileHandle.standardError.write(Data("tllm-fuzz: cannot read \(file)\n".utf8))
                        exit(1)
                    }
                    target(Array(data))
                    count += 1
                }
            }
            print("tllm-fuzz \(name): ran \(count) inputs")
        #endif
    }

    /// A file, or the files of a directory (sorted, not recursive).
    static func inputFiles(_ path: String) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return [path]
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { path + "/" + $0 }
    }
}
