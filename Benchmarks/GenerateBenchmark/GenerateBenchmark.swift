import ArgumentParser
import Foundation
import TLLMCompute
import TLLMModelFiles

/// Prefill and decode speed of the compute path, measured like llama.cpp's `llama-bench`:
/// `pp N` = one prefill step of N tokens, `tg N` = N single-token decode steps after it.
/// `Benchmarks/generate/run.sh` runs it next to llama-bench on the same file and threads.
@main
struct GenerateBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate-benchmark")

    @Option(name: .customLong("model"), help: "A .gguf file or a Hugging Face directory.")
    var modelPath: String

    @Option(help: "Prompt tokens of the prefill measurement.")
    var prompt = 512

    @Option(help: "Tokens of the decode measurement.")
    var generate = 128

    @Option(help: "Comma-separated thread counts.")
    var threads = "1,2"

    @Option(help: "Repetitions (the best is reported, as llama-bench reports the mean; see docs).")
    var repetitions = 3

    @Option(help: "Write results as JSON here.")
    var json: String?

    @Option(help: "Sequences decoded together (tg is then their tokens/s in all; each prefills its own prompt).")
    var batch = 1

    @Option(help: "Activations: float32, int16 or int8.")
    var activations = "float32"

    @Flag(help: "Short for --activations int8.")
    var int8Activations = false

    func run() async throws {
        OpenBLASKernel.selectForThisCPU()
        let model: any ModelWeights =
            modelPath.hasSuffix(".gguf") ? try GGUFModel(path: modelPath) : try HuggingFaceModel(directory: modelPath)
        let configuration = model.configuration
        var results: [[String: Any]] = []
        for threadCount in threads.split(separator: ",").compactMap({ Int($0) }) {
            guard let precision = ComputeOptions.Activations(flag: activations, int8Shorthand: int8Activations) else {
                throw ValidationError(ComputeOptions.Activations.flagError)
            }
            let options = ComputeOptions(activations: precision)
            let shard = try ShardActor(
                model: model, layers: 0..<configuration.layerCount, threads: threadCount, options: options)
            let head = try HeadActor(model: model, threads: threadCount, options: options)
            var generator = SystemRandomNumberGenerator()
            let tokens = (0..<prompt).map { _ in Int32.random(in: 0..<Int32(head.vocabularySize), using: &generator) }
            let clock = ContinuousClock()
            var prefillBest = Duration.seconds(1e9)
            var decodeBest = Duration.seconds(1e9)
            for repetition in 0..<repetitions {
                let ids = (0..<batch).map { "bench-\(threadCount)-\(repetition)-\($0)" }
                let start = clock.now
                for id in ids {
                    var hidden = try await head.embed(tokens)
                    hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: id, rows: tokens.count)])
                    _ = await head.logits(Array(hidden.suffix(configuration.hiddenSize)), rows: 1)
                }
                prefillBest = min(prefillBest, (clock.now - start) / batch)
                let decodeStart = clock.now
                var next = [Int32](repeating: 1, count: batch)
                let width = head.vocabularySize
                for _ in 0..<generate {
                    var rows = try await head.embed(next)
                    rows = try await shard.forward(rows, sequences: ids.map { SequenceSlice(id: $0, rows: 1) })
                    let logits = await head.logits(rows, rows: batch)
                    next = (0..<batch).map { b in
                        let row = logits[(b * width)..<((b + 1) * width)]
                        return Int32((row.indices.max { row[$0] < row[$1] } ?? 0) - b * width)
                    }
                }
                decodeBest = min(decodeBest, clock.now - decodeStart)
                await shard.release(ids)
            }
            let prefillRate = Double(prompt) / prefillBest.seconds
            let decodeRate = Double(generate * batch) / decodeBest.seconds
            FileHandle.standardError.write(
                Data(
                    String(
                        format: "tllm-%@  %@  threads %d  pp%d %8.1f tok/s  tg%d %7.1f tok/s  batch %d\n",
                        precision.rawValue,
                        (modelPath as NSString).lastPathComponent, threadCount, prompt, prefillRate, generate,
                        decodeRate, batch
                    ).utf8))
            results.append([
                "threads": threadCount, "pp": prompt, "pp_tokens_per_s": prefillRate, "tg": generate,
                "tg_tokens_per_s": decodeRate, "activations": precision.rawValue, "batch": batch,
            ])
        }
        let peak = peakResidentBytes()
        FileHandle.standardError.write(Data("tllm  peak RSS \(peak / (1 << 20)) MiB\n".utf8))
        let output = try JSONSerialization.data(
            withJSONObject: ["impl": "tllm-swift", "model": modelPath, "results": results, "peak_rss_bytes": peak],
            options: [.sortedKeys])
        if let json {
            try output.write(to: URL(fileURLWithPath: json))
        } else {
            print(String(decoding: output, as: UTF8.self))
        }
    }
}

/// VmHWM of /proc/self/status: the process's peak resident memory.
private func peakResidentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return (line.split(separator: " ").compactMap { Int($0) }.first ?? 0) * 1024
    }
    return 0
}

extension Duration {
    fileprivate var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }
}
