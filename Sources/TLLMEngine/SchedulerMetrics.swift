import Metrics

/// What the scheduler reports through swift-metrics (served as Prometheus text at `/metrics` by
/// the server; a no-op until a metrics backend is bootstrapped). Names and units in docs/server.md.
struct SchedulerMetrics {
    private let requests: [String: Counter]
    let promptTokens = Counter(label: "tllm_prompt_tokens_total")
    let completionTokens = Counter(label: "tllm_completion_tokens_total")
    let timeToFirstToken = Timer(label: "tllm_time_to_first_token_seconds")
    let interTokenLatency = Timer(label: "tllm_inter_token_latency_seconds")
    let stepDuration = Timer(label: "tllm_step_duration_seconds")
    let batchSequences = Recorder(label: "tllm_batch_sequences", aggregate: true)
    let batchTokens = Recorder(label: "tllm_batch_tokens", aggregate: true)
    let waiting = Gauge(label: "tllm_requests_waiting")
    let running = Gauge(label: "tllm_requests_running")
    let prefixLookups = Counter(label: "tllm_prefix_cache_lookups_total")
    let prefixHits = Counter(label: "tllm_prefix_cache_hits_total")
    let prefixHitTokens = Counter(label: "tllm_prefix_cache_hit_tokens_total")
    let preemptions = Counter(label: "tllm_preemptions_total")

    /// Outcomes of a request: the finish reasons, and "error" for a failed step.
    static let outcomes = FinishReason.allCases.map(\.rawValue) + ["error"]

    init() {
        requests = Dictionary(
            uniqueKeysWithValues: Self.outcomes.map {
                ($0, Counter(label: "tllm_requests_total", dimensions: [("outcome", $0)]))
            })
    }

    func finished(outcome: String) { requests[outcome]?.increment() }
}
