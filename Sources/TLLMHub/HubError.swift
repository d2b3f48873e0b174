import Foundation

/// A failure to locate or download a model, naming what was being fetched and from where.
///
/// The message is written for the person running the server: it says what went wrong and, where
/// there is one, what to do about it (set `HF_TOKEN`, pick a file, go online).
public struct HubError: Error, CustomStringConvertible, Sendable {
    /// What kind of failure this is; an extensible set of named values.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's name, as printed in messages.
        public let name: String

        private init(_ name: String) { self.name = name }

        /// The model path is neither an existing file or directory nor a valid repo id.
        public static let invalidModelPath = Code("invalid model path")
        /// A local path or directory holds no usable model files.
        public static let noModelFiles = Code("no model files")
        /// Several model files qualify and the caller has to choose one.
        public static let ambiguousModelFile = Code("ambiguous model file")
        /// The repository, revision or file does not exist on the hub.
        public static let notFound = Code("not found")
        /// The hub refused access (HTTP 401/403): private or gated repository, or a bad token.
        public static let unauthorized = Code("unauthorized")
        /// The model is not in the local cache and the hub may not be contacted (`HF_HUB_OFFLINE`).
        public static let notCached = Code("not cached")
        /// The hub could not be reached or the connection failed.
        public static let network = Code("network")
        /// The hub answered with something this client does not understand.
        public static let badResponse = Code("bad response")
        /// A downloaded file does not have the size the hub announced.
        public static let sizeMismatch = Code("size mismatch")
        /// Reading or writing the cache failed.
        public static let disk = Code("disk")

        /// The code's name.
        /// The code, the message, and every known detail (repo, file, URL or path, cause).
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// A sentence for humans.
    public var message: String
    /// The repo id involved, if any.
    public var repository: String?
    /// The repo-relative file involved, if any.
    public var file: String?
    /// The URL or local path involved, if any.
    public var location: String?
    /// The underlying error, if any.
    public var cause: (any Error)?

    /// Creates an error; prefer filling in every field that applies.
    public init(
        _ code: Code, _ message: String, repository: String? = nil, file: String? = nil,
        location: String? = nil, cause: (any Error)? = nil
    ) {
        self.code = code
        self.message = message
        self.repository = repository
        self.file = file
        self.location = location
        self.cause = cause
    }

    public var description: String {
        var parts = ["\(code): \(message)"]
        if let repository { parts.append("repo: \(repository)") }
        if let file { parts.append("file: \(file)") }
        if let location { parts.append("at: \(location)") }
        if let cause { parts.append("cause: \(cause)") }
        return parts.joined(separator: "; ")
    }
}

extension HubError: LocalizedError {
    /// Same as ``description``, for code that prints `localizedDescription`.
    public var errorDescription: String? { description }
}
