import ArgumentParser
import Foundation

/// `--config FILE` (tllm-protocol.md §5): the server's address and the workers' list.
public struct ClusterConfigFile: Decodable, Sendable {
    public struct Node: Decodable, Sendable {
        public var hostname: String?
        public var httpPort: Int?
        public var grpcPort: Int?
        /// A worker's memory for layers (ours; the original has no such field): a size such as
        /// "16GiB" or a number of bytes. It weights the layer plan (`WorkerRegistry`).
        public var memory: String?

        enum CodingKeys: String, CodingKey {
            case hostname
            case httpPort = "http_port"
            case grpcPort = "grpc_port"
            case memory
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            hostname = try container.decodeIfPresent(String.self, forKey: .hostname)
            httpPort = try container.decodeIfPresent(Int.self, forKey: .httpPort)
            grpcPort = try container.decodeIfPresent(Int.self, forKey: .grpcPort)
            if let bytes = try? container.decodeIfPresent(Int.self, forKey: .memory) {
                memory = String(bytes)
            } else {
                memory = try container.decodeIfPresent(String.self, forKey: .memory)
            }
        }
    }

    public var server: Node
    public var client: [Node]
    /// The cluster key (ours; see `ClusterKeyOptions`).
    public var clusterKey: String?

    enum CodingKeys: String, CodingKey {
        case server, client
        case clusterKey = "cluster_key"
    }

    /// Reads and decodes the file; errors name the file and the field.
    public init(path: String) throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ValidationError("--config \(path): cannot read the file (\(error.localizedDescription))")
        }
        do { self = try JSONDecoder().decode(Self.self, from: data) } catch {
            throw ValidationError("--config \(path): not a tllm config (\(error))")
        }
    }
}
