import Foundation
import Logging

/// Turns a `--model_path` into files on disk, downloading from the Hugging Face hub if needed.
///
/// Resolution order:
/// 1. An existing path: a `.gguf` file, or a directory (safetensors checkpoint or GGUF files).
/// 2. A repo reference `ORG/NAME[@REVISION][:FILE]` (see ``RepositoryReference``) found complete
///    in the cache: `refs/{revision}` names the commit whose snapshot holds the files. No network.
/// 3. Otherwise, unless `HF_HUB_OFFLINE` is set, the model-info API lists the revision's files,
///    the needed ones are downloaded into the cache (resumably, size-checked) and `refs/` is
///    updated.
///
/// A cached model is used without asking the hub whether the revision moved; delete the ref (or
/// pass a commit hash) to pick up a newer one.
public struct ModelLocator: Sendable {
    /// Endpoint, cache, token and offline mode.
    public var configuration: HubConfiguration
    /// Where resolution and download events are logged.
    public var logger: Logger
    /// The longest silence tolerated on a connection, in seconds.
    public var requestTimeout: TimeInterval = 30
    /// How many times a file transfer is tried before a network failure is reported; each retry
    /// resumes where the last attempt stopped.
    public var maxAttempts = 5
    /// The pause before the first retry, in seconds; doubled per retry, at most 10 s.
    public var retryDelay: TimeInterval = 1
    /// Called with download progress (throttled to about ten reports per second per file).
    public var onProgress: (@Sendable (DownloadProgress) -> Void)?
    /// Draws progress on standard error: a bar on a terminal, plain lines otherwise.
    public var terminalProgress: TerminalProgressRenderer?

    private let home: String

