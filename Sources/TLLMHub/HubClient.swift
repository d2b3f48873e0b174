import AsyncHTTPClient
import Foundation

/// What the model-info API says about one revision of a repository.
struct RepositoryInfo: Sendable, Hashable {
    /// The commit the revision points at.
    var commit: String
    /// Repo-relative file paths with their sizes when the API gave them.
    var files: [String: Int64?]
}

/// What a `HEAD` on a file's `resolve` URL says.
struct FileMetadata: Sendable, Hashable {
    /// The blob's identity: the LFS sha256 or the git blob id, without quotes.
    var etag: String
    /// The commit the revision resolved to (`X-Repo-Commit`).
    var commit: String?
    /// The file's size (`X-Linked-Size`, else `Content-Length`).
    var size: Int64?
}

/// The hub's HTTP API, as far as downloading models needs it.
///
/// URLs follow `huggingface_hub`: `{endpoint}/api/models/{repo}/revision/{revision}` and
/// `{endpoint}/{repo}/resolve/{revision}/{file}`, the revision escaped as one path segment.
struct HubClient: Sendable {
    var endpoint: URL
    var token: String?
    var timeout: TimeInterval

    static let userAgent = "together-llm-swift/1.0; hf_hub/compatible"

    func modelInfoURL(_ repository: String, revision: String) -> URL {
        URL(
            string: "\(endpoint.absoluteString)/api/models/\(repository)/revision/\(Self.escapeSegment(revision))"
                + "?blobs=true")!
    }

    func resolveURL(_ repository: String, revision: String, file: String) -> URL {
        URL(
            string: "\(endpoint.absoluteString)/\(repository)/resolve/\(Self.escapeSegment(revision))/"
                + Self.escapePath(file))!
    }

    // MARK: Calls

    func repositoryInfo(_ repository: String, revision: String) async throws -> RepositoryInfo {
        let url = modelInfoURL(repository, revision: revision)
        let response = try await send(request(url, method: "GET"), followRedirects: .all, repository: repository)
        guard response.status == 200 else {
            throw Self.statusError(response, repository: repository, file: nil, url: url, hasToken: token != nil)
        }
        struct Payload: Decodable {
            struct Sibling: Decodable {
                struct LFS: Decodable { var size: Int64? }
                var rfilename: String
                var size: Int64?
                var lfs: LFS?
            }
            var sha: String?
            var siblings: [Sibling]?
        }
        let payload: Payload
        do {
            payload = try JSONDecoder().decode(Payload.self, from: response.body)
        } catch {
            throw HubError(
                .badResponse, "the model-info API returned unreadable JSON", repository: repository,
                location: url.absoluteString, cause: error)
        }
        guard let commit = payload.sha, let siblings = payload.siblings else {
            throw HubError(
                .badResponse, "the model-info API returned no 'sha' or 'siblings'", repository: repository,
                location: url.absoluteString)
        }
        var files: [String: Int64?] = [:]
        for sibling in siblings {
            let size: Int64? = sibling.size ?? sibling.lfs?.size
            files[sibling.rfilename] = .some(size)
        }
        return RepositoryInfo(commit: commit, files: files)
    }

    /// `HEAD` like `huggingface_hub.get_hf_file_metadata`: relative redirects (renamed repos) are
    /// followed, the absolute one to the CDN is not, because the headers we need are on it.
    func fileMetadata(_ repository: String, revision: String, file: String) async throws -> FileMetadata {
        let url = resolveURL(repository, revision: revision, file: file)
        var request = request(url, method: "HEAD")
        // A compressed size would not be the file's size.
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        let response = try await send(request, followRedirects: .sameHost, repository: repository, file: file)
        guard (200..<400).contains(response.status) else {
            throw Self.statusError(response, repository: repository, file: file, url: url, hasToken: token != nil)
        }
        guard let etag = (response.header("X-Linked-Etag") ?? response.header("ETag")).map(Self.normalizeETag),
            !etag.isEmpty
        else {
            throw HubError(
                .badResponse, "the hub sent no ETag for the file, so it cannot be cached", repository: repository,
                file: file, location: url.absoluteString)
        }
        let sizeHeader = response.header("X-Linked-Size") ?? response.header("Content-Length")
        return FileMetadata(
            etag: etag, commit: response.header("X-Repo-Commit"), size: sizeHeader.flatMap { Int64($0) })
    }

    /// `GET` of a file from `offset` on, following every redirect; the body goes to `writer` when
    /// the status is 200 or 206. Returns the final response so the caller can check how the range
    /// was honoured.
    func fetch(
        _ repository: String, revision: String, file: String, from offset: Int64,
        writer: @escaping @Sendable (HTTPExchange.Head) -> HTTPExchange.BodyWriter?
    ) async throws -> HTTPExchange.Response {
        let url = resolveURL(repository, revision: revision, file: file)
        var request = request(url, method: "GET")
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        if offset > 0 { request.setValue("bytes=\(offset)-", forHTTPHeaderField: "Range") }
        let response = try await send(
            request, followRedirects: .all, repository: repository, file: file, writer: writer)
        guard response.status == 200 || response.status == 206 || response.status == 416 else {
            throw Self.statusError(response, repository: repository, file: file, url: url, hasToken: token != nil)
        }
        return response
    }

