import Foundation

/// A model on the hub, as written in `--model_path`: `ORG/NAME[@REVISION][:FILE]`.
///
/// - `REVISION` is a branch, tag or commit hash (default `main`); it may contain `/`
///   (`refs/pr/1`).
/// - `FILE` chooses among several GGUF files: either a repo-relative path ending in `.gguf`
///   (`ORG/NAME:model-Q4_K_M.gguf`) or a quantization tag matched against the file names
///   (`ORG/NAME:Q4_K_M`), the way llama.cpp's `-hf` flag reads it.
public struct RepositoryReference: Hashable, Sendable, CustomStringConvertible {
    /// The repo id, `ORG/NAME` (or a bare legacy `NAME`).
    public var id: String
    /// The branch, tag or commit hash.
    public var revision: String
    /// The GGUF file name or quantization tag to pick, if any.
    public var fileChoice: String?

    /// Creates a reference from its parts.
    public init(id: String, revision: String = "main", fileChoice: String? = nil) {
        self.id = id
        self.revision = revision
        self.fileChoice = fileChoice
    }

    /// Parses `ORG/NAME[@REVISION][:FILE]`; `nil` if the text is not shaped like a repo id.
    public init?(parsing text: String) {
        var rest = Substring(text)
        var choice: String?
        if let colon = rest.firstIndex(of: ":") {
            choice = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
            if choice?.isEmpty == true { return nil }
        }
        var revision = "main"
        if let at = rest.firstIndex(of: "@") {
            revision = String(rest[rest.index(after: at)...])
            rest = rest[..<at]
            if revision.isEmpty { return nil }
        }
        guard Self.isValidRepositoryID(rest) else { return nil }
        self.init(id: String(rest), revision: revision, fileChoice: choice)
    }

    /// The folder name the cache uses for this repo: `models--ORG--NAME`.
    public var cacheFolderName: String {
        (["models"] + id.split(separator: "/").map(String.init)).joined(separator: "--")
    }

    /// Whether `revision` is a full commit hash, which needs no `refs/` lookup.
    public var revisionIsCommitHash: Bool { Self.isCommitHash(revision) }

    /// The reference as it would be written on the command line.
    public var description: String {
        var text = id
        if revision != "main" { text += "@\(revision)" }
        if let fileChoice { text += ":\(fileChoice)" }
        return text
    }

    static func isCommitHash(_ text: some StringProtocol) -> Bool {
        text.count == 40 && text.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    /// The rules of `huggingface_hub.utils.validate_repo_id`: one optional namespace, word
    /// characters, `-` and `.`, no `--` or `..`, at most 96 characters per part.
    static func isValidRepositoryID(_ text: some StringProtocol) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), !text.contains("--"), !text.contains(".."),
            !text.hasSuffix(".git")
        else { return false }
        return parts.allSatisfy { part in
            guard (1...96).contains(part.count), let first = part.first, let last = part.last,
                first != "-" && first != ".", last != "-" && last != "."
            else { return false }
            return part.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "_-.".contains($0)) }
        }
    }
}

/// Helpers for paths given on the command line.
enum LocalPath {
    /// Expands a leading `~` or `~/` to `home`, as a shell would have.
    static func expandingTilde(_ path: String, home: String) -> String {
        if path == "~" { return home }
        if path.hasPrefix("~/") { return home + path.dropFirst(1) }
        return path
    }

    /// Whether `text` was clearly meant as a filesystem path rather than a repo id, so that a
    /// missing file is reported as such instead of being looked up on the hub.
    static func looksLikePath(_ text: String) -> Bool {
        text.hasPrefix("/") || text.hasPrefix("./") || text.hasPrefix("../") || text.hasPrefix("~")
            || text == "." || text == ".."
            || (!text.contains(":") && text.lowercased().hasSuffix(".gguf"))
    }
}
