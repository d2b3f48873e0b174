import Testing

@testable import TLLMCompute

/// Page accounting, the prefix tree and eviction, without a model (docs/kv-cache.md).
@Suite struct KVCacheManagerTests {
    static func tokens(_ range: Range<Int>, salt: Int32 = 0) -> [Int32] { range.map { Int32($0) + salt } }

    /// Admits and runs `tokens` through one prefill step, then releases the sequence.
    static func run(_ cache: KVCacheManager, _ id: String, _ tokens: [Int32]) async throws -> KVLease.Entry {
        let reused = try #require(await cache.admit(id, tokens: tokens))
        let lease = try await cache.lease(
            [SequenceSlice(id: id, rows: tokens.count - reused)], tokens: Array(tokens[reused...]))
        await cache.release([id])
        return lease.entries[0]
    }

    @Test func aSharedPrefixReusesWholePagesAndCopiesThePageWhereItEnds() async throws {
        let cache = KVCacheManager(pageCount: 16, pageTokens: 16, contextLength: 1024, prefixReuse: true)
        let first = try await Self.run(cache, "a", Self.tokens(0..<40))
        #expect(first.start == 0 && first.pages.count == 3 && first.copy == nil)

        // 37 common tokens: two whole pages shared, 5 rows of the third copied.
        let second = Self.tokens(0..<37) + Self.tokens(0..<10, salt: 1000)
        #expect(await cache.admit("b", tokens: second) == 37)
        let lease = try await cache.lease([SequenceSlice(id: "b", rows: 10)], tokens: Array(second[37...]))
        let entry = lease.entries[0]
        #expect(entry.start == 37)
        #expect(Array(entry.pages.prefix(2)) == Array(first.pages.prefix(2)))
        #expect(entry.pages[2] != first.pages[2])
        let copy = try #require(entry.copy)
        #expect(copy.rows == 5 && copy.from == first.pages[2] && copy.to == entry.pages[2])

        let statistics = await cache.statistics
        #expect(statistics.prefixHits == 1 && statistics.prefixHitTokens == 37 && statistics.prefixLookups == 2)
    }

    @Test func theLastTokenIsAlwaysComputed() async throws {
        let cache = KVCacheManager(pageCount: 16, pageTokens: 16, contextLength: 1024, prefixReuse: true)
        _ = try await Self.run(cache, "a", Self.tokens(0..<32))
        #expect(await cache.admit("same", tokens: Self.tokens(0..<32)) == 31)
        #expect(await cache.admit("longer", tokens: Self.tokens(0..<33)) == 32)
    }

    @Test func withoutPrefixReuseEveryPageComesBack() async throws {
        let cache = KVCacheManager(pageCount: 8, pageTokens: 16, contextLength: 1024, prefixReuse: false)
        _ = try await Self.run(cache, "a", Self.tokens(0..<40))
        #expect(await cache.admit("b", tokens: Self.tokens(0..<40)) == 0)
        await cache.release(["b"])
        let statistics = await cache.statistics
        #expect(statistics.pagesFree == 8 && statistics.pagesInUse == 0 && statistics.pagesCached == 0)
    }

    @Test func admissionWaitsForPagesAndReservationsCount() async throws {
        let cache = KVCacheManager(pageCount: 4, pageTokens: 16, contextLength: 1024, prefixReuse: false)
        #expect(await cache.admit("a", tokens: Self.tokens(0..<40)) == 0)  // reserves 3 pages
        #expect(await cache.admit("b", tokens: Self.tokens(0..<20)) == nil)  // needs 2, 1 left
        #expect(await cache.admit("c", tokens: Self.tokens(0..<10)) == 0)
        // Nothing changed for the refused one; a lease beyond the free pages changes nothing either.
        #expect(await cache.statistics.sequences == 2)
        await #expect(throws: KVCacheError.exhausted(neededPages: 1, availablePages: 0)) {
            try await cache.lease([SequenceSlice(id: "c", rows: 17)])
        }
        #expect(await cache.length(of: "c") == 0)
        await cache.release(["a"])
        #expect(await cache.admit("b", tokens: Self.tokens(0..<20)) == 0)
    }

    @Test func unusedPrefixesAreEvictedLeastRecentlyUsedFirst() async throws {
        let cache = KVCacheManager(pageCount: 4, pageTokens: 16, contextLength: 1024, prefixReuse: true)
        let old = try await Self.run(cache, "old", Self.tokens(0..<32, salt: 0))
        _ = try await Self.run(cache, "new", Self.tokens(0..<32, salt: 500))
        #expect(await cache.statistics.pagesCached == 4)
        // Touch "new" again so "old" is the least recently used.
        #expect(await cache.admit("peek", tokens: Self.tokens(0..<32, salt: 500)) == 31)
        await cache.release(["peek"])
        // Two fresh pages: "old"'s leaf goes first, then its parent.
        let fresh = try await Self.run(cache, "fresh", Self.tokens(0..<32, salt: 900))
        #expect(Set(fresh.pages) == Set(old.pages))
        #expect(await cache.admit("old-again", tokens: Self.tokens(0..<32, salt: 0)) == 0)
        #expect(await cache.statistics.evictedPages >= 2)
    }

    @Test func idleSequencesAreReleased() async throws {
        let cache = KVCacheManager(pageCount: 4, pageTokens: 16, contextLength: 1024, prefixReuse: false)
        _ = try await cache.lease([SequenceSlice(id: "worker-step", rows: 3)])
        #expect(await cache.releaseIdle(olderThan: .seconds(60)).isEmpty)
        #expect(await cache.releaseIdle(olderThan: .zero) == ["worker-step"])
        #expect(await cache.statistics.pagesFree == 4)
    }

    @Test func sizesParse() {
        #expect(ByteCount.parse("512MiB") == 512 << 20)
        #expect(ByteCount.parse("2G") == 2 << 30)
        #expect(ByteCount.parse("1.5GB") == 1_500_000_000)
        #expect(ByteCount.parse("4096") == 4096)
        #expect(ByteCount.parse("lots") == nil)
        #expect(ByteCount.parse("12XB") == nil)
    }
}
