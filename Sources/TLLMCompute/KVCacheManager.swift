import Foundation
import TLLMModelFiles

/// Decides which KV pages each sequence uses (docs/kv-cache.md): page allocation with
/// reference counts, reservations for admitted requests, the prefix tree that shares the
/// pages of common prompt prefixes, LRU eviction of unused prefixes, and idle timeouts.
/// Never touches page memory: shards do, under the `KVLease` of each step.
public actor KVCacheManager {
    /// A snapshot for admission logs and metrics.
    public struct Statistics: Sendable, Equatable {
        public var pageTokens: Int
        public var pagesTotal: Int
        /// Pages referenced by live sequences.
        public var pagesInUse: Int
        /// Pages only the prefix tree holds (evictable).
        public var pagesCached: Int
        public var pagesFree: Int
        public var sequences: Int
        /// Prefix lookups at admission, those that reused something, and the tokens reused.
        public var prefixLookups: Int
        public var prefixHits: Int
        public var prefixHitTokens: Int
        public var evictedPages: Int
    }

    /// Positions per page unless told otherwise.
    public static let defaultPageTokens = 16
    /// Positions per page.
    public nonisolated let pageTokens: Int
    /// Pages in all; every shard pool sharing this manager has this many.
    public nonisolated let pageCount: Int
    /// Longest sequence a lease may grow.
    public nonisolated let contextLength: Int
    /// Whether released sequences leave their pages in the prefix tree.
    public nonisolated let prefixReuse: Bool

    private final class Sequence {
        var pages: [Int32] = []
        var length = 0
        /// The token of each cached position, while they are all known.
        var tokens: [Int32] = []
        var tokensKnown = true
        /// Pages set aside at admission, drawn down by leases.
        var reserved = 0
        /// A copy source to keep alive until the step that copies it has run.
        var heldSource: Int32?
        var pendingCopy: (rows: Int, from: Int32, to: Int32)?
        var lastUsed = ContinuousClock.now
    }

    private var references: [Int32]
    private var free: [Int32]
    private var sequences: [String: Sequence] = [:]
    private var reservedTotal = 0
    private let tree = PrefixTree()
    private var lookups = 0
    private var hits = 0
    private var hitTokens = 0
    private var evicted = 0

    public init(pageCount: Int, pageTokens: Int = defaultPageTokens, contextLength: Int, prefixReuse: Bool) {
        precondition(pageCount >= 1 && pageTokens >= 1)
        self.pageCount = pageCount
        self.pageTokens = pageTokens
        self.contextLength = contextLength
        self.prefixReuse = prefixReuse
        references = [Int32](repeating: 0, count: pageCount)
        free = (0..<Int32(pageCount)).reversed()
    }

    /// A manager for `layers` layers of a model, with as many pages as `options.kvCacheBudget`
    /// (default: `ComputeOptions.defaultKVCacheBudget`) holds, at least one.
    public static func sized(
        forLayers layers: Int, of configuration: ModelConfiguration, options: ComputeOptions, contextLength: Int,
        prefixReuse: Bool
    ) -> KVCacheManager {
        let layout = DecoderShard.pageLayout(
            configuration, layers: max(1, layers), pageTokens: defaultPageTokens, element: options.kvCache)
        let budget = options.kvCacheBudget ?? ComputeOptions.defaultKVCacheBudget
        return KVCacheManager(
            pageCount: max(1, budget / layout.pageBytes), contextLength: contextLength, prefixReuse: prefixReuse)
    }

    // MARK: Admission

    /// Admits sequence `id` whose context is `tokens` if the pages for its uncached part plus
    /// `headroom` pages fit beside every earlier reservation; reuses the longest cached prefix
    /// (at most `tokens.count - 1` positions). Returns the positions already cached, or nil
    /// (nothing changed) when it does not fit now.
    public func admit(_ id: String, tokens: [Int32], headroom: Int = 0) -> Int? {
        precondition(sequences[id] == nil, "sequence \(id) admitted twice")
        let match = prefixReuse ? tree.match(tokens, limit: tokens.count - 1, pageTokens: pageTokens) : .none
        // Hold the matched pages first so eviction cannot take them.
        for page in match.pages { references[Int(page)] += 1 }
        if let partial = match.partial { references[Int(partial.page)] += 1 }
        var reused = match.pages.count * pageTokens + (match.partial?.rows ?? 0)
        let sharedPages = match.pages.count
        let needed = pages(for: tokens.count) - sharedPages
        guard needed + headroom <= available() else {
            for page in match.pages { unreference(page) }
            if let partial = match.partial { unreference(partial.page) }
            return nil
        }
        let sequence = Sequence()
        sequence.pages = match.pages
        if let partial = match.partial {
            let target = allocate()!  // fits: `needed` counted this page
            sequence.pages.append(target)
            sequence.pendingCopy = (partial.rows, partial.page, target)
            sequence.heldSource = partial.page
        }
        sequence.reserved = needed - (match.partial == nil ? 0 : 1)
        reservedTotal += sequence.reserved
        sequence.length = reused
        sequence.tokens = Array(tokens[..<reused])
        sequences[id] = sequence
        if prefixReuse {
            lookups += 1
            if reused > 0 { hits += 1 }
            hitTokens += reused
        } else {
            reused = 0
        }
        return reused
    }

    // MARK: Steps

    /// The pages of one step: each sequence grows by its slice's rows (unknown sequences start
    /// empty). `tokens`, stacked like the rows, keeps the prefix tree's keys. All or nothing.
    public func lease(_ slices: [SequenceSlice], tokens: [Int32]? = nil) throws -> KVLease {
        var needed = 0
        var fromReservations = 0
        for slice in slices {
            let sequence = sequences[slice.id]
            let length = (sequence?.length ?? 0) + slice.rows
            guard length <= contextLength else {
                throw KVCacheError.contextExceeded(id: slice.id, length: length, limit: contextLength)
            }
            let more = max(0, pages(for: length) - (sequence?.pages.count ?? 0))
            let reserved = min(more, sequence?.reserved ?? 0)
            needed += more - reserved
            fromReservations += reserved
        }
        guard needed <= available() else {
            throw KVCacheError.exhausted(neededPages: needed, availablePages: available())
        }
        let now = ContinuousClock.now
        var entries: [KVLease.Entry] = []
        var row = 0
        for slice in slices {
            let sequence = sequences[slice.id] ?? Sequence()
            sequences[slice.id] = sequence
            if let held = sequence.heldSource, sequence.pendingCopy == nil {
                unreference(held)  // the step that copied it is done
                sequence.heldSource = nil
            }
            let start = sequence.length
            sequence.length += slice.rows
            while sequence.pages.count < pages(for: sequence.length) {
                if sequence.reserved > 0 {
                    sequence.reserved -= 1
                    reservedTotal -= 1
                }
                sequence.pages.append(allocate()!)  // counted above
            }
            if let tokens, sequence.tokensKnown {
                sequence.tokens.append(contentsOf: tokens[row..<(row + slice.rows)])
            } else {
                sequence.tokensKnown = false
            }
            row += slice.rows
            sequence.lastUsed = now
            entries.append(
                KVLease.Entry(
                    id: slice.id, start: start, rows: slice.rows, promptRows: slice.resolvedPromptRows,
                    pages: sequence.pages, copy: sequence.pendingCopy))
            sequence.pendingCopy = nil
        }
        return KVLease(entries: entries)
    }

    /// Ends sequences (finished, aborted, preempted): their pages go into the prefix tree when
    /// prefix reuse is on and their tokens are known, else back to the free list.
    public func release(_ ids: [String]) {
        for id in ids {
            guard let sequence = sequences.removeValue(forKey: id) else { continue }
            reservedTotal -= sequence.reserved
            if let held = sequence.heldSource { unreference(held) }
            if prefixReuse && sequence.tokensKnown && sequence.tokens.count == sequence.length
                && sequence.pendingCopy == nil
            {
                // The tree takes over the sequence's references; pages it already had are let go.
                for page in tree.insert(sequence.tokens, pages: sequence.pages, pageTokens: pageTokens) {
                    unreference(page)
                }
            } else {
                sequence.pages.forEach(unreference)
            }
        }
    }

    /// Ends sequences no step used for longer than `idle` (the protocol's 60 s); returns them.
    @discardableResult
    public func releaseIdle(olderThan idle: Duration) -> [String] {
        let now = ContinuousClock.now
        let stale = sequences.filter { now - $0.value.lastUsed > idle }.map(\.key)
        release(stale)
        return stale
    }

    /// Cached positions of a sequence (0 when unknown).
    public func length(of id: String) -> Int { sequences[id]?.length ?? 0 }

    /// Pages referenced by sequence `id` (empty when unknown): for tests.
    public func pages(of id: String) -> [Int32] { sequences[id]?.pages ?? [] }

    public var statistics: Statistics {
        let cached = evictablePages
        return Statistics(
            pageTokens: pageTokens, pagesTotal: pageCount, pagesInUse: pageCount - free.count - cached,
            pagesCached: cached, pagesFree: free.count, sequences: sequences.count, prefixLookups: lookups,
            prefixHits: hits, prefixHitTokens: hitTokens, evictedPages: evicted)
    }

    /// Drops every cached prefix no sequence uses (tests, and a user who wants memory back).
    public func clearPrefixes() { evict(upTo: Int.max) }

    // MARK: Pages

    private func pages(for positions: Int) -> Int { (positions + pageTokens - 1) / pageTokens }

    /// Pages a new reservation or step may take: free or evictable, minus earlier reservations.
    private func available() -> Int {
        free.count + evictablePages - reservedTotal
    }

    /// Pages only the prefix tree holds.
    private var evictablePages: Int { tree.pages.filter { references[Int($0)] == 1 }.count }

    /// A page with one reference, evicting the least recently used prefix if none is free.
    private func allocate() -> Int32? {
        if free.isEmpty { evict(upTo: 1) }
        guard let page = free.popLast() else { return nil }
        references[Int(page)] = 1
        return page
    }

    private func unreference(_ page: Int32) {
        references[Int(page)] -= 1
        precondition(references[Int(page)] >= 0, "KV page \(page) released twice")
        if references[Int(page)] == 0 { free.append(page) }
    }

    /// Evicts least recently used unreferenced leaves until `count` pages were freed or none is left.
    private func evict(upTo count: Int) {
        var freed = 0
        while freed < count {
            let leaves = tree.evictableLeaves { self.references[Int($0)] == 1 }
            guard !leaves.isEmpty else { return }
            for leaf in leaves where freed < count {
                tree.remove(leaf)
                unreference(leaf.page)
                freed += 1
                evicted += 1
            }
        }
    }
}

