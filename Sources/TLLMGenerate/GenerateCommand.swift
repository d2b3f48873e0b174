import ArgumentParser
import Foundation
import TLLMChatTemplate
import TLLMCompute
import TLLMHub
import TLLMModel
import TLLMModelFiles
import TLLMTokenizer

/// `tllm-generate`: runs a model on this machine, prints the text as it streams and the
/// prefill / decode speeds.
@main
struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tllm-generate",
        abstract: "Generate text with a model on this machine (no cluster), streaming it to standard output.")

    @Option(
        name: .customLong("model_path"),
        help:
            "A .gguf file, a Hugging Face directory or ORG/NAME[@REV][:FILE]. Default: the embedded SmolLM2-135M-Instruct."
    )
    var modelPath: String?

    @Option(help: "The prompt: a user message, rendered with the model's chat template unless --raw.")
    var prompt: String = "Tell me a short story about a robot who learns to paint."

    @Flag(help: "Feed the prompt as is, without the chat template.")
    var raw = false

    @Option(name: .customLong("max_tokens"), help: "Tokens to generate at most.")
    var maxTokens = 128

    @Option(help: "0 is greedy.")
    var temperature: Float = 0

    @Option(name: .customLong("top_p")) var topP: Float = 1
    @Option(name: .customLong("top_k")) var topK: Int = -1
    @Option(name: .customLong("min_p")) var minP: Float = 0
    @Option var seed: UInt64?

    @Option(help: "Compute threads (default: one per core).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Flag(help: "Keep generating after a stop token (benchmarks).")
    var ignoreEOS = false

    @Option(name: .customLong("kv_cache_dtype"), help: "KV cache precision: float32 or float16 (half the memory).")
    var kvCacheDType: String = "float32"

    @Option(name: .customLong("activations"), help: ArgumentHelp(ComputeOptions.Activations.help))
    var activations = ComputeOptions.Activations.commandDefault.rawValue

    @Flag(name: .customLong("int8_activations"), help: "Short for --activations int8.")
    var int8Activations = false

    @Option(
        name: .customLong("score_ids"),
        help: ArgumentHelp(
            "Score comma-separated token ids teacher-forced instead of generating: the first half as one prompt "
                + "pass, the rest one token at a time; prints JSON (per position: the top-1 id, its log-prob and "
                + "the next id's log-prob).",
            valueName: "ids"))
    var scoreIDs: String?

    func run() async throws {
        OpenBLASKernel.selectForThisCPU()
        let path = try await ModelLocator().resolvePath(modelPath)
        let bundle = try ModelBundle.open(path: path)
        let layers = bundle.weights.configuration.layerCount
        guard let element = ComputeOptions.CacheElement(rawValue: kvCacheDType) else {
            throw ValidationError("--kv_cache_dtype must be float32 or float16")
        }
        guard let precision = ComputeOptions.Activations(flag: activations, int8Shorthand: int8Activations) else {
            throw ValidationError(ComputeOptions.Activations.flagError)
        }
        let options = ComputeOptions(activations: precision, kvCache: element)
        let shard = try ShardActor(model: bundle.weights, layers: 0..<layers, threads: threads, options: options)
        let head = try HeadActor(model: bundle.weights, threads: threads, options: options)
        if let scoreIDs {
            let ids = try scoreIDs.split(separator: ",").map { field -> Int32 in
                guard let id = Int32(field.trimmingCharacters(in: .whitespaces)), id >= 0,
                    Int(id) < head.vocabularySize
                else { throw ValidationError("--score_ids: \(field) is not a token id below \(head.vocabularySize)") }
                return id
            }
            guard ids.count >= 2 else { throw ValidationError("--score_ids needs at least two ids") }
            let scores = try await TeacherForcedScores(ids: ids, shard: shard, head: head)
            FileHandle.standardOutput.write(try JSONEncoder().encode(scores) + Data("\n".utf8))
            return
        }

        let promptTokens =
            raw
            ? bundle.tokenizer.encode(prompt, addSpecialTokens: true)
            : bundle.chatPromptTokens(
                try bundle.renderChat(messages: [.dictionary(["role": "user", "content": .string(prompt)])]))
        var sampler = Sampler(
            parameters: SamplingParameters(temperature: temperature, topK: topK, topP: topP, minP: minP, seed: seed),
            vocabularySize: head.vocabularySize, prompt: promptTokens)
        var decoder = bundle.tokenizer.makeIncrementalDecoder(skipSpecialTokens: true)
        let clock = ContinuousClock()

        let start = clock.now
        var hidden = try await head.embed(promptTokens)
        hidden = try await shard.forward(
            hidden, sequences: [SequenceSlice(id: "g", rows: promptTokens.count, promptRows: promptTokens.count)])
        let width = bundle.weights.configuration.hiddenSize
        var logits = await head.logits(Array(hidden.suffix(width)), rows: 1)
        let prefillTime = clock.now - start

        var generated = 0
        let decodeStart = clock.now
        while generated < maxTokens {
            let token = logits.withUnsafeMutableBufferPointer { sampler.sample($0) }
            sampler.accept(token)
            generated += 1
            if bundle.stopTokenIDs.contains(token) && !ignoreEOS { break }
            FileHandle.standardOutput.write(Data(decoder.append(token).utf8))
            if generated == maxTokens { break }
            hidden = try await head.embed([token])
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "g", rows: 1, promptRows: 0)])
            logits = await head.logits(hidden, rows: 1)
        }
        FileHandle.standardOutput.write(Data((decoder.flush() + "\n").utf8))
        let decodeTime = clock.now - decodeStart
        let report = String(
            format:
                "prompt %d tokens, prefill %.1f tok/s (%.0f ms); generated %d tokens, decode %.1f tok/s; threads %d\n",
            promptTokens.count, Double(promptTokens.count) / prefillTime.seconds, prefillTime.seconds * 1000, generated,
            Double(max(generated - 1, 0)) / max(decodeTime.seconds, 1e-9), threads)
        FileHandle.standardError.write(Data(report.utf8))
    }
}

