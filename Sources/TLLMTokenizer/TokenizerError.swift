/// Why a tokenizer could not be built from its configuration.
public struct TokenizerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A short, human-readable explanation that names the offending value.
    public var message: String

    /// Creates an error with the given explanation.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { "TokenizerError: \(message)" }
}
