import Foundation
import Logging

/// Brings one file of one commit into the cache: `HEAD` for its etag, then a resumable `GET`
/// into `blobs/{etag}.incomplete`, a size check, a rename to `blobs/{etag}`, and the snapshot
/// symlink — the steps of `huggingface_hub.hf_hub_download`.
struct FileDownloader: Sendable {
    var client: HubClient
    var cache: HubCache
    /// How many times a transfer is tried before a network failure is reported.
    var maxAttempts: Int
    /// The pause before the first retry; it doubles per retry, up to 10 s.
    var retryDelay: TimeInterval
    var progress: (@Sendable (DownloadProgress) -> Void)?
    var logger: Logger

    private var repository: String { cache.repository.id }

    /// Makes `snapshots/{commit}/{file}` exist; `expectedSize` is the model-info API's size.
    func ensure(file: String, commit: String, expectedSize: Int64?) async throws {
        let pointer = cache.snapshotFolder(commit).appendingPathComponent(file)
        if FileManager.default.fileExists(atPath: pointer.path) { return }

        let metadata = try await client.fileMetadata(repository, revision: commit, file: file)
        let size = expectedSize ?? metadata.size
        let blob = cache.blob(metadata.etag)
        try await cache.withLock(etag: metadata.etag) {
            // Another process may have finished the blob while we waited for the lock.
            if !FileManager.default.fileExists(atPath: blob.path) {
                try await download(file: file, commit: commit, etag: metadata.etag, expectedSize: size)
            }
        }
        try cache.link(file: file, commit: commit, etag: metadata.etag)
    }

    private func download(file: String, commit: String, etag: String, expectedSize: Int64?) async throws {
        let partial = cache.incompleteBlob(etag)
        let url = client.resolveURL(repository, revision: commit, file: file)
        func diskError(_ what: String, _ error: any Error) -> HubError {
            HubError(
                .disk, "\(what): \(error.localizedDescription)", repository: repository, file: file,
                location: partial.path, cause: error)
        }
        do {
            try FileManager.default.createDirectory(at: cache.blobsFolder, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: partial.path) {
                guard FileManager.default.createFile(atPath: partial.path, contents: nil) else {
                    throw CocoaError(.fileWriteUnknown)
                }
            }
        } catch {
            throw diskError("cannot create the download file", error)
        }
        logger.info(
            "Downloading from the hub",
            metadata: ["repo": "\(repository)", "file": "\(file)", "bytes": "\(expectedSize.map(String.init) ?? "?")"])

        var attempt = 0
        while true {
            attempt += 1
            let sink: DownloadSink
            do {
                sink = try DownloadSink(
                    file: partial, repository: repository, name: file, expectedSize: expectedSize, progress: progress)
            } catch {
                throw diskError("cannot open the download file", error)
            }
            let offset = sink.startOffset
            if let expectedSize, offset == expectedSize {
                sink.finish()
                break
            }
            do {
                let response = try await client.fetch(repository, revision: commit, file: file, from: offset) { head in
                    sink.writer(for: head, requestedOffset: offset)
                }
                sink.finish()
                if response.status == 416 {
                    // The range starts at or past the end: the partial file is not a prefix of
                    // this blob. Start over.
                    do { try Data().write(to: partial) } catch { throw diskError("cannot reset the download", error) }
                    if attempt < maxAttempts { continue }
                    throw HubError(
                        .badResponse, "the server rejected resuming the download (HTTP 416)", repository: repository,
                        file: file, location: url.absoluteString)
                }
                break
            } catch let error as HubError where error.code == .network && attempt < maxAttempts {
                sink.finish()
                let delay = min(retryDelay * pow(2, Double(attempt - 1)), 10)
                logger.warning(
                    "Download interrupted, resuming",
                    metadata: [
                        "repo": "\(repository)", "file": "\(file)", "bytes": "\(sink.received)",
                        "attempt": "\(attempt + 1)/\(maxAttempts)", "error": "\(error.message)",
                    ])
                try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
            } catch {
                sink.finish()
                throw error
            }
        }

        let actual =
            (try? FileManager.default.attributesOfItem(atPath: partial.path)[.size] as? NSNumber)?
            .int64Value ?? -1
        if let expectedSize, actual != expectedSize {
            // A wrong-sized file can never be resumed into the right one; keeping it would only
            // poison the next attempt.
            try? FileManager.default.removeItem(at: partial)
            throw HubError(
                .sizeMismatch,
                "downloaded \(actual) bytes but the hub announced \(expectedSize); the partial file was deleted, "
                    + "try again", repository: repository, file: file, location: url.absoluteString)
        }
        do {
            try FileManager.default.moveItem(at: partial, to: cache.blob(etag))
        } catch {
            throw diskError("cannot move the finished download into place", error)
        }
    }
}

