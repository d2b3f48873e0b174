import ArgumentParser
import TLLMWire

/// `--tls_cert`, `--tls_key`, `--tls_ca`: shared by `tllm.server`, `tllm.client` and `tllm-rpc`
/// (one declaration, `@OptionGroup`).
public struct TLSOptions: ParsableArguments, Sendable {
    @Option(
        name: .customLong("tls_cert"),
        help: ArgumentHelp(
            "PEM certificate chain this node presents (with --tls_key): its gRPC port and its HTTP API then speak TLS only.",
            valueName: "file"))
    public var certificate: String?

    @Option(name: .customLong("tls_key"), help: ArgumentHelp("PEM private key of --tls_cert.", valueName: "file"))
    public var key: String?

    @Option(
        name: .customLong("tls_ca"),
        help: ArgumentHelp(
            "PEM CA that peers' certificates must chain to: this node's servers then require a client certificate (mutual TLS), and its connections to other nodes use TLS verified against it.",
            valueName: "file"))
    public var ca: String?

    public init() {}

    public var files: TLSContexts.Files { TLSContexts.Files(certificate: certificate, key: key, ca: ca) }

    /// The contexts, or nil without any TLS flag. A file that cannot be used is a usage error.
    public func contexts() throws -> TLSContexts? {
        guard !files.isEmpty else { return nil }
        do {
            return try TLSContexts(files)
        } catch {
            throw ValidationError(error.description)
        }
    }

    public func validate() throws {
        if (certificate == nil) != (key == nil) { throw ValidationError("--tls_cert and --tls_key go together") }
    }
}
