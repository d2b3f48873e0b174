import Foundation

/// Which files of a repository or directory make up the model to load.
public enum FileSelection: Hashable, Sendable {
    /// Decide from the contents: a safetensors checkpoint if there is one (`config.json` and
    /// `*.safetensors`), otherwise a single GGUF file.
    case automatic
    /// A Hugging Face checkpoint: `config.json`, the tokenizer and generation files, and the
    /// safetensors weights (`model.safetensors`, or the shards its index names).
    case safetensors
    /// A GGUF model. The argument is a file name (ending in `.gguf`) or a quantization tag such
    /// as `Q4_K_M`; with `nil` the repository must hold exactly one GGUF model. Split files
    /// (`…-00001-of-00003.gguf`) count as one model.
    case gguf(String?)
    /// Exactly these repo-relative files, all required.
    case files([String])
}

/// How the chosen files are to be read.
public enum ModelFormat: Hashable, Sendable {
    /// One GGUF file, or the parts of a split GGUF file.
    case gguf
    /// `config.json`, tokenizer files and safetensors weights.
    case safetensors
    /// An explicit list of files (``FileSelection/files(_:)``); the caller knows what they are.
    case files
}

/// The files to fetch or look for, chosen from a listing of what a repository or folder holds.
struct FilePlan: Hashable, Sendable {
    var format: ModelFormat
    /// Files that must exist.
    var required: [String]
    /// Files taken when present (tokenizer and generation settings).
    var optional: [String]
    /// A `model.safetensors.index.json` whose `weight_map` names further required files.
    var shardIndex: String?
    /// The file to open first: the (first part of the) GGUF file.
    var primaryFile: String?

    var allFiles: [String] { required + optional }
}

