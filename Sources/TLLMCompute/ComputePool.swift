import COpenBLAS
import CTLLMKernels

/// A fixed pool of compute threads (one per core by default) that the kernels split their
/// work over. Owned by one shard; its calls block the calling thread until the work is done,
/// so it is only used from a shard's own executor thread, never from the cooperative pool.
public final class ComputePool: @unchecked Sendable {
    let pointer: OpaquePointer
    /// Threads in all, the caller included.
    public let threads: Int

    /// Creates a pool of `threads` threads (the calling thread counts as one).
    public init(threads: Int) {
        // All parallelism comes from this pool; OpenBLAS runs single-threaded inside it
        // (its own threads would busy-wait against ours on a machine with few cores).
        openblas_set_num_threads(1)
        self.threads = max(1, threads)
        pointer = tllm_pool_create(Int32(self.threads))
    }

    deinit { tllm_pool_destroy(pointer) }
}
