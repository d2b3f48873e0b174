import ArgumentParser
import Foundation

/// `--config FILE` (tllm-protocol.md §5): the server's address and the workers' list.
public struct ClusterConfigFile: Decodable, Sendable {
    public struct Node: Decodable, Sendable {
        public var hostname: String?
        public var httpPort: Int?
        public var grpcPort: Int?

        enum CodingKeys: String, CodingKey {
            case hostname
            case httpPort = "http_port"
            case grpcPort = "grpc_port"
        }
    }

    public var server: Node
    public var client: [Node]

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
