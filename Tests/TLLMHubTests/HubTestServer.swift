import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A repository the test hub serves.
struct TestRepository: Sendable {
    var id: String
    var commit: String
    /// Repo-relative path → contents.
    var files: [String: Data]
    /// Files served like LFS files on the hub: a 302 from `/resolve/` to the CDN listener,
    /// carrying `X-Linked-Etag` / `X-Linked-Size`.
    var lfsFiles: Set<String> = []

    /// The etag the hub reports for a file (a stand-in for the git blob id or LFS sha256).
    static func etag(_ data: Data) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return String(repeating: String(hash, radix: 16), count: 2) + String(data.count, radix: 16)
    }
}

/// One request as the test hub saw it.
struct RecordedRequest: Sendable {
    var method: String
    var uri: String
    var headers: [String: String]
    /// Whether it reached the CDN listener rather than the hub listener.
    var viaCDN: Bool

    var path: String { String(uri.split(separator: "?", maxSplits: 1)[0]) }
}

/// Knobs the tests turn, shared by the handlers of both listeners.
final class HubTestState: @unchecked Sendable {
    private let lock = NSLock()
    private var _repositories: [String: TestRepository] = [:]
    private var _requests: [RecordedRequest] = []
    private var _requiredToken: String?
    private var _cutOnce: [String: Int] = [:]
    private var _announcedSizes: [String: Int64] = [:]
    private var _ignoresRange = false

    var repositories: [String: TestRepository] {
        get { lock.withLock { _repositories } }
        set { lock.withLock { _repositories = newValue } }
    }
    /// When set, hub requests (not CDN ones) need `Authorization: Bearer <token>`.
    var requiredToken: String? {
        get { lock.withLock { _requiredToken } }
        set { lock.withLock { _requiredToken = newValue } }
    }
    /// File path → byte count after which the next GET of its contents is cut off.
    var cutOnce: [String: Int] {
        get { lock.withLock { _cutOnce } }
        set { lock.withLock { _cutOnce = newValue } }
    }
    /// File path → size to announce instead of the real one (API and `X-Linked-Size`).
    var announcedSizes: [String: Int64] {
        get { lock.withLock { _announcedSizes } }
        set { lock.withLock { _announcedSizes = newValue } }
    }
    /// Whether `Range` is ignored (a plain 200 with the whole file), as some mirrors do.
    var ignoresRange: Bool {
        get { lock.withLock { _ignoresRange } }
        set { lock.withLock { _ignoresRange = newValue } }
    }
    var requests: [RecordedRequest] { lock.withLock { _requests } }

    func record(_ request: RecordedRequest) { lock.withLock { _requests.append(request) } }
    func clearRequests() { lock.withLock { _requests.removeAll() } }

    /// Takes the one-shot cut for `file`, if any.
    func takeCut(_ file: String) -> Int? {
        lock.withLock { _cutOnce.removeValue(forKey: file) }
    }
}

/// A local stand-in for the Hugging Face hub: the model-info API and `/resolve/` on one
/// listener, and a "CDN" on a second listener (another host as far as clients can tell) that
/// LFS files redirect to. Serves Range requests, ETags, optional auth, and injected failures.
final class HubTestServer: Sendable {
    let state: HubTestState
    private let hubChannel: any Channel
    private let cdnChannel: any Channel
    let endpoint: String
    let cdnEndpoint: String

    private init(state: HubTestState, hub: any Channel, cdn: any Channel) {
        self.state = state
        hubChannel = hub
        cdnChannel = cdn
        endpoint = "http://127.0.0.1:\(hub.localAddress!.port!)"
        cdnEndpoint = "http://127.0.0.1:\(cdn.localAddress!.port!)"
    }

    /// Starts both listeners on 127.0.0.1 with ephemeral ports, runs `body`, and stops them.
    static func with<T>(
        repositories: [TestRepository], _ body: (HubTestServer) async throws -> T
    ) async throws -> T {
        let state = HubTestState()
        state.repositories = Dictionary(uniqueKeysWithValues: repositories.map { ($0.id, $0) })
        let cdnPort = PortBox()
        let hub = try await bind(state: state, isCDN: false, cdnPort: cdnPort)
        let cdn = try await bind(state: state, isCDN: true, cdnPort: cdnPort)
        cdnPort.value = cdn.localAddress!.port!
        let server = HubTestServer(state: state, hub: hub, cdn: cdn)
        do {
            let result = try await body(server)
            try? await hub.close()
            try? await cdn.close()
            return result
        } catch {
            try? await hub.close()
            try? await cdn.close()
            throw error
        }
    }

    private static func bind(state: HubTestState, isCDN: Bool, cdnPort: PortBox) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        HubRequestHandler(state: state, isCDN: isCDN, cdnPort: cdnPort))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }
}

/// The CDN port, known only after the hub listener is bound.
final class PortBox: @unchecked Sendable {
    private let lock = NSLock()
    private var _value = 0
    var value: Int {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
}

private final class HubRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let state: HubTestState
    private let isCDN: Bool
    private let cdnPort: PortBox
    private var head: HTTPRequestHead?

