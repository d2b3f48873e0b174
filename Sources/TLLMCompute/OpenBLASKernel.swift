import COpenBLAS
import CTLLMKernels
import Foundation

/// OpenBLAS picks its kernels once, when the library loads, from the CPU's family and model.
/// On CPUs it does not know (virtual machines often report a generic "Xeon") it falls back to
/// its Prescott (SSE3) sgemm, 3.5–4.5× slower at prefill here (docs/benchmarks.md). It honours
/// `OPENBLAS_CORETYPE`, but only at load time, so an executable that finds the fallback in use
/// sets the variable and replaces itself with a fresh copy (same pid, same arguments).
public enum OpenBLASKernel {
    /// The core whose kernels OpenBLAS loaded, e.g. "SkylakeX" or "Prescott".
    public static var coreName: String { String(cString: openblas_get_corename()) }

    /// Cores without AVX2: OpenBLAS' generic fallbacks.
    static let preAVX2Cores: Set<String> = [
        "prescott", "core2", "penryn", "dunnington", "nehalem", "sandybridge", "atom", "northwood", "banias",
        "katmai", "coppermine", "unknown",
    ]

    /// The core to ask for on this CPU, or nil when the loaded one is fine or the choice is the user's.
    static func betterCore(loaded: String, features: UInt32, environment: [String: String]) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil, preAVX2Cores.contains(loaded.lowercased()) else { return nil }
        if features & UInt32(TLLM_CPU_AVX512F) != 0 { return "SkylakeX" }
        if features & UInt32(TLLM_CPU_AVX2_F16C) != 0 { return "Haswell" }
        return nil
    }

    /// Re-executes the process with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to a
    /// pre-AVX2 kernel on a CPU with AVX2 or AVX-512. Call first thing in an executable, before
    /// any thread starts. Returns when nothing needs to change or the re-exec failed.
    public static func selectForThisCPU() {
        #if arch(x86_64)
            let environment = ProcessInfo.processInfo.environment
            guard environment["TLLM_OPENBLAS_REEXEC"] == nil,
                let core = betterCore(loaded: coreName, features: tllm_cpu_features(), environment: environment)
            else { return }
            setenv("OPENBLAS_CORETYPE", core, 1)
            setenv("TLLM_OPENBLAS_REEXEC", "1", 1)  // never loop, whatever OpenBLAS then picks
            // The resolved path, so the new image keeps its name (ps, pkill) rather than "exe".
            let executable =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/proc/self/exe"
            execv(executable, CommandLine.unsafeArgv)
            // execv only returns on failure: carry on with the slower kernel.
            unsetenv("OPENBLAS_CORETYPE")
        #endif
    }
}
