/// A model file that cannot be used: always names the file and what is wrong with it.
public struct ModelFileError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The file (or directory) concerned.
    public var path: String
    /// What is wrong.
    public var problem: String

    /// Creates an error.
    public init(_ path: String, _ problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }
}
