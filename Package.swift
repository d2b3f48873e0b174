// swift-tools-version:6.1
import Foundation
import PackageDescription

// Shared settings for every Swift target (house rule 4): Swift 6 language
// mode, explicit existentials, imports visible only where declared. CI sets
// CI=true, which turns warnings into errors for our own targets only.
var swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]
if ProcessInfo.processInfo.environment["CI"] != nil {
    swiftSettings.append(.unsafeFlags(["-warnings-as-errors"]))
}

// TLLM_SANITIZE=fuzzer (scripts/fuzz.sh, in its own --build-path): our code built with libFuzzer's
// coverage and AddressSanitizer, every executable linked with ASan, `tllm-fuzz` with libFuzzer's
// driver (TLLM_FUZZER_LIB names libclang_rt.fuzzer_no_main). Dependencies stay uninstrumented.
let fuzzing = ProcessInfo.processInfo.environment["TLLM_SANITIZE"] == "fuzzer"
let sanitizedCFlags: [CSetting] = fuzzing ? [.unsafeFlags(["-fsanitize=fuzzer-no-link,address"])] : []
let sanitizedLinking: [LinkerSetting] = fuzzing ? [.unsafeFlags(["-sanitize=address"])] : []
if fuzzing {
    swiftSettings.append(.unsafeFlags(["-sanitize=fuzzer,address"]))
}
let fuzzerDriver: [LinkerSetting] =
    fuzzing
    ? [.unsafeFlags(["-Xlinker", ProcessInfo.processInfo.environment["TLLM_FUZZER_LIB"] ?? "", "-lstdc++"])] : []

// The compute path (kernels' callers, samplers, the grammar mask, the scheduler's step) is
// optimised even in debug builds: unoptimised Swift there runs ~50x slower, and the tests and the local server run it.
let optimizedSwiftSettings = swiftSettings + [.unsafeFlags(["-O"])]