    /// Reads the configuration from `environment` (see ``HubConfiguration/init(environment:)``).
    ///
    /// Progress goes to standard error unless `HF_HUB_DISABLE_PROGRESS_BARS` is set, and to
    /// `onProgress` if given.
    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        logger: Logger = Logger(label: "tllm.hub"),
        onProgress: (@Sendable (DownloadProgress) -> Void)? = nil
    ) {
        let configuration = HubConfiguration(environment: environment)
        self.init(
            configuration: configuration, logger: logger, onProgress: onProgress,
            terminalProgress: configuration.showsProgressBars ? TerminalProgressRenderer() : nil,
            home: environment["HOME"])
    }

    /// Uses an explicit configuration; `home` (default: the user's) expands `~` in model paths.
    public init(
        configuration: HubConfiguration, logger: Logger = Logger(label: "tllm.hub"),
        onProgress: (@Sendable (DownloadProgress) -> Void)? = nil,
        terminalProgress: TerminalProgressRenderer? = nil, home: String? = nil
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onProgress = onProgress
        self.terminalProgress = terminalProgress
        self.home = home ?? FileManager.default.homeDirectoryForCurrentUser.path
    }

    /// Finds (and if needed downloads) the model `modelPath` names.
    ///
    /// - Parameters:
    ///   - modelPath: a `.gguf` file, a directory, or `ORG/NAME[@REVISION][:FILE]`.
    ///   - files: which files make the model; a `:FILE` suffix on the path implies
    ///     ``FileSelection/gguf(_:)`` with that choice.
    /// - Throws: ``HubError``.
    public func resolve(_ modelPath: String, files selection: FileSelection = .automatic) async throws
        -> ResolvedModel
    {
        let expanded = LocalPath.expandingTilde(modelPath, home: home)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: expanded, isDirectory: &isDirectory) {
            let url = URL(fileURLWithPath: expanded).standardizedFileURL
            return isDirectory.boolValue
                ? try resolveDirectory(url, selection: selection) : try resolveFile(url)
        }
        guard !LocalPath.looksLikePath(modelPath), let reference = RepositoryReference(parsing: modelPath) else {
            throw HubError(
                .invalidModelPath,
                "no such file or directory, and not a hub repo id of the form ORG/NAME[@REVISION][:FILE]",
                location: expanded)
        }
        return try await resolveRepository(reference, selection: selection)
    }

    // MARK: Local paths

    private func resolveFile(_ url: URL) throws -> ResolvedModel {
        guard FileSelector.isGGUF(url.path) else {
            throw HubError(
                .invalidModelPath,
                "a model file must be a .gguf file; for safetensors give the directory holding config.json",
                location: url.path)
        }
        let directory = url.deletingLastPathComponent()
        let name = url.lastPathComponent
        // The first part of a split GGUF file brings its siblings along.
        let siblings = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let model = FileSelector.ggufModels(in: siblings).first { $0.files.contains(name) }
        let files = model?.files ?? [name]
        let missing = files.filter {
            !FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path)
        }
        guard missing.isEmpty else {
            throw HubError(
                .noModelFiles, "parts of the split GGUF file are missing: \(missing.joined(separator: ", "))",
                location: directory.path)
        }
        return ResolvedModel(
            format: .gguf, directory: directory, files: files,
            primaryFile: directory.appendingPathComponent(files[0]), source: .local)
    }

    private func resolveDirectory(_ url: URL, selection: FileSelection) throws -> ResolvedModel {
        let listing = HubCache.listFiles(in: url)
        let plan = try FileSelector.plan(selection, choice: nil, listing: listing, where: url.path)
        let files = try completeFiles(plan, in: url, listing: Set(listing))
        guard files.missing.isEmpty else {
            throw HubError(
                .noModelFiles, "missing model files: \(files.missing.joined(separator: ", "))", location: url.path)
        }
        return model(plan, directory: url, files: files.present, source: .local)
    }

    // MARK: Hub repositories

    private func resolveRepository(_ reference: RepositoryReference, selection: FileSelection) async throws
        -> ResolvedModel
    {
        let cache = HubCache(root: configuration.cacheDirectory, repository: reference)
        var missingInCache: [String] = []
        if let commit = cache.cachedCommit() {
            let snapshot = cache.snapshotFolder(commit)
            let listing = HubCache.listFiles(in: snapshot)
            do {
                let plan = try FileSelector.plan(
                    selection, choice: reference.fileChoice, listing: listing, where: reference.id)
                let files = try completeFiles(plan, in: snapshot, listing: Set(listing))
                missingInCache = files.missing
                // tokenizer.json is optional in a repo but the tokenizer needs it, so a snapshot
                // without it (say, one Python filled with weights only) is not taken as complete.
                if plan.format == .safetensors && !listing.contains("tokenizer.json") {
                    missingInCache.append("tokenizer.json")
                }
                if missingInCache.isEmpty {
                    logger.debug(
                        "Using the cached model", metadata: ["repo": "\(reference)", "snapshot": "\(snapshot.path)"])
                    return model(
                        plan, directory: snapshot, files: files.present, source: .hub(reference, commit: commit))
                }
            } catch let error as HubError where error.code == .noModelFiles || error.code == .notFound {
                missingInCache = [error.message]
            }
        }
        if configuration.isOffline {
            let detail = missingInCache.isEmpty ? "" : " (incomplete: \(missingInCache.joined(separator: ", ")))"
            throw HubError(
                .notCached,
                "'\(reference)' is not in the cache\(detail) and HF_HUB_OFFLINE is set; download it once online "
                    + "or unset HF_HUB_OFFLINE", repository: reference.id, location: cache.repositoryFolder.path)
        }
        return try await download(reference, selection: selection, cache: cache)
    }

    private func download(_ reference: RepositoryReference, selection: FileSelection, cache: HubCache) async throws
        -> ResolvedModel
    {
        let client = HubClient(endpoint: configuration.endpoint, token: configuration.token, timeout: requestTimeout)
        let info = try await client.repositoryInfo(reference.id, revision: reference.revision)
        let listing = info.files.keys.sorted()
        let plan = try FileSelector.plan(selection, choice: reference.fileChoice, listing: listing, where: reference.id)
        let downloader = FileDownloader(
            client: client, cache: cache, maxAttempts: max(1, maxAttempts), retryDelay: retryDelay,
            progress: progressHandler, logger: logger)

        func fetch(_ files: [String]) async throws {
            for file in files {
                guard let size = info.files[file] else {
                    throw HubError(
                        .notFound, "the repository has no file '\(file)' at revision \(reference.revision)",
                        repository: reference.id, file: file,
                        location: client.modelInfoURL(reference.id, revision: reference.revision).absoluteString)
                }
                try await downloader.ensure(file: file, commit: info.commit, expectedSize: size)
            }
        }
        try await fetch(plan.required + plan.optional)
        let snapshot = cache.snapshotFolder(info.commit)
        var files = plan.allFiles
        if let index = plan.shardIndex {
            let shards = try shardFiles(index: snapshot.appendingPathComponent(index), repository: reference.id)
            try await fetch(shards)
            files += shards
        }
        try cache.writeRef(reference.revision, commit: info.commit)
        logger.info("Model ready", metadata: ["repo": "\(reference)", "snapshot": "\(snapshot.path)"])
        return model(plan, directory: snapshot, files: files, source: .hub(reference, commit: info.commit))
    }

    private var progressHandler: (@Sendable (DownloadProgress) -> Void)? {
        switch (onProgress, terminalProgress) {
        case (nil, nil): return nil
        case (let callback?, nil): return callback
        case (nil, let terminal?): return terminal.report
        case (let callback?, let terminal?):
            return { progress in
                terminal.report(progress)
                callback(progress)
            }
        }
    }

    // MARK: Shared

    /// The plan's files that exist in `folder` and the required ones that do not, shards included.
    private func completeFiles(_ plan: FilePlan, in folder: URL, listing: Set<String>) throws
        -> (present: [String], missing: [String])
    {
        var present = plan.allFiles.filter(listing.contains)
        var missing = plan.required.filter { !listing.contains($0) }
        if let index = plan.shardIndex, listing.contains(index) {
            let shards = try shardFiles(index: folder.appendingPathComponent(index), repository: nil)
            present += shards.filter(listing.contains)
            missing += shards.filter { !listing.contains($0) }
        }
        return (present, missing)
    }

    private func shardFiles(index: URL, repository: String?) throws -> [String] {
        do {
            return try FileSelector.shardFiles(fromIndex: Data(contentsOf: index))
        } catch {
            throw HubError(
                .badResponse, "cannot read the safetensors index: \(error.localizedDescription)",
                repository: repository, file: index.lastPathComponent, location: index.path, cause: error)
        }
    }

    private func model(_ plan: FilePlan, directory: URL, files: [String], source: ResolvedModel.Source)
        -> ResolvedModel
    {
        ResolvedModel(
            format: plan.format, directory: directory, files: files,
            primaryFile: plan.primaryFile.map { directory.appendingPathComponent($0) }, source: source)
    }
}
