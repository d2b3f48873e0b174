import CTLLMKernels
import Foundation

/// The shape of a shard's KV pages (docs/kv-cache.md): `pageTokens` positions of every layer,
/// K block then V block per layer, rows of `kvWidth` elements.
public struct KVPageLayout: Sendable, Hashable {
    public var pageTokens: Int
    public var layers: Int
    public var kvWidth: Int
    public var element: ComputeOptions.CacheElement

    public init(pageTokens: Int, layers: Int, kvWidth: Int, element: ComputeOptions.CacheElement) {
        precondition(pageTokens >= 1 && layers >= 1 && kvWidth >= 1)
        self.pageTokens = pageTokens
        self.layers = layers
        self.kvWidth = kvWidth
        self.element = element
    }

    /// Bytes of one position's keys (or values) in one layer.
    public var rowBytes: Int { kvWidth * element.byteCount }
    /// Bytes of one page: K and V of `pageTokens` positions in every layer.
    public var pageBytes: Int { 2 * layers * pageTokens * rowBytes }
    /// Offset of layer `layer`'s keys inside a page (its values follow `pageTokens` rows later).
    func keyOffset(layer: Int) -> Int { 2 * layer * pageTokens * rowBytes }
}

/// The memory of a shard's KV pages: one anonymous mapping, committed by the kernel page by
/// page as positions are first written. Which page belongs to which sequence is the
/// `KVCacheManager`'s business; the shard reads and writes the pages a `KVLease` names.
public final class KVPagePool: @unchecked Sendable {
    public let layout: KVPageLayout
    public let pageCount: Int
    private let base: UnsafeMutableRawPointer
    private let byteCount: Int

    public init(layout: KVPageLayout, pageCount: Int) {
        precondition(pageCount >= 1)
        self.layout = layout
        self.pageCount = pageCount
        byteCount = layout.pageBytes * pageCount
        let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { fatalError("cannot reserve \(byteCount) bytes for the KV cache") }
        base = mapped
    }

    deinit { munmap(base, byteCount) }

    /// Where position `row` of `page` keeps its keys in `layer` (values: `values: true`).
    func row(page: Int32, layer: Int, position row: Int, values: Bool = false) -> UnsafeMutableRawPointer {
        base + Int(page) * layout.pageBytes + layout.keyOffset(layer: layer)
            + (values ? layout.pageTokens * layout.rowBytes : 0) + row * layout.rowBytes
    }

    /// Stores `rows` positions of keys and values (float32 rows of `kvWidth`) from position
    /// `start` on, into the pages of `table`.
    func write(
        layer: Int, table: [Int32], start: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int
    ) {
        let width = layout.kvWidth
        for i in 0..<rows {
            let position = start + i
            let page = table[position / layout.pageTokens]
            let slot = position % layout.pageTokens
            for (source, isValue) in [(keys, false), (values, true)] {
                let target = row(page: page, layer: layer, position: slot, values: isValue)
                switch layout.element {
                case .float32: target.copyMemory(from: source + i * width, byteCount: width * 4)
                case .float16: tllm_f32_to_f16(source + i * width, target.assumingMemoryBound(to: UInt16.self), width)
                }
            }
        }
    }

    /// Copies the first `rows` positions of page `source` into page `target` in every layer
    /// (copy-on-write where a shared prefix ends mid-page).
    func copy(rows: Int, from source: Int32, to target: Int32) {
        for layer in 0..<layout.layers {
            for isValue in [false, true] {
                row(page: target, layer: layer, position: 0, values: isValue).copyMemory(
                    from: row(page: source, layer: layer, position: 0, values: isValue),
                    byteCount: rows * layout.rowBytes)
            }
        }
    }

    /// Runs `body` with the kernel's view of `layer` through page table `table`.
    func withView<R>(layer: Int, table: [Int32], _ body: (UnsafePointer<tllm_kv_view>) -> R) -> R {
        table.withUnsafeBufferPointer { pages in
            var view = tllm_kv_view(
                keys: row(page: 0, layer: layer, position: 0),
                values: row(page: 0, layer: layer, position: 0, values: true),
                pages: pages.baseAddress, page_tokens: layout.pageTokens, page_stride: layout.pageBytes,
                row_stride: layout.rowBytes, type: layout.element.kernelType)
            return body(&view)
        }
    }
}

/// The pages of one step (architecture.md, "data plane vs control plane"): for each sequence,
/// where its new rows go and which pages hold its whole context. Issued by the
/// `KVCacheManager`, consumed by every shard of the step.
public struct KVLease: Sendable {
    public struct Entry: Sendable {
        public var id: String
        /// Positions already cached: the new rows start here.
        public var start: Int
        public var rows: Int
        /// How many of `rows`, from the first, are prompt tokens (`SequenceSlice.promptRows`).
        public var promptRows: Int
        /// The page of each `pageTokens` positions, covering `start + rows`.
        public var pages: [Int32]
        /// Copy the first `rows` positions of `from` into `to` before computing (a shared prefix
        /// that ends mid-page).
        public var copy: (rows: Int, from: Int32, to: Int32)?
    }

    public var entries: [Entry]
}

/// Why the KV cache cannot take a step.
public enum KVCacheError: Error, CustomStringConvertible, Equatable {
    /// Not enough free pages, even after evicting every unused cached prefix.
    case exhausted(neededPages: Int, availablePages: Int)
    /// A sequence would grow beyond the context length.
    case contextExceeded(id: String, length: Int, limit: Int)

    public var description: String {
        switch self {
        case .exhausted(let needed, let available):
            return "KV cache exhausted: the step needs \(needed) more pages, \(available) are free or evictable"
        case .contextExceeded(let id, let length, let limit):
            return "sequence \(id) would reach \(length) tokens, beyond the context length \(limit)"
        }
    }
}