let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let nioPosix: Target.Dependency = .product(name: "NIOPosix", package: "swift-nio")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "together-llm",
    products: [
        .library(name: "TLLMWire", targets: ["TLLMWire"]),
        .library(name: "TLLMModelFiles", targets: ["TLLMModelFiles"]),
        .library(name: "TLLMHub", targets: ["TLLMHub"]),
        .library(name: "TLLMCompute", targets: ["TLLMCompute"]),
        .library(name: "TLLMTokenizer", targets: ["TLLMTokenizer"]),
        .library(name: "TLLMChatTemplate", targets: ["TLLMChatTemplate"]),
        .executable(name: "tllm-rpc", targets: ["TLLMRPCTool"]),
        .executable(name: "tllm-generate", targets: ["TLLMGenerate"]),
        .executable(name: "tllm.server", targets: ["TLLMServerCommand"]),
        .executable(name: "tllm.client", targets: ["TLLMClientCommand"]),
        .executable(name: "tllm-fuzz", targets: ["TLLMFuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        // No default traits: swift-configuration support is not used and would only add build time.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // System libraries (Debian -dev packages), found through pkg-config.
        .systemLibrary(
            name: "CNGHTTP2", pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]),
        .systemLibrary(
            name: "CProtobufC", pkgConfig: "libprotobuf-c",
            providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),

        // protoc-c output for Protos/schemas.proto; regenerate with scripts/generate-proto.sh.
        .target(name: "CTLLMProto", dependencies: ["CProtobufC"], cSettings: sanitizedCFlags),

        // Hot loops in C: portable reference + SIMD paths chosen at run time.
        .target(
            name: "CTLLMKernels",
            cSettings: [.unsafeFlags(["-O3"])] + sanitizedCFlags),

        // gRPC over HTTP/2 (nghttp2 on SwiftNIO), the protocol's messages and the tensor codec.
        .target(
            name: "TLLMWire",
            dependencies: [
                "CNGHTTP2", "CProtobufC", "CTLLMProto", "CLZ4", "CTLLMKernels",
                nioCore, nioPosix, logging, .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings),

        // Model files: GGUF (mmap'd), safetensors + config.json, MLX-quantized weights; partial loading.
        .target(
            name: "TLLMModelFiles",
            dependencies: ["CTLLMKernels", logging],
            swiftSettings: swiftSettings),

        // Decoder layers and the model head on the CPU: our kernels and OpenBLAS.
        .target(
            name: "TLLMCompute",
            dependencies: ["TLLMModelFiles", "CTLLMKernels", "COpenBLAS"],
            swiftSettings: optimizedSwiftSettings),

        // Where models live: local paths, the Hugging Face cache layout, downloads from the hub.
        .target(
            name: "TLLMHub",
            dependencies: [
                logging, nioCore, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings),

        // Byte-level BPE and SentencePiece-style BPE tokenizers, incremental detokenisation.
        .target(
            name: "TLLMTokenizer",
            swiftSettings: swiftSettings),

        // The Jinja subset that chat templates use.
        .target(
            name: "TLLMChatTemplate",
            swiftSettings: swiftSettings),

        // Constrained decoding (docs/structured-outputs.md): JSON schemas and tool calls compiled to
        // a byte-level grammar, and the token mask that keeps each sampled token inside it.
        .target(
            name: "TLLMGrammar",
            dependencies: ["TLLMChatTemplate"],
            swiftSettings: optimizedSwiftSettings),

        // A model as a node uses it: weights + tokenizer + chat template + stop tokens.
        .target(
            name: "TLLMModel",
            dependencies: ["TLLMModelFiles", "TLLMTokenizer", "TLLMChatTemplate"],
            swiftSettings: swiftSettings),

        // The master's engine: the scheduler actor (continuous batching), the Pipeline abstraction,
        // text streaming with stop strings. Knows nothing of HTTP.
        .target(
            name: "TLLMEngine",
            dependencies: [
                "TLLMCompute", "TLLMTokenizer", "TLLMGrammar", logging, .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings),

        // The cluster, master side: worker registry, layer planning, reachability probes.
        .target(
            name: "TLLMCluster",
            dependencies: [
                "TLLMEngine", "TLLMCompute", "TLLMWire", "TLLMModel", "TLLMModelFiles", "TLLMHub", argumentParser,
                logging, nioCore, nioPosix, .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings),

        // The master's HTTP API on Hummingbird: OpenAI routes, SSE, errors in OpenAI's shape.
        .target(
            name: "TLLMServer",
            dependencies: [
                "TLLMEngine", "TLLMCluster", "TLLMCompute", "TLLMModel", "TLLMModelFiles", "TLLMHub",
                "TLLMChatTemplate", "TLLMTokenizer", "TLLMGrammar", "TLLMWire", argumentParser, logging, nioCore,
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The web page, compiled into the binary (no files to find at run time).
            resources: [.embedInCode("WebPage/index.html")],
            swiftSettings: swiftSettings),

        // `tllm.server`: runs `ServerCommand` (flags, service graph) from TLLMServer.
        .executableTarget(
            name: "TLLMServerCommand",
            dependencies: ["TLLMServer", argumentParser],
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        // `tllm.client`: runs `ClientCommand` (flags, registration, the worker service) from TLLMCluster.
        .executableTarget(
            name: "TLLMClientCommand",
            dependencies: ["TLLMCluster", argumentParser],
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        // One-machine generation: `tllm-generate`.
        .executableTarget(
            name: "TLLMGenerate",
            dependencies: [
                "TLLMModel", "TLLMModelFiles", "TLLMTokenizer", "TLLMChatTemplate", "TLLMCompute", "TLLMHub",
                argumentParser,
            ],
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        // A small command-line peer: serves or calls the RPCService (interop tests, demos).
        .executableTarget(
            name: "TLLMRPCTool",
            dependencies: ["TLLMWire", "TLLMCluster", argumentParser, nioPosix, logging],
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        // Benchmarks (build with -c release).
        .executableTarget(
            name: "RPCBenchmark",
            dependencies: ["TLLMWire", argumentParser, nioPosix],
            path: "Benchmarks/RPCBenchmark",
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        .executableTarget(
            name: "GenerateBenchmark",
            dependencies: ["TLLMCompute", "TLLMModelFiles", argumentParser],
            path: "Benchmarks/GenerateBenchmark",
            swiftSettings: swiftSettings, linkerSettings: sanitizedLinking),

        // Fuzz targets (Tests/Fuzz, docs/fuzzing.md): what each input format goes through, and
        // `tllm-fuzz`, a libFuzzer binary in a TLLM_SANITIZE=fuzzer build, a corpus replayer otherwise.
        .target(
            name: "TLLMFuzzTargets",
            dependencies: [
                "TLLMServer", "TLLMCluster", "TLLMWire", "TLLMModel", "TLLMModelFiles", "TLLMCompute", "TLLMTokenizer",
                "TLLMChatTemplate", "TLLMGrammar",
            ],
            path: "Tests/Fuzz/TLLMFuzzTargets",
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "TLLMFuzz",
            dependencies: ["TLLMFuzzTargets"],
            path: "Tests/Fuzz/TLLMFuzz",
            swiftSettings: swiftSettings + (fuzzing ? [.define("TLLM_FUZZING")] : []),
            linkerSettings: sanitizedLinking + fuzzerDriver),

        .testTarget(
            name: "KernelsTests",
            dependencies: ["CTLLMKernels"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMComputeTests",
            dependencies: ["TLLMCompute", "TLLMModelFiles", "TLLMModel", "TLLMTokenizer"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMEngineTests",
            dependencies: ["TLLMEngine", "TLLMCompute", "TLLMModel", "TLLMModelFiles", "TLLMTokenizer", "TLLMChatTemplate"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMGrammarTests",
            dependencies: ["TLLMGrammar", "TLLMChatTemplate", "TLLMModel", "TLLMTokenizer"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMClusterTests",
            dependencies: ["TLLMCluster", "TLLMEngine", "TLLMCompute", "TLLMWire", argumentParser, nioCore, nioPosix],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMServerTests",
            dependencies: [
                "TLLMServer", "TLLMCompute", "TLLMChatTemplate", argumentParser,
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMModelTests",
            dependencies: ["TLLMModel", "TLLMModelFiles", "TLLMChatTemplate", "TLLMTokenizer"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMModelFilesTests",
            dependencies: ["TLLMModelFiles", "CTLLMKernels"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMHubTests",
            dependencies: ["TLLMHub", nioCore, nioPosix, .product(name: "NIOHTTP1", package: "swift-nio")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMTokenizerTests",
            dependencies: ["TLLMTokenizer"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMChatTemplateTests",
            dependencies: ["TLLMChatTemplate"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TLLMWireTests",
            dependencies: [
                "TLLMWire", "CNGHTTP2", nioCore, nioPosix,
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),
    ]
)