/// Chooses files from a listing; pure, so the rules are tested without disk or network.
enum FileSelector {
    /// Files a safetensors checkpoint uses beside its weights, when the repository has them.
    static let companionFiles = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    ]
    static let safetensorsIndex = "model.safetensors.index.json"

    /// Makes a plan; `choice` is the `:FILE` part of the model path, which implies GGUF.
    ///
    /// - Parameter where: the repo id or directory, for error messages.
    static func plan(
        _ selection: FileSelection, choice: String?, listing: [String], where place: String
    ) throws -> FilePlan {
        let present = Set(listing)
        var selection = selection
        if let choice {
            switch selection {
            case .automatic, .gguf: selection = .gguf(choice)
            case .safetensors, .files:
                throw HubError(
                    .invalidModelPath, "a file choice (':\(choice)') only applies to GGUF models",
                    repository: place)
            }
        }
        if case .automatic = selection {
            let hasCheckpoint =
                present.contains("config.json") && listing.contains { isTopLevel($0) && $0.hasSuffix(".safetensors") }
            if hasCheckpoint {
                selection = .safetensors
            } else if listing.contains(where: isGGUF) {
                selection = .gguf(nil)
            } else {
                throw HubError(
                    .noModelFiles,
                    "no model found: expected a .gguf file, or config.json with *.safetensors weights",
                    repository: place)
            }
        }
        switch selection {
        case .automatic:
            preconditionFailure("resolved above")
        case .files(let files):
            return FilePlan(format: .files, required: files, optional: [], shardIndex: nil, primaryFile: nil)
        case .safetensors:
            return try safetensorsPlan(listing: listing, present: present, where: place)
        case .gguf(let choice):
            return try ggufPlan(choice: choice, listing: listing, where: place)
        }
    }

    private static func safetensorsPlan(listing: [String], present: Set<String>, where place: String) throws
        -> FilePlan
    {
        var required = ["config.json"]
        var index: String?
        if present.contains(safetensorsIndex) {
            required.append(safetensorsIndex)
            index = safetensorsIndex
        } else if present.contains("model.safetensors") {
            required.append("model.safetensors")
        } else {
            let weights = listing.filter { isTopLevel($0) && $0.hasSuffix(".safetensors") }.sorted()
            guard !weights.isEmpty else {
                throw HubError(.noModelFiles, "no *.safetensors weights found", repository: place)
            }
            required += weights
        }
        let optional = companionFiles.filter { present.contains($0) && !required.contains($0) }
        return FilePlan(
            format: .safetensors, required: required, optional: optional, shardIndex: index, primaryFile: nil)
    }

    /// The weight files a `model.safetensors.index.json` refers to, in a stable order.
    static func shardFiles(fromIndex data: Data) throws -> [String] {
        struct Index: Decodable {
            var weightMap: [String: String]
            enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
        }
        return Set(try JSONDecoder().decode(Index.self, from: data).weightMap.values).sorted()
    }

    // MARK: GGUF

    /// One GGUF model: a single file or all parts of a split file.
    struct GGUFModel: Hashable {
        /// The path without `.gguf` and without the `-00001-of-00003` part.
        var stem: String
        /// Every file of the model, first part first.
        var files: [String]
        var displayName: String { files[0] }
        var isProjector: Bool { stem.lowercased().contains("mmproj") }
    }

    static func isGGUF(_ path: String) -> Bool { path.lowercased().hasSuffix(".gguf") }

    static func isTopLevel(_ path: String) -> Bool { !path.contains("/") }

    /// Groups GGUF files into models; the parts of a split file make one model, and all of its
    /// parts are listed even if the listing lacks some (so a partial cache is seen as incomplete).
    static func ggufModels(in listing: [String]) -> [GGUFModel] {
        var models: [String: GGUFModel] = [:]
        for path in listing where isGGUF(path) {
            let stem = String(path.dropLast(5))
            if let split = splitPart(stem) {
                let width = split.digits
                let files = (1...split.count).map { part in
                    let number = String(part), total = String(split.count)
                    let padded = String(repeating: "0", count: max(0, width - number.count)) + number
                    let paddedTotal = String(repeating: "0", count: max(0, width - total.count)) + total
                    return "\(split.stem)-\(padded)-of-\(paddedTotal).gguf"
                }
                models[split.stem] = GGUFModel(stem: split.stem, files: files)
            } else {
                models[stem] = GGUFModel(stem: stem, files: [path])
            }
        }
        return models.values.sorted { $0.stem < $1.stem }
    }

    /// Recognises llama.cpp's split naming `STEM-00001-of-00003`.
    private static func splitPart(_ stem: String) -> (stem: String, count: Int, digits: Int)? {
        let pieces = stem.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count >= 4, pieces[pieces.count - 2] == "of" else { return nil }
        let part = pieces[pieces.count - 3], total = pieces[pieces.count - 1]
        guard !part.isEmpty, part.count == total.count, part.allSatisfy(\.isNumber), total.allSatisfy(\.isNumber),
            let count = Int(total), count > 0
        else { return nil }
        return (pieces.dropLast(3).joined(separator: "-"), count, part.count)
    }

    private static func ggufPlan(choice: String?, listing: [String], where place: String) throws -> FilePlan {
        let models = ggufModels(in: listing)
        let names = models.map(\.displayName)
        let available = names.isEmpty ? "none" : names.joined(separator: ", ")
        let chosen: GGUFModel
        if let choice {
            let lowered = choice.lowercased()
            var matches: [GGUFModel]
            if isGGUF(choice) {
                matches = models.filter { model in
                    model.files.contains { $0 == choice || ($0 as NSString).lastPathComponent == choice }
                }
            } else {
                // A tag names the quantization at the end of the stem (`…-Q4_K_M`); that keeps
                // `Q4_K` from also matching `Q4_K_M`. Folders named after the quantization
                // (`Q8_0/model-00001-of-00002.gguf`) are caught by the looser second pass.
                matches = models.filter { model in
                    let stem = model.stem.lowercased()
                    return stem.hasSuffix(lowered) && "-._/".contains(stem.dropLast(lowered.count).last ?? "/")
                }
                if matches.isEmpty { matches = models.filter { $0.stem.lowercased().contains(lowered) } }
            }
            guard matches.count == 1 else {
                if matches.isEmpty {
                    throw HubError(
                        .notFound, "no GGUF file matches '\(choice)'; available: \(available)", repository: place)
                }
                throw HubError(
                    .ambiguousModelFile,
                    "'\(choice)' matches several GGUF files: \(matches.map(\.displayName).joined(separator: ", "))"
                        + "; name one exactly", repository: place)
            }
            chosen = matches[0]
        } else {
            // Vision projectors (mmproj) ship beside the language model and are never what
            // `--model_path` means on its own.
            let candidates = models.contains { !$0.isProjector } ? models.filter { !$0.isProjector } : models
            guard candidates.count == 1 else {
                if candidates.isEmpty {
                    throw HubError(.noModelFiles, "no .gguf file found", repository: place)
                }
                throw HubError(
                    .ambiguousModelFile,
                    "several GGUF files, choose one with '\(place):FILE.gguf' or a quantization tag "
                        + "such as '\(place):Q4_K_M'; available: \(available)", repository: place)
            }
            chosen = candidates[0]
        }
        return FilePlan(
            format: .gguf, required: chosen.files, optional: [], shardIndex: nil, primaryFile: chosen.files[0])
    }
}