/// One teacher-forced pass over `ids`: the first half as a prompt pass (the prefill kernels), the
/// rest fed one token at a time (the decode kernels); for every position but the last, the most
/// likely next token and the log-probs (float64 log-softmax of the logits) of it and of the next id.
struct TeacherForcedScores: Encodable {
    var topIDs: [Int32] = []
    var topLogprobs: [Double] = []
    var targetLogprobs: [Double] = []

    enum CodingKeys: String, CodingKey {
        case topIDs = "top_ids", topLogprobs = "top_logprobs", targetLogprobs = "target_logprobs"
    }

    init(ids: [Int32], shard: ShardActor, head: HeadActor) async throws {
        let prompt = ids.count / 2
        var hidden = try await head.embed(Array(ids[..<prompt]))
        hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "s", rows: prompt, promptRows: prompt)])
        add(await head.logits(hidden, rows: prompt), rows: prompt, vocabulary: head.vocabularySize, next: ids[1...])
        for position in prompt..<(ids.count - 1) {
            hidden = try await head.embed([ids[position]])
            hidden = try await shard.forward(hidden, sequences: [SequenceSlice(id: "s", rows: 1, promptRows: 0)])
            add(
                await head.logits(hidden, rows: 1), rows: 1, vocabulary: head.vocabularySize,
                next: ids[(position + 1)...])
        }
    }

    private mutating func add(_ logits: [Float], rows: Int, vocabulary: Int, next: ArraySlice<Int32>) {
        for row in 0..<rows {
            let values = logits[(row * vocabulary)..<((row + 1) * vocabulary)]
            let top = values.indices.max { values[$0] < values[$1] }!
            let maximum = Double(values[top])
            let logSum = maximum + log(values.reduce(0.0) { $0 + exp(Double($1) - maximum) })
            topIDs.append(Int32(top - row * vocabulary))
            topLogprobs.append(maximum - logSum)
            let target = next[next.startIndex + row]
            targetLogprobs.append(Double(values[row * vocabulary + Int(target)]) - logSum)
        }
    }
}

extension Duration {
    fileprivate var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }
}