/// A radix tree whose edges are pages of token ids (docs/kv-cache.md). Full pages are keyed by
/// their tokens; a shorter page (a sequence's last) is always a leaf.
final class PrefixTree {
    final class Node {
        let tokens: [Int32]
        let page: Int32
        var children: [[Int32]: Node] = [:]
        weak var parent: Node?
        var lastUsed: UInt64 = 0

        init(tokens: [Int32], page: Int32, parent: Node?) {
            self.tokens = tokens
            self.page = page
            self.parent = parent
        }
    }

    struct Match {
        var pages: [Int32]
        var partial: (page: Int32, rows: Int)?
        static let none = Match(pages: [], partial: nil)
    }

    private let root = Node(tokens: [], page: -1, parent: nil)
    private var clock: UInt64 = 0
    /// Every node's page.
    private(set) var pages: Set<Int32> = []

    /// The longest cached prefix of `tokens[..<limit]`: whole pages, then the longest common
    /// prefix with one child page.
    func match(_ tokens: [Int32], limit: Int, pageTokens: Int) -> Match {
        clock += 1
        var node = root
        var matched = 0
        var result = Match.none
        while matched + pageTokens <= limit, let child = node.children[Array(tokens[matched..<(matched + pageTokens)])]
        {
            child.lastUsed = clock
            result.pages.append(child.page)
            matched += pageTokens
            node = child
        }
        let rest = tokens[matched..<max(matched, limit)]
        var best: (node: Node, rows: Int)?
        for child in node.children.values {
            let common = zip(child.tokens, rest).prefix { $0 == $1 }.count
            if common > 0 && common > (best?.rows ?? 0) { best = (child, common) }
        }
        if let best {
            best.node.lastUsed = clock
            result.partial = (best.node.page, best.rows)
        }
        return result
    }

