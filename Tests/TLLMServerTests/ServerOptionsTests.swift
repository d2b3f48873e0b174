import ArgumentParser
import Foundation
import Testing

@testable import TLLMServer

/// `tllm.server`'s flags: the original's command lines parse, config files fill in, help stays put.
@Suite struct ServerOptionsTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// Command lines of the original project's README and scripts.
    @Test(arguments: [
        [
            "--model_path", "mlx-community/Llama-3.2-1B-Instruct-4bit", "--hostname", "192.168.1.10", "--is_local",
            "--client_size", "1",
        ],
        ["--model_path", "Qwen/Qwen2-VL-2B-Instruct", "--is_local", "--is_debug"],
        [
            "--model_path", "models/SmolLM2-135M-Instruct.Q4_1.gguf", "--grpc_port", "25001", "--http_port", "8022",
            "--hostname", "localhost", "--client_size", "2",
        ],
        ["--model_path", "/opt/models/llama", "--config", "examples/config.json"],
    ])
    func originalCommandLinesParse(_ arguments: [String]) throws {
        let absolute = arguments.map { $0 == "examples/config.json" ? Self.repository.path + "/" + $0 : $0 }
        let options = try ServerOptions.parse(absolute)
        #expect(options.modelPath == arguments[1])
        #expect(options.isLocal == arguments.contains("--is_local"))
        #expect(options.isDebug == arguments.contains("--is_debug"))
    }

    @Test func configFileFillsInWhatFlagsLeaveOpen() throws {
        let config = Self.repository.appendingPathComponent("examples/config.json").path
        let options = try ServerOptions.parse(["--config", config])
        #expect(options.hostname == "mac-mini")
        #expect(options.resolvedHTTPPort == 8022)
        #expect(options.grpcPort == 25001)
        #expect(options.clientSize == 2)
        let overridden = try ServerOptions.parse(["--config", config, "--http_port", "9000"])
        #expect(overridden.resolvedHTTPPort == 9000)
    }

    @Test(arguments: [
        ["--http_port", "70000"], ["--threads", "0"], ["--kv_cache_dtype", "int4"], ["--config", "/nonexistent.json"],
        ["--max_model_len", "1"], ["--unknown_flag"],
    ])
    func badFlagsAreClearErrors(_ arguments: [String]) {
        #expect(throws: (any Error).self) { _ = try ServerOptions.parse(arguments) }
    }

    @Test func defaults() throws {
        let options = try ServerOptions.parse([])
        #expect(options.modelPath == nil)
        #expect(options.resolvedHTTPPort == 8022)
        #expect(!options.isLocal && !options.compatDefaults)
        #expect(options.maxBatchTokens == 512 && options.maxBatchSize == 32 && options.maxQueue == 256)
    }

    /// `--help` as users see it; regenerate with UPDATE_SNAPSHOTS=1 after changing a flag on purpose.
    @Test func helpSnapshot() throws {
        let help = ServerCommand.helpMessage(columns: 100) + "\n"
        let snapshot = Self.repository.appendingPathComponent("Tests/TLLMServerTests/Fixtures/server-help.txt")
        if ProcessInfo.processInfo.environment["UPDATE_SNAPSHOTS"] != nil {
            try help.write(to: snapshot, atomically: true, encoding: .utf8)
        }
        let expected = try String(contentsOf: snapshot, encoding: .utf8)
        #expect(help == expected)
        for flag in [
            "--model_path", "--hostname", "--grpc_port", "--http_port", "--config", "--client_size", "--is_local",
            "--is_debug", "--threads", "--max_batch_tokens", "--api_key", "--max_model_len",
        ] {
            #expect(help.contains(flag), "help lists \(flag)")
        }
    }
}
