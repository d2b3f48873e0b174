import Foundation
import Logging
import Metrics
import TLLMCompute
import TLLMGrammar
import TLLMTokenizer

/// Continuous batching over a pipeline (docs/server.md): requests join the running batch at the
/// next step, decode rows first, prompts prefilled in chunks within a token budget.
///
/// Steps in flight: the running requests are split into lanes, one per step the pipeline can
/// compute at once (a chain of workers: one per stage). Each lane runs its own sequence of
/// steps, so while the last worker computes lane A's step the first computes lane B's. A
/// request belongs to one lane and is in at most one step, so its tokens come in order.
public actor Scheduler {
    /// Limits of the batching policy.
    public struct Configuration: Sendable {
        /// Rows (tokens) in one forward step at most; long prompts are prefilled in chunks of this.
        public var maxBatchTokens: Int
        /// Sequences in the running batch at most.
        public var maxBatchSize: Int
        /// Requests waiting to join the batch at most; beyond that `submit` throws `queueFull`.
        public var maxQueue: Int
        /// Prompt plus completion tokens at most (the context the server serves).
        public var maxModelLength: Int
        /// Log each step's shape and time (`--is_debug`).
        public var logSteps: Bool
        /// Steps over disjoint requests at once at most; 0: as many as the pipeline has stages
        /// (`Pipeline.concurrentSteps`); 1: one step at a time.
        public var maxStepsInFlight: Int

        public init(
            maxBatchTokens: Int = 512, maxBatchSize: Int = 32, maxQueue: Int = 256, maxModelLength: Int,
            logSteps: Bool = false, maxStepsInFlight: Int = 0
        ) {
            precondition(maxBatchTokens >= 1 && maxBatchSize >= 1 && maxQueue >= 0 && maxModelLength >= 2)
            precondition(maxStepsInFlight >= 0)
            self.maxBatchTokens = maxBatchTokens
            self.maxBatchSize = min(maxBatchSize, maxBatchTokens)
            self.maxQueue = maxQueue
            self.maxModelLength = maxModelLength
            self.logSteps = logSteps
            self.maxStepsInFlight = maxStepsInFlight
        }
    }

    /// A snapshot for health and metrics.
    public struct Load: Sendable, Equatable {
        public var waiting: Int
        public var running: Int
    }

    /// One request in flight. A class confined to the actor: steps update it in place.
    private final class RequestState {
        let request: GenerationRequest
        let continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        var sampler: Sampler
        /// Where the output stands in the request's grammar, if it has one.
        var matcher: GrammarMatcher?
        var text: TextStream
        let submitted: ContinuousClock.Instant
        let deadline: ContinuousClock.Instant?
        /// The prompt, then every sampled token: what the KV cache must hold before the next sample.
        var context: [Int32]
        /// Positions of `context` already in the KV cache.
        var prefilled = 0
        var generated = 0
        /// Prompt positions the prefix cache supplied at first admission.
        var cachedPromptTokens: Int?
        var firstToken: ContinuousClock.Instant?
        var lastToken: ContinuousClock.Instant?
        var aborted = false
        /// Aborted by `abort(_:)` (its client left), as opposed to by the shutdown.
        var abortedByClient = false
        /// The lane whose steps this request joins.
        var lane = 0
        /// The step computing it, if any: it must not join another or leave the batch meanwhile.
        var step: Int?
        var inFlight: Bool { step != nil }

        init(
            _ request: GenerationRequest, vocabularySize: Int, tokenizer: Tokenizer,
            grammarVocabulary: TokenVocabulary?,
            continuation: AsyncThrowingStream<GenerationEvent, any Error>.Continuation
        ) {
            self.request = request
            self.continuation = continuation
            if let grammar = request.grammar, let grammarVocabulary {
                matcher = GrammarMatcher(
                    grammar: grammar, vocabulary: grammarVocabulary, endTokens: request.stopTokenIDs)
            }
            sampler = Sampler(
                parameters: request.sampling, vocabularySize: vocabularySize, prompt: request.promptTokens)
            text = TextStream(
                tokenizer: tokenizer, stopStrings: request.stopStrings, keeping: request.keptSpecialTokenIDs)
            context = request.promptTokens
            let now = ContinuousClock.now
            submitted = now
            deadline = request.timeout.map { now + $0 }
        }

        /// Decoding: only the last sampled token is missing from the cache.
        var isDecoding: Bool { generated > 0 && context.count - prefilled == 1 }
    }

    public let configuration: Configuration
    private let head: HeadActor
    private nonisolated let pipeline: any Pipeline
    private let tokenizer: Tokenizer
    private let logger: Logger
    private var waiting: [RequestState] = []
    private var running: [RequestState] = []
    private var stopped = false
    private var loop: Task<Void, Never>?
    private var wakeUp: CheckedContinuation<Void, Never>?
    /// A wake-up that came while the loop was not parked (it was awaiting in `admit`, say): the
    /// loop looks again instead of parking.
    private var wakePending = false
    private var nextStepID = 0
    /// Lanes as of the last look at the pipeline, and those with a step in flight.
    private var lanes = 1
    private var busyLanes: Set<Int> = []
    private var steps = 0
    private let metrics = SchedulerMetrics()
    /// Requests preempted so far because the KV cache ran out (also a metric).
    public private(set) var preemptions = 0
    /// Logits of a step, where samplers may rewrite them in place (kept between steps).
    private let logitsScratch = ScratchBuffer()
    /// The vocabulary as grammars see it, built on the first request that has a grammar.
    private var grammarVocabularyStorage: TokenVocabulary?
    private var grammarVocabulary: TokenVocabulary {
        if let grammarVocabularyStorage { return grammarVocabularyStorage }
        let vocabulary = Self.grammarVocabulary(tokenizer, vocabularySize: head.vocabularySize)
        grammarVocabularyStorage = vocabulary
        return vocabulary
    }

    /// The bytes each token adds to the output; special tokens (which the text leaves out) and
    /// ids past the tokenizer's (padding rows of the embedding) are never allowed by a grammar.
    static func grammarVocabulary(_ tokenizer: Tokenizer, vocabularySize: Int) -> TokenVocabulary {
        TokenVocabulary(
            tokenBytes: (0..<vocabularySize).map { index in
                let id = Int32(index)
                guard index < tokenizer.vocabularySize, !tokenizer.isSpecial(id) else { return nil }
                return tokenizer.tokenBytes(id)
            })
    }

    /// A scheduler that embeds and samples with `head` and runs the layers through `pipeline`.
    public init(
        head: HeadActor, pipeline: any Pipeline, tokenizer: Tokenizer, configuration: Configuration,
        logger: Logger = Logger(label: "tllm.scheduler")
    ) {
        self.head = head
        self.pipeline = pipeline
        self.tokenizer = tokenizer
        self.configuration = configuration
        self.logger = logger
    }

    /// Queues a request. Its events arrive on the returned stream; dropping the stream (or
    /// cancelling the task that iterates it) aborts the request at the next step.
    public func submit(_ request: GenerationRequest) throws -> AsyncThrowingStream<GenerationEvent, any Error> {
        guard !stopped else { throw SchedulerError.shuttingDown }
        guard !request.promptTokens.isEmpty else { throw SchedulerError.invalidRequest("the prompt is empty") }
        guard request.maxTokens >= 1 else { throw SchedulerError.invalidRequest("max_tokens must be at least 1") }
        // Compared as a difference: maxTokens comes from the network and may be near Int.max.
        guard request.maxTokens <= maxModelLength - request.promptTokens.count else {
            throw SchedulerError.contextExceeded(
                promptTokens: request.promptTokens.count, maxTokens: request.maxTokens, limit: maxModelLength)
        }
        // Waiting requests that free batch slots will take at once do not count as queued.
        guard waiting.count - max(0, configuration.maxBatchSize - running.count) < configuration.maxQueue else {
            throw SchedulerError.queueFull(capacity: configuration.maxQueue)
        }
        let (stream, continuation) = AsyncThrowingStream<GenerationEvent, any Error>.makeStream()
        let id = request.id
        continuation.onTermination = { [weak self] termination in
            guard case .cancelled = termination, let self else { return }
            Task { await self.abort(id) }
        }
        waiting.append(
            RequestState(
                request, vocabularySize: head.vocabularySize, tokenizer: tokenizer,
                grammarVocabulary: request.grammar == nil ? nil : grammarVocabulary, continuation: continuation))
        startLoopIfNeeded()
        return stream
    }

    /// Marks a request aborted: it leaves the batch before its next step and frees its KV cache.
    public func abort(_ id: String) {
        for request in waiting + running where request.request.id == id {
            request.aborted = true
            request.abortedByClient = true
        }
        wake()
    }

    private func wake() {
        guard let wakeUp else {
            wakePending = true
            return
        }
        wakeUp.resume()
        self.wakeUp = nil
    }

    /// The longest context a request may have: the configured one, or less when the whole KV
    /// cache holds fewer positions (a request alone must always fit).
    public nonisolated var maxModelLength: Int {
        guard let cache = pipeline.kvCache else { return configuration.maxModelLength }
        return min(configuration.maxModelLength, cache.pageCount * cache.pageTokens)
    }

    /// Current queue lengths.
    public var load: Load { Load(waiting: waiting.count, running: running.count) }

    /// Ends every request (reason `abort`) and stops the loop.
    public func shutdown() async {
        stopped = true
        for request in waiting + running { request.aborted = true }
        wake()
        await loop?.value
        loop = nil
    }

    // MARK: The loop

    private func startLoopIfNeeded() {
        wake()
        guard loop == nil else { return }
        loop = Task { await self.run() }
    }

    /// Admits, launches a step on every idle lane that has requests, and sleeps until a step
    /// ends or a request arrives or leaves.
    private func run() async {
        while true {
            await dropFinished()
            if stopped && waiting.isEmpty && running.isEmpty && busyLanes.isEmpty { return }
            await updateLanes()
            await admit()
            if !launchSteps() {
                if wakePending {
                    wakePending = false
                    continue
                }
                await withCheckedContinuation { wakeUp = $0 }
            }
        }
    }

    /// Follows the pipeline's depth (routes change); idle requests of a lane that no longer
    /// exists move to the emptiest one.
    private func updateLanes() async {
        let depth = max(1, await pipeline.concurrentSteps)
        let configured = configuration.maxStepsInFlight
        lanes = configured > 0 ? min(configured, depth) : depth
        for request in running where request.lane >= lanes && !request.inFlight { request.lane = emptiestLane() }
    }

    private func emptiestLane() -> Int {
        var counts = [Int](repeating: 0, count: lanes)
        for request in running where request.lane < lanes { counts[request.lane] += 1 }
        return counts.indices.min { counts[$0] < counts[$1] } ?? 0
    }

    /// Starts a step on each lane without one (at most `lanes` in flight); false if none started.
    private func launchSteps() -> Bool {
        var launched = false
        for lane in 0..<lanes where !busyLanes.contains(lane) && busyLanes.count < lanes {
            let group = running.filter { $0.lane == lane && !$0.inFlight && !$0.aborted }
            guard !group.isEmpty else { continue }
            busyLanes.insert(lane)
            nextStepID += 1
            let id = nextStepID
            for request in group { request.step = id }
            launched = true
            Task { await self.runStep(id, group, lane: lane) }
        }
        return launched
    }

    private func runStep(_ id: Int, _ group: [RequestState], lane: Int) async {
        await step(id, lane: lane)
        // Not a request preempted out of this step and since launched in another.
        for request in group where request.step == id { request.step = nil }
        busyLanes.remove(lane)
        wake()
    }

    /// Removes aborted and timed-out requests that are not in a step, frees their caches, then
    /// ends their streams (so a client that sees the end can rely on the memory being free).
    private func dropFinished() async {
        let now = ContinuousClock.now
        func isDone(_ request: RequestState) -> Bool {
            !request.inFlight && (request.aborted || request.deadline.map { now >= $0 } == true)
        }
        let dropped = waiting.filter(isDone) + running.filter(isDone)
        guard !dropped.isEmpty else { return }
        let droppedRunning = running.filter(isDone).map(\.request.id)
        waiting.removeAll(where: isDone)
        running.removeAll(where: isDone)
        if !droppedRunning.isEmpty { await pipeline.release(droppedRunning) }
        for request in dropped {
            if request.aborted && stopped && !request.abortedByClient {
                // Ended by the server's shutdown, not by its client: an error (503, or an error
                // event in a stream), never a short answer that looks complete.
                request.continuation.finish(throwing: SchedulerError.shuttingDown)
                metrics.finished(outcome: "shutdown")
                logger.info("request \(request.request.id) ended by the shutdown after \(request.generated) tokens")
            } else {
                finish(request, reason: request.aborted ? .abort : .timeout)
            }
        }
    }

    /// Moves waiting requests into the batch, in order, while the batch has room and (with a
    /// local KV cache) their pages fit beside the running ones'; a cached prefix of their
    /// context is reused.
    private func admit() async {
        while running.count < configuration.maxBatchSize, let next = waiting.first {
            if let cache = pipeline.kvCache {
                guard
                    let reused = await cache.admit(
                        next.request.id, tokens: next.context, headroom: running.count)
                else { return }  // waits for pages; later requests keep their turn
                next.prefilled = reused
                if next.cachedPromptTokens == nil {
                    next.cachedPromptTokens = min(reused, next.request.promptTokens.count)
                }
                if cache.prefixReuse {
                    metrics.prefixLookups.increment()
                    if reused > 0 { metrics.prefixHits.increment() }
                    metrics.prefixHitTokens.increment(by: Int64(reused))
                }
                if reused > 0 {
                    logger.debug("request \(next.request.id): \(reused) tokens reused from the prefix cache")
                }
            }
            next.lane = emptiestLane()
            running.append(waiting.removeFirst())
        }
    }

    /// Puts the most recently admitted request that is not in another lane's step back at the
    /// head of the queue, its pages released (into the prefix cache, where re-admission usually
    /// finds them again).
    private func preemptYoungest(sparing step: Int) async {
        guard let index = running.lastIndex(where: { !$0.inFlight || $0.step == step }) else { return }
        let victim = running.remove(at: index)
        victim.step = nil
        await pipeline.release([victim.request.id])
        victim.prefilled = 0
        waiting.insert(victim, at: 0)
        preemptions += 1
        metrics.preemptions.increment()
        logger.info(
            "request \(victim.request.id) preempted: the KV cache is full (\(running.count) requests keep running)")
    }

    /// One forward over a lane's requests: decode rows first, then prefill chunks. Each request
    /// feeds the part of its context the cache lacks and samples once it has fed all of it.
    private func step(_ id: Int, lane: Int) async {
        let started = ContinuousClock.now
        var tokens: [Int32] = []
        var slices: [SequenceSlice] = []
        // Requests that get a token this step, with the index of their sequence in the batch.
        var sampled: [(request: RequestState, sequence: Int)] = []
        var fed: [(request: RequestState, count: Int)] = []
        var lease: KVLease?
        var batch: [RequestState] = []
        while true {
            tokens = []
            slices = []
            sampled = []
            fed = []
            batch = running.filter { $0.step == id }
            guard !batch.isEmpty else { return }  // all preempted: their lane starts again later
            var budget = configuration.maxBatchTokens
            for request in batch.filter(\.isDecoding) + batch.filter({ !$0.isDecoding }) where budget > 0 {
                let remaining = request.context.count - request.prefilled
                var count = min(budget, remaining)
                // (With a budget of 3 rows or more the first prompt of a step always gets a piece.)
                if count < remaining && remaining > 1 && configuration.maxBatchTokens >= 3 {
                    // A worker of the original protocol takes a one-row piece for a generated
                    // token (its kernel differs from a prompt's, docs/compute.md "Batch
                    // invariance"): never cut a prompt into a one-row piece or leave one behind.
                    if remaining - count == 1 { count -= 1 }
                    if count < 2 { continue }
                }
                tokens.append(contentsOf: request.context[request.prefilled..<(request.prefilled + count)])
                let prompt = request.request.promptTokens.count
                slices.append(
                    SequenceSlice(
                        id: request.request.id, rows: count,
                        promptRows: max(0, min(count, prompt - request.prefilled))))
                fed.append((request, count))
                if request.prefilled + count == request.context.count { sampled.append((request, slices.count - 1)) }
                budget -= count
            }
            guard let cache = pipeline.kvCache else { break }
            do {
                lease = try await cache.lease(slices, tokens: tokens)
                break
            } catch KVCacheError.exhausted where running.count > 1 {
                await preemptYoungest(sparing: id)
            } catch {
                await fail(batch, error: error)
                return
            }
        }

        let width = head.hiddenSize
        var logits: [Float] = []
        do {
            let embedded = try await head.embed(tokens)
            let last = try await pipeline.forward(
                PipelineStep(hidden: embedded, sequences: slices, tokens: tokens, lease: lease))
            if !sampled.isEmpty {
                var rows = [Float](repeating: 0, count: sampled.count * width)
                for (index, entry) in sampled.enumerated() {
                    rows[(index * width)..<((index + 1) * width)] =
                        last[(entry.sequence * width)..<((entry.sequence + 1) * width)]
                }
                logits = await head.logits(rows, rows: sampled.count)
            }
        } catch {
            let participants = Set(slices.map(\.id))
            await fail(batch.filter { participants.contains($0.request.id) }, error: error)
            return
        }
        for (request, count) in fed { request.prefilled += count }

        var finished: [(request: RequestState, reason: FinishReason, flush: Bool)] = []
        let vocabulary = head.vocabularySize
        let scratch = logitsScratch.holding(logits)
        for (index, entry) in sampled.enumerated() where !entry.request.aborted {
            let row = UnsafeMutableBufferPointer(rebasing: scratch[(index * vocabulary)..<((index + 1) * vocabulary)])
            if let (reason, flush) = sample(entry.request, row: row) {
                finished.append((entry.request, reason, flush))
            }
        }
        if !finished.isEmpty {
            let done = Set(finished.map(\.request.request.id))
            running.removeAll { done.contains($0.request.id) }
            await pipeline.release(Array(done))
            for (request, reason, flush) in finished { finish(request, reason: reason, flush: flush) }
        }
        steps += 1
        let elapsed = ContinuousClock.now - started
        metrics.stepDuration.record(duration: elapsed)
        metrics.batchSequences.record(slices.count)
        metrics.batchTokens.record(tokens.count)
        metrics.waiting.record(waiting.count)
        metrics.running.record(running.count)
        if configuration.logSteps {
            logger.info(
                "step \(steps) (lane \(lane) of \(lanes)): \(tokens.count) rows, \(slices.count) sequences (\(fed.filter { $0.count == 1 }.count) of one row), \(elapsed.milliseconds) ms"
            )
        }
    }

    /// Chooses a request's next token from its logits `row` (rewritten in place): the grammar's
    /// mask, then the sampler; reports its log-probability when asked, then emits it.
    private func sample(_ request: RequestState, row: UnsafeMutableBufferPointer<Float>) -> (
        reason: FinishReason, flush: Bool
    )? {
        // Log-probabilities are the model's: taken before the mask and the sampler rewrite the row.
        let raw = request.request.logprobs != nil ? Array(row) : nil
        if request.matcher != nil { request.matcher?.mask(row) }
        let token = request.sampler.sample(row)
        if let top = request.request.logprobs, let raw, !request.request.stopTokenIDs.contains(token) {
            let logprob = raw.withUnsafeBufferPointer { TokenLogprob(token: token, logits: $0, top: top) }
            request.continuation.yield(.logprob(logprob))
        }
        if request.matcher != nil, request.matcher?.accept(token) == false {
            // Only when the mask left nothing (a grammar the vocabulary cannot spell, with no end
            // token to fall back on): end the output here rather than leave the grammar.
            logger.warning("request \(request.request.id): no token fits its grammar; ending it")
            return (.stop, true)
        }
        if let end = emit(request, token: token) { return end }
        if request.matcher?.mustEnd == true { return (.stop, true) }
        return nil
    }

    /// Takes a sampled token and streams its text; returns why the request ends, if it does (the
    /// caller frees its cache, then calls `finish`). `flush` is false when a stop string already cut the text.
    private func emit(_ request: RequestState, token: Int32) -> (reason: FinishReason, flush: Bool)? {
        let now = ContinuousClock.now
        if let last = request.lastToken {
            metrics.interTokenLatency.record(duration: now - last)
        } else {
            request.firstToken = now
            metrics.timeToFirstToken.record(duration: now - request.submitted)
        }
        request.lastToken = now
        request.sampler.accept(token)
        request.generated += 1
        request.context.append(token)
        if request.request.stopTokenIDs.contains(token) { return (.stop, true) }
        let (text, stopped) = request.text.append(token)
        if !text.isEmpty { request.continuation.yield(.text(text)) }
        if stopped { return (.stop, false) }
        if request.generated >= request.request.maxTokens { return (.length, true) }
        return nil
    }

    /// Ends a request's stream with its summary and logs it.
    private func finish(_ request: RequestState, reason: FinishReason, flush: Bool = true) {
        var reason = reason
        if flush && reason != .abort {
            let (text, stopped) = request.text.finish()
            if !text.isEmpty { request.continuation.yield(.text(text)) }
            if stopped { reason = .stop }
        }
        let now = ContinuousClock.now
        let info = FinishInfo(
            reason: reason, promptTokens: request.request.promptTokens.count,
            cachedPromptTokens: request.cachedPromptTokens ?? 0, completionTokens: request.generated,
            timeToFirstToken: request.firstToken.map { $0 - request.submitted },
            decodeTime: request.firstToken.map { now - $0 } ?? .zero)
        request.continuation.yield(.finished(info))
        metrics.finished(outcome: reason.rawValue)
        metrics.promptTokens.increment(by: Int64(info.promptTokens))
        metrics.completionTokens.increment(by: Int64(info.completionTokens))
        request.continuation.finish()
        let ttft = info.timeToFirstToken.map { "\($0.milliseconds) ms" } ?? "-"
        let rate =
            info.completionTokens > 1 ? Double(info.completionTokens - 1) / max(info.decodeTime.seconds, 1e-9) : 0
        logger.info(
            "request \(request.request.id) finished: \(reason.rawValue), prompt \(info.promptTokens) tokens, completion \(info.completionTokens) tokens, TTFT \(ttft), \(String(format: "%.1f", rate)) tok/s"
        )
    }

    /// A step failed: its requests end with the error, their caches are freed, the rest go on.
    private func fail(_ batch: [RequestState], error: any Error) async {
        logger.error("step failed for \(batch.count) requests: \(error)")
        let ids = Set(batch.map(\.request.id))
        running.removeAll { ids.contains($0.request.id) }
        await pipeline.release(Array(ids))
        for request in batch {
            metrics.finished(outcome: "error")
            request.continuation.finish(throwing: SchedulerError.computeFailed("\(error)"))
        }
    }
}

/// A growable float buffer owned by one actor, reused from step to step.
private final class ScratchBuffer {
    private var storage = UnsafeMutableBufferPointer<Float>.allocate(capacity: 0)

    /// The buffer with `values` copied in (valid until the next call).
    func holding(_ values: [Float]) -> UnsafeMutableBufferPointer<Float> {
        if storage.count < values.count {
            storage.deallocate()
            storage = .allocate(capacity: values.count)
        }
        _ = storage.update(fromContentsOf: values)
        return UnsafeMutableBufferPointer(rebasing: storage[..<values.count])
    }

    deinit { storage.deallocate() }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (whole, fraction) = components
        return Double(whole) + Double(fraction) / 1e18
    }

    /// Whole milliseconds, rounded.
    var milliseconds: Int { Int((seconds * 1000).rounded()) }
}