    // MARK: Plumbing

    enum RedirectPolicy { case all, sameHost }

    private func request(_ url: URL, method: String) -> HTTPExchange.Request {
        var request = HTTPExchange.Request(url: url)
        request.httpMethod = method
        request.setValue(Self.userAgent, forHTTPHeaderField: "User-Agent")
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        return request
    }

    private func send(
        _ original: HTTPExchange.Request, followRedirects policy: RedirectPolicy, repository: String,
        file: String? = nil,
        writer: @escaping @Sendable (HTTPExchange.Head) -> HTTPExchange.BodyWriter? = { _ in nil }
    ) async throws -> HTTPExchange.Response {
        var request = original
        for _ in 0..<10 {
            let url = request.url!
            let response: HTTPExchange.Response
            do {
                response = try await HTTPExchange.perform(request, timeout: timeout) { head in
                    (200..<300).contains(head.statusCode) ? writer(head) : nil
                }
            } catch let error as HubError {
                throw error
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                if Task.isCancelled { throw CancellationError() }
                // Name the hub URL the user can recognise; a CDN hop is mentioned in the message.
                let via = url == original.url ? "" : " (redirected to \(url.absoluteString))"
                throw HubError(
                    .network, "the connection to the hub failed\(via): \(Self.describe(error))",
                    repository: repository, file: file, location: original.url?.absoluteString, cause: error)
            }
            guard [301, 302, 303, 307, 308].contains(response.status), let location = response.header("Location"),
                let next = URL(string: location, relativeTo: url)?.absoluteURL
            else { return response }
            let sameHost = next.host == url.host && next.port == url.port && next.scheme == url.scheme
            if policy == .sameHost && !sameHost { return response }
            request.url = next
            // Like `requests`: credentials go to the hub only, never to the CDN it redirects to.
            if !sameHost { request.setValue(nil, forHTTPHeaderField: "Authorization") }
            if response.status == 303 { request.httpMethod = "GET" }
        }
        throw HubError(
            .badResponse, "too many redirects", repository: repository, file: file,
            location: original.url?.absoluteString)
    }

    /// Maps an HTTP failure to an error that says what to do, using the hub's `X-Error-Code`.
    static func statusError(
        _ response: HTTPExchange.Response, repository: String, file: String?, url: URL, hasToken: Bool
    ) -> HubError {
        let code = response.header("X-Error-Code")
        let serverMessage =
            response.header("X-Error-Message")
            ?? String(decoding: response.body.prefix(300), as: UTF8.self).trimmingCharacters(
                in: .whitespacesAndNewlines)
        let detail = serverMessage.isEmpty ? "" : " (hub says: \(serverMessage))"
        let tokenAdvice =
            hasToken
            ? "the token in HF_TOKEN was rejected or lacks access; check it and accept the repo's terms on the hub"
            : "if the repo is private or gated, accept its terms on the hub and set HF_TOKEN to an access token"
        let status = response.status
        switch (status, code) {
        case (_, "RepoNotFound"):
            return HubError(
                .notFound, "repository '\(repository)' not found (HTTP \(status)); \(tokenAdvice)\(detail)",
                repository: repository, file: file, location: url.absoluteString)
        case (_, "RevisionNotFound"):
            return HubError(
                .notFound, "revision not found in '\(repository)' (HTTP \(status))\(detail)", repository: repository,
                file: file, location: url.absoluteString)
        case (_, "EntryNotFound"):
            return HubError(
                .notFound, "file not found in '\(repository)' (HTTP \(status))\(detail)", repository: repository,
                file: file, location: url.absoluteString)
        case (_, "GatedRepo"), (401, _), (403, _):
            return HubError(
                .unauthorized, "access to '\(repository)' denied (HTTP \(status)); \(tokenAdvice)\(detail)",
                repository: repository, file: file, location: url.absoluteString)
        case (404, _):
            let what = file.map { "file '\($0)' or repository '\(repository)'" } ?? "repository '\(repository)'"
            return HubError(
                .notFound, "\(what) not found (HTTP 404)\(detail)", repository: repository, file: file,
                location: url.absoluteString)
        default:
            return HubError(
                .badResponse, "unexpected HTTP \(status)\(detail)", repository: repository, file: file,
                location: url.absoluteString)
        }
    }

    /// `huggingface_hub._normalize_etag`: drops the weak marker and the quotes.
    static func normalizeETag(_ etag: String) -> String {
        var value = Substring(etag.trimmingCharacters(in: .whitespaces))
        if value.hasPrefix("W/") { value = value.dropFirst(2) }
        return value.trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return "\(error)" }
        return "\(error)"
    }

    private static let segmentCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))

    /// `quote(revision, safe="")`: a revision such as `refs/pr/1` is one path segment.
    static func escapeSegment(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: segmentCharacters) ?? text
    }

    /// `quote(filename)`: slashes stay, everything else unusual is escaped.
    static func escapePath(_ text: String) -> String {
        text.split(separator: "/", omittingEmptySubsequences: false).map { escapeSegment(String($0)) }
            .joined(separator: "/")
    }
}