    /// Adds a sequence's pages under its tokens. Returns the pages the tree did not take
    /// (positions it already had, or a sequence whose pages it cannot hang anywhere).
    func insert(_ tokens: [Int32], pages sequencePages: [Int32], pageTokens: Int) -> [Int32] {
        clock += 1
        var node = root
        var rejected: [Int32] = []
        for (index, page) in sequencePages.enumerated() {
            let chunk = Array(tokens[(index * pageTokens)..<min(tokens.count, (index + 1) * pageTokens)])
            if chunk.isEmpty {
                rejected.append(page)
                continue
            }
            if let existing = node.children[chunk] {
                existing.lastUsed = clock
                rejected.append(page)
                node = existing
                continue
            }
            let child = Node(tokens: chunk, page: page, parent: node)
            child.lastUsed = clock
            node.children[chunk] = child
            self.pages.insert(page)
            if chunk.count < pageTokens {
                // A partial page ends the sequence.
                rejected.append(contentsOf: sequencePages[(index + 1)...])
                break
            }
            node = child
        }
        return rejected
    }

    /// Leaves whose page only the tree holds, least recently used first.
    func evictableLeaves(_ unreferenced: (Int32) -> Bool) -> [Node] {
        var leaves: [Node] = []
        var stack = Array(root.children.values)
        while let node = stack.popLast() {
            if node.children.isEmpty {
                if unreferenced(node.page) { leaves.append(node) }
            } else {
                stack.append(contentsOf: node.children.values)
            }
        }
        return leaves.sorted { $0.lastUsed < $1.lastUsed }
    }

    func remove(_ node: Node) {
        node.parent?.children[node.tokens] = nil
        pages.remove(node.page)
    }
}
