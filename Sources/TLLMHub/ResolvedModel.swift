import Foundation

/// A model found on disk: where its files are and where they came from.
public struct ResolvedModel: Hashable, Sendable {
    /// Where the files came from.
    public enum Source: Hashable, Sendable {
        /// A path given directly.
        case local
        /// A hub repository, resolved to a commit (the snapshot folder's name).
        case hub(RepositoryReference, commit: String)
    }

    /// How to read the files.
    public var format: ModelFormat
    /// The folder holding the files: a local directory, a snapshot folder, or the folder of a
    /// local `.gguf` file.
    public var directory: URL
    /// The model's files, relative to ``directory``.
    public var files: [String]
    /// The file to open for GGUF models (the first part of a split file); `nil` otherwise.
    public var primaryFile: URL?
    /// Where the files came from.
    public var source: Source

    /// Creates a value; the locator is the usual producer.
    public init(format: ModelFormat, directory: URL, files: [String], primaryFile: URL?, source: Source) {
        self.format = format
        self.directory = directory
        self.files = files
        self.primaryFile = primaryFile
        self.source = source
    }

    /// What to hand to a loader: the GGUF file, or the directory of a safetensors checkpoint.
    public var modelURL: URL { primaryFile ?? directory }

    /// The local URL of one of ``files``.
    public func url(for file: String) -> URL { directory.appendingPathComponent(file) }
}
