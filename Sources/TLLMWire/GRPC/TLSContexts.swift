import NIOCore
import NIOSSL

/// A node's TLS material, loaded once: PEM files for its certificate chain and key, and
/// optionally the CA that peers' certificates must chain to (docs/wire.md, "Security").
///
/// - Servers present `certificate`; with `ca` they also require a client certificate signed by
///   it (mutual TLS).
/// - Channels verify the server against `ca` (else the system's roots) and its name or IP
///   address; with `certificate` they present it when a server asks.
/// - ALPN offers `h2` only, as gRPC over TLS requires.
public struct TLSContexts: Sendable {
    /// The files, as given.
    public struct Files: Sendable, Hashable {
        public var certificate: String?
        public var key: String?
        public var ca: String?

        public init(certificate: String? = nil, key: String? = nil, ca: String? = nil) {
            self.certificate = certificate
            self.key = key
            self.ca = ca
        }

        /// True when any file is named.
        public var isEmpty: Bool { certificate == nil && key == nil && ca == nil }
    }

    public let files: Files
    /// For gRPC servers; nil when no certificate is configured (a node that only calls out).
    public let server: NIOSSLContext?
    /// For gRPC channels.
    public let client: NIOSSLContext
    /// The server side without ALPN and without client certificates: the HTTP API (its users
    /// have no certificates; registration there is guarded by the cluster key).
    public let httpServerConfiguration: TLSConfiguration?
    /// The client side without ALPN: a worker's HTTPS calls to its master.
    public let httpClientConfiguration: TLSConfiguration

    /// Loads and checks the files; the error names the file at fault.
    public init(_ files: Files, applicationProtocols: [String] = ["h2"]) throws(TLSFileError) {
        guard (files.certificate == nil) == (files.key == nil) else {
            throw TLSFileError("--tls_cert and --tls_key go together")
        }
        self.files = files
        var chain: [NIOSSLCertificateSource] = []
        var key: NIOSSLPrivateKeySource?
        if let certificate = files.certificate, let keyPath = files.key {
            do {
                chain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            } catch {
                throw TLSFileError("\(certificate): not a PEM certificate chain (\(error))")
            }
            guard !chain.isEmpty else { throw TLSFileError("\(certificate): no certificate in the file") }
            do {
                key = .privateKey(try NIOSSLPrivateKey(file: keyPath, format: .pem))
            } catch {
                throw TLSFileError("\(keyPath): not a PEM private key (\(error))")
            }
        }
        var roots: NIOSSLTrustRoots = .default
        if let ca = files.ca {
            do {
                let certificates = try NIOSSLCertificate.fromPEMFile(ca)
                guard !certificates.isEmpty else { throw TLSFileError("\(ca): no certificate in the file") }
                roots = .certificates(certificates)
            } catch let error as TLSFileError {
                throw error
            } catch {
                throw TLSFileError("\(ca): not a PEM certificate (\(error))")
            }
        }
        var clientSide = TLSConfiguration.makeClientConfiguration()
        clientSide.minimumTLSVersion = .tlsv12
        clientSide.trustRoots = roots
        clientSide.certificateChain = chain
        clientSide.privateKey = key
        httpClientConfiguration = clientSide
        clientSide.applicationProtocols = applicationProtocols
        var serverSide: TLSConfiguration?
        if let key {
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
            configuration.minimumTLSVersion = .tlsv12
            httpServerConfiguration = configuration
            configuration.applicationProtocols = applicationProtocols
            if files.ca != nil {
                // Client certificates name no host: chain and validity only.
                configuration.certificateVerification = .noHostnameVerification
                configuration.trustRoots = roots
            }
            serverSide = configuration
        } else {
            httpServerConfiguration = nil
        }
        do {
            server = try serverSide.map { try NIOSSLContext(configuration: $0) }
            client = try NIOSSLContext(configuration: clientSide)
        } catch {
            throw TLSFileError("TLS set-up with \(files): \(error)")
        }
    }

    /// The handler a server puts first on an accepted connection.
    public func serverHandler() -> NIOSSLServerHandler? {
        server.map { NIOSSLServerHandler(context: $0) }
    }

    /// The handler a channel puts first on a connection to `host` (SNI and name checks for a
    /// host name; an IP address is checked against the certificate's IP addresses).
    public func clientHandler(host: String?) throws -> NIOSSLClientHandler {
        let name = host.flatMap { Self.isIPAddress($0) ? nil : $0 }
        return try NIOSSLClientHandler(context: client, serverHostname: name)
    }

    static func isIPAddress(_ host: String) -> Bool {
        host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
    }
}

/// A TLS file that cannot be used, named.
public struct TLSFileError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
