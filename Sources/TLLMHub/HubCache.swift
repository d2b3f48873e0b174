import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The on-disk layout `huggingface_hub` writes, so that the Python tools and this package share
/// one cache:
///
/// ```
/// {cache}/models--ORG--NAME/
///     refs/{revision}                  the commit hash the revision last resolved to
///     blobs/{etag}                     file contents, named by LFS sha256 or git blob id
///     blobs/{etag}.incomplete          a download in progress (resumed with HTTP Range)
///     snapshots/{commit}/{file}        relative symlinks to ../../blobs/{etag}
/// {cache}/.locks/models--ORG--NAME/{etag}.lock
/// ```
struct HubCache: Sendable {
    var root: URL
    var repository: RepositoryReference

    var repositoryFolder: URL { root.appendingPathComponent(repository.cacheFolderName, isDirectory: true) }
    var blobsFolder: URL { repositoryFolder.appendingPathComponent("blobs", isDirectory: true) }
    var locksFolder: URL {
        root.appendingPathComponent(".locks", isDirectory: true)
            .appendingPathComponent(repository.cacheFolderName, isDirectory: true)
    }

    func refFile(_ revision: String) -> URL {
        repositoryFolder.appendingPathComponent("refs", isDirectory: true).appendingPathComponent(revision)
    }

    func snapshotFolder(_ commit: String) -> URL {
        repositoryFolder.appendingPathComponent("snapshots", isDirectory: true)
            .appendingPathComponent(commit, isDirectory: true)
    }

    func blob(_ etag: String) -> URL { blobsFolder.appendingPathComponent(etag) }
    func incompleteBlob(_ etag: String) -> URL { blobsFolder.appendingPathComponent(etag + ".incomplete") }
    func lockFile(_ etag: String) -> URL { locksFolder.appendingPathComponent(etag + ".lock") }

    /// The commit the requested revision points at locally, if the cache knows it.
    func cachedCommit() -> String? {
        if repository.revisionIsCommitHash { return repository.revision }
        guard let text = try? String(contentsOf: refFile(repository.revision), encoding: .utf8) else { return nil }
        let commit = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return commit.isEmpty ? nil : commit
    }

    /// Records which commit a revision resolved to. No trailing newline, as `huggingface_hub`
    /// writes it.
    func writeRef(_ revision: String, commit: String) throws {
        guard revision != commit else { return }
        let file = refFile(revision)
        do {
            try FileManager.default.createDirectory(
                at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(commit.utf8).write(to: file, options: .atomic)
        } catch {
            throw HubError(
                .disk, "cannot write the cache ref: \(error.localizedDescription)",
                repository: repository.id, location: file.path, cause: error)
        }
    }

    /// Links `snapshots/{commit}/{file}` to `blobs/{etag}` with a relative symlink, falling back to
    /// a copy where the filesystem has no symlinks (as `huggingface_hub` does).
    func link(file: String, commit: String, etag: String) throws {
        let pointer = snapshotFolder(commit).appendingPathComponent(file)
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(
                at: pointer.deletingLastPathComponent(), withIntermediateDirectories: true)
            if (try? fileManager.destinationOfSymbolicLink(atPath: pointer.path)) != nil
                || fileManager.fileExists(atPath: pointer.path)
            {
                try fileManager.removeItem(at: pointer)
            }
            // snapshots/{commit}/a/b.bin needs one `..` per folder between it and the repo folder.
            let depth = file.split(separator: "/").count + 1
            let target = String(repeating: "../", count: depth) + "blobs/" + etag
            do {
                try fileManager.createSymbolicLink(atPath: pointer.path, withDestinationPath: target)
            } catch {
                try fileManager.copyItem(at: blob(etag), to: pointer)
            }
        } catch {
            throw HubError(
                .disk, "cannot link the downloaded file into the snapshot: \(error.localizedDescription)",
                repository: repository.id, file: file, location: pointer.path, cause: error)
        }
    }

    /// Every readable file under a snapshot (or any folder), as paths relative to it; broken
    /// symlinks (blobs removed by a cache cleanup) are left out.
    static func listFiles(in folder: URL) -> [String] {
        let fileManager = FileManager.default
        guard let enumerator = fileManager.enumerator(atPath: folder.path) else { return [] }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = folder.appendingPathComponent(relative).path
            // fileExists follows symlinks: a dangling link reports false.
            if fileManager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue,
                !relative.split(separator: "/").contains(where: { $0.hasPrefix(".") })
            {
                files.append(relative)
            }
        }
        return files.sorted()
    }

    /// Holds `.locks/…/{etag}.lock` with `flock`, the lock Python's `filelock` takes, so that two
    /// processes (ours or Python's) never write the same `.incomplete` file.
    func withLock<T: Sendable>(etag: String, _ body: () async throws -> T) async throws -> T {
        let path = lockFile(etag).path
        let fd: Int32
        do {
            try FileManager.default.createDirectory(at: locksFolder, withIntermediateDirectories: true)
        } catch {
            throw HubError(
                .disk, "cannot create the lock folder: \(error.localizedDescription)", repository: repository.id,
                location: locksFolder.path, cause: error)
        }
        fd = open(path, O_RDWR | O_CREAT, 0o644)
        guard fd >= 0 else {
            throw HubError(
                .disk, "cannot open the lock file: \(String(cString: strerror(errno)))", repository: repository.id,
                location: path)
        }
        defer { close(fd) }
        // Poll rather than block: a blocking flock would hold a thread of Swift's cooperative pool.
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                throw HubError(
                    .disk, "cannot lock: \(String(cString: strerror(errno)))", repository: repository.id,
                    location: path)
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        defer { flock(fd, LOCK_UN) }
        return try await body()
    }
}
