import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// How far the download of one file has come.
public struct DownloadProgress: Hashable, Sendable {
    /// The repo id.
    public var repository: String
    /// The repo-relative file.
    public var file: String
    /// Bytes on disk so far, including any resumed from an earlier attempt.
    public var receivedBytes: Int64
    /// The file's size, if known.
    public var totalBytes: Int64?
    /// Bytes on disk when this attempt started (resumed bytes do not count towards the rate).
    public var resumedBytes: Int64
    /// Average rate of this attempt, bytes per second.
    public var bytesPerSecond: Double
    /// Whether this is the last report for the file.
    public var isFinished: Bool

    /// Creates a report.
    public init(
        repository: String, file: String, receivedBytes: Int64, totalBytes: Int64?, resumedBytes: Int64 = 0,
        bytesPerSecond: Double, isFinished: Bool
    ) {
        self.repository = repository
        self.file = file
        self.receivedBytes = receivedBytes
        self.totalBytes = totalBytes
        self.resumedBytes = resumedBytes
        self.bytesPerSecond = bytesPerSecond
        self.isFinished = isFinished
    }

    /// Completed fraction in 0…1, if the size is known.
    public var fraction: Double? {
        guard let totalBytes, totalBytes > 0 else { return nil }
        return min(1, Double(receivedBytes) / Double(totalBytes))
    }
}

/// Draws download progress on a terminal: a redrawn bar when the output is a TTY, and a plain
/// line every few seconds otherwise (logs and CI output stay readable).
public final class TerminalProgressRenderer: @unchecked Sendable {
    private let write: @Sendable (String) -> Void
    private let isTerminal: Bool
    private let lineInterval: TimeInterval
    // Guarded by `lock`: reports come from the transfer's task.
    private let lock = NSLock()
    private var lastOutput: [String: Date] = [:]

    /// Renders to standard error, as a bar if it is a terminal.
    public convenience init() {
        self.init(isTerminal: isatty(STDERR_FILENO) == 1) { text in
            FileHandle.standardError.write(Data(text.utf8))
        }
    }

    /// Renders with `write`; `lineInterval` is the pause between plain lines when not a terminal.
    public init(isTerminal: Bool, lineInterval: TimeInterval = 5, write: @escaping @Sendable (String) -> Void) {
        self.isTerminal = isTerminal
        self.lineInterval = lineInterval
        self.write = write
    }

    /// Takes one report; suitable as a progress callback.
    public func report(_ progress: DownloadProgress) {
        let key = progress.repository + "/" + progress.file
        let now = Date()
        let interval = isTerminal ? 0.1 : lineInterval
        let due: Bool = lock.withLock {
            let first = lastOutput[key] == nil
            guard progress.isFinished || first || now.timeIntervalSince(lastOutput[key]!) >= interval else {
                return false
            }
            lastOutput[key] = progress.isFinished ? nil : now
            return true
        }
        guard due else { return }
        if isTerminal {
            write("\r\u{1B}[K" + Self.bar(progress) + (progress.isFinished ? "\n" : ""))
        } else {
            write(Self.line(progress) + "\n")
        }
    }

    /// `file  45% |█████████░░░░░░░░░░░| 12.3 MB/27.1 MB 5.2 MB/s`
    static func bar(_ progress: DownloadProgress, width: Int = 24) -> String {
        let name = (progress.file as NSString).lastPathComponent
        let sizes = megabytes(progress.receivedBytes) + (progress.totalBytes.map { "/" + megabytes($0) } ?? "")
        let rate = String(format: "%.1f MB/s", progress.bytesPerSecond / 1_000_000)
        guard let fraction = progress.fraction else { return "\(name) \(sizes) \(rate)" }
        let filled = Int((fraction * Double(width)).rounded(.down))
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        return "\(name) \(String(format: "%3d%%", Int(fraction * 100))) |\(bar)| \(sizes) \(rate)"
    }

    /// `Downloading ORG/NAME/file: 12.3 MB of 27.1 MB (45%), 5.2 MB/s`
    static func line(_ progress: DownloadProgress) -> String {
        let verb = progress.isFinished ? "Downloaded" : "Downloading"
        var text = "\(verb) \(progress.repository)/\(progress.file): \(megabytes(progress.receivedBytes))"
        if let total = progress.totalBytes { text += " of \(megabytes(total))" }
        if let fraction = progress.fraction { text += " (\(Int(fraction * 100))%)" }
        return text + String(format: ", %.1f MB/s", progress.bytesPerSecond / 1_000_000)
    }

    static func megabytes(_ bytes: Int64) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }
}
