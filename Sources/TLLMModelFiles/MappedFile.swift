import Glibc

/// A read-only memory mapping of a whole file. Pages load on first touch, so a process
/// that reads only some tensors keeps only those resident.
public final class MappedFile: @unchecked Sendable {
    /// The file's path.
    public let path: String
    /// The mapped bytes (read-only; valid while this object lives).
    public let bytes: UnsafeRawBufferPointer

    /// Maps `path`; throws a `ModelFileError` naming the file when it cannot.
    public init(path: String) throws(ModelFileError) {
        self.path = path
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ModelFileError(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw ModelFileError(path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw ModelFileError(path, "not a regular file") }
        let size = Int(status.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, descriptor, 0)
        guard let address, address != MAP_FAILED else {
            throw ModelFileError(path, "cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Tells the kernel that a range will be read soon (prefetch), or is no longer needed.
    public func advise(_ range: Range<Int>, willNeed: Bool) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        madvise(
            UnsafeMutableRawPointer(mutating: base + start), range.upperBound - start,
            willNeed ? MADV_WILLNEED : MADV_DONTNEED)
    }
}