/// Appends a response body to the `.incomplete` file and reports progress; used from
/// the transfer's task, so its state is behind a lock.
private final class DownloadSink: @unchecked Sendable {
    private let handle: FileHandle
    private let repository: String
    private let name: String
    private let expectedSize: Int64?
    private let progress: (@Sendable (DownloadProgress) -> Void)?
    private let started = Date()
    let startOffset: Int64

    private let lock = NSLock()
    private var written: Int64
    private var lastReport = Date.distantPast
    private var closed = false

    init(
        file: URL, repository: String, name: String, expectedSize: Int64?,
        progress: (@Sendable (DownloadProgress) -> Void)?
    ) throws {
        handle = try FileHandle(forWritingTo: file)
        var offset = Int64(try handle.seekToEnd())
        if let expectedSize, offset > expectedSize {
            try handle.truncate(atOffset: 0)
            offset = 0
        }
        startOffset = offset
        written = offset
        self.repository = repository
        self.name = name
        self.expectedSize = expectedSize
        self.progress = progress
    }

    var received: Int64 { lock.withLock { written } }

    /// Decides where the body goes, given how the server answered the range request.
    func writer(for head: HTTPExchange.Head, requestedOffset: Int64) -> HTTPExchange.BodyWriter? {
        do {
            if head.statusCode == 200 && requestedOffset > 0 {
                // The server ignored Range and sends the whole file.
                try lock.withLock {
                    try handle.truncate(atOffset: 0)
                    written = 0
                }
            } else if head.statusCode == 206, let start = Self.rangeStart(head), start != requestedOffset {
                guard start < requestedOffset else {
                    throw HubError(
                        .badResponse, "the server answered bytes from \(start), after the \(requestedOffset) asked for",
                        repository: repository, file: name)
                }
                try lock.withLock {
                    try handle.truncate(atOffset: UInt64(start))
                    written = start
                }
            }
        } catch {
            return { _ in throw error }
        }
        return { [self] data in try append(data) }
    }

    private func append(_ data: Data) throws {
        let report: DownloadProgress? = try lock.withLock {
            if let expectedSize, written + Int64(data.count) > expectedSize {
                throw HubError(
                    .sizeMismatch, "the server sent more than the announced \(expectedSize) bytes",
                    repository: repository, file: name)
            }
            try handle.write(contentsOf: data)
            written += Int64(data.count)
            let now = Date()
            guard now.timeIntervalSince(lastReport) >= 0.1 else { return nil }
            lastReport = now
            return makeReport(finished: false, now: now)
        }
        if let report { progress?(report) }
    }

    /// Closes the file and sends a final report.
    func finish() {
        let report: DownloadProgress? = lock.withLock {
            guard !closed else { return nil }
            closed = true
            try? handle.synchronize()
            try? handle.close()
            return makeReport(finished: true, now: Date())
        }
        if let report { progress?(report) }
    }

    private func makeReport(finished: Bool, now: Date) -> DownloadProgress {
        let elapsed = max(now.timeIntervalSince(started), 0.001)
        return DownloadProgress(
            repository: repository, file: name, receivedBytes: written, totalBytes: expectedSize,
            resumedBytes: startOffset, bytesPerSecond: Double(written - startOffset) / elapsed,
            isFinished: finished && expectedSize.map { $0 == written } ?? finished)
    }

    /// The first byte of `Content-Range: bytes START-END/TOTAL`.
    private static func rangeStart(_ head: HTTPExchange.Head) -> Int64? {
        guard let value = head.value(forHTTPHeaderField: "Content-Range"), value.hasPrefix("bytes ") else {
            return nil
        }
        return value.dropFirst(6).split(separator: "-").first.flatMap { Int64($0) }
    }
}