    init(state: HubTestState, isCDN: Bool, cdnPort: PortBox) {
        self.state = state
        self.isCDN = isCDN
        self.cdnPort = cdnPort
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            var headers: [String: String] = [:]
            for (name, value) in head.headers { headers[name.lowercased()] = value }
            state.record(RecordedRequest(method: head.method.rawValue, uri: head.uri, headers: headers, viaCDN: isCDN))
            handle(head, headers: headers, context: context)
        }
    }

    private func handle(_ head: HTTPRequestHead, headers: [String: String], context: ChannelHandlerContext) {
        let parts = head.uri.split(separator: "?", maxSplits: 1)
        let query = parts.count > 1 ? String(parts[1]) : ""
        let segments = parts[0].split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
        let isHead = head.method == .HEAD

        if isCDN {
            // /cdn/{repo org}/{repo name}/{file...}
            guard segments.count >= 4, segments[0] == "cdn",
                let repo = state.repositories["\(segments[1])/\(segments[2])"]
            else { return send(context, .notFound, isHead: isHead) }
            let file = segments[3...].joined(separator: "/")
            guard let data = repo.files[file] else { return send(context, .notFound, isHead: isHead) }
            return sendContent(
                context, data, file: file, headers: headers, isHead: isHead,
                extra: [
                    ("ETag", "\"\(TestRepository.etag(data))\"")
                ])
        }

        if let required = state.requiredToken, headers["authorization"] != "Bearer \(required)" {
            return send(context, .unauthorized, isHead: isHead, body: "Invalid credentials")
        }

        // /api/models/{org}/{name}/revision/{revision}
        if segments.count == 6, segments[0] == "api", segments[1] == "models", segments[4] == "revision" {
            guard let repo = state.repositories["\(segments[2])/\(segments[3])"] else {
                return send(context, .notFound, isHead: isHead, extra: [("X-Error-Code", "RepoNotFound")])
            }
            guard segments[5] == "main" || segments[5] == repo.commit else {
                return send(context, .notFound, isHead: isHead, extra: [("X-Error-Code", "RevisionNotFound")])
            }
            let withSizes = query.split(separator: "&").contains { $0.lowercased() == "blobs=true" }
            let announced = state.announcedSizes
            let siblings: [[String: Any]] = repo.files.keys.sorted().map { name in
                var sibling: [String: Any] = ["rfilename": name]
                if withSizes { sibling["size"] = announced[name] ?? Int64(repo.files[name]!.count) }
                return sibling
            }
            let json = try! JSONSerialization.data(
                withJSONObject: ["id": repo.id, "sha": repo.commit, "siblings": siblings], options: [.sortedKeys])
            return send(context, .ok, isHead: isHead, body: json, extra: [("Content-Type", "application/json")])
        }

        // /{org}/{name}/resolve/{revision}/{file...}
        if segments.count >= 5, segments[2] == "resolve" {
            guard let repo = state.repositories["\(segments[0])/\(segments[1])"] else {
                return send(context, .notFound, isHead: isHead, extra: [("X-Error-Code", "RepoNotFound")])
            }
            guard segments[3] == "main" || segments[3] == repo.commit else {
                return send(context, .notFound, isHead: isHead, extra: [("X-Error-Code", "RevisionNotFound")])
            }
            let file = segments[4...].joined(separator: "/")
            guard let data = repo.files[file] else {
                return send(context, .notFound, isHead: isHead, extra: [("X-Error-Code", "EntryNotFound")])
            }
            let etag = "\"\(TestRepository.etag(data))\""
            let size = state.announcedSizes[file] ?? Int64(data.count)
            if repo.lfsFiles.contains(file) {
                let location = "http://127.0.0.1:\(cdnPort.value)/cdn/\(repo.id)/\(file)"
                return send(
                    context, .found, isHead: isHead,
                    extra: [
                        ("Location", location), ("X-Linked-Etag", etag), ("X-Linked-Size", String(size)),
                        ("X-Repo-Commit", repo.commit), ("ETag", "\"cdn-redirect\""),
                    ])
            }
            return sendContent(
                context, data, file: file, headers: headers, isHead: isHead,
                extra: [
                    ("ETag", etag), ("X-Repo-Commit", repo.commit),
                ])
        }
        send(context, .notFound, isHead: isHead)
    }

    /// Serves a file's bytes, honouring `Range: bytes=N-` and any one-shot cut.
    private func sendContent(
        _ context: ChannelHandlerContext, _ data: Data, file: String, headers: [String: String], isHead: Bool,
        extra: [(String, String)]
    ) {
        var start = 0
        var status = HTTPResponseStatus.ok
        var extra = extra + [("Accept-Ranges", "bytes")]
        if !state.ignoresRange, let range = headers["range"], range.hasPrefix("bytes="), range.hasSuffix("-"),
            let from = Int(range.dropFirst(6).dropLast())
        {
            guard from < data.count else {
                return send(
                    context, .rangeNotSatisfiable, isHead: isHead, extra: [("Content-Range", "bytes */\(data.count)")])
            }
            start = from
            status = .partialContent
            extra.append(("Content-Range", "bytes \(from)-\(data.count - 1)/\(data.count)"))
        }
        let body = data.subdata(in: start..<data.count)
        let cut = isHead ? nil : state.takeCut(file)
        send(context, status, isHead: isHead, body: body, extra: extra, cutAfter: cut)
    }

    private func send(
        _ context: ChannelHandlerContext, _ status: HTTPResponseStatus, isHead: Bool, body: String,
        extra: [(String, String)] = []
    ) {
        send(context, status, isHead: isHead, body: Data(body.utf8), extra: extra)
    }

    private func send(
        _ context: ChannelHandlerContext, _ status: HTTPResponseStatus, isHead: Bool, body: Data = Data(),
        extra: [(String, String)] = [], cutAfter: Int? = nil
    ) {
        var headers = HTTPHeaders(extra)
        headers.replaceOrAdd(name: "Content-Length", value: String(body.count))
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !isHead && !body.isEmpty {
            let count = min(cutAfter ?? body.count, body.count)
            var buffer = context.channel.allocator.buffer(capacity: count)
            buffer.writeBytes(body.prefix(count))
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            if cutAfter != nil {
                // Simulates a dropped connection: the promised Content-Length is never reached.
                context.flush()
                context.close(promise: nil)
                return
            }
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}
