import ArgumentParser
import Foundation
import TLLMWire

/// `--cluster_key`, shared by `tllm.server` and `tllm.client` (one declaration, `@OptionGroup`).
public struct ClusterKeyOptions: ParsableArguments, Sendable {
    @Option(
        name: .customLong("cluster_key"),
        help: ArgumentHelp(
            "A secret every node of the cluster shares (default: $TLLM_CLUSTER_KEY, else the config's \"cluster_key\", else none).",
            discussion:
                "With it, registration and every gRPC call between nodes carry 'Authorization: Bearer KEY'; callers without it get 401 / UNAUTHENTICATED. Without it the protocol is the original's, so Python tllm nodes can join."
        ))
    public var clusterKey: String?

    public init() {}

    /// The key after the environment and the config file (`--config`'s top-level "cluster_key").
    public func resolved(config: ClusterConfigFile?) -> String? {
        let environment = ProcessInfo.processInfo.environment["TLLM_CLUSTER_KEY"]
        return [clusterKey, environment, config?.clusterKey].compactMap { $0 }.first { !$0.isEmpty }
    }

    public func validate() throws {
        if let clusterKey, clusterKey.isEmpty || clusterKey.contains(where: { $0.isNewline || $0 == "\0" }) {
            throw ValidationError("--cluster_key must be a non-empty string without line breaks")
        }
    }
}
