import Foundation
import HummingbirdWebSocket
import Logging
import Metrics
import Prometheus
import TLLMCluster
import TLLMCompute

/// `WS /ws/monitor` (tllm-protocol.md §4): the cluster as the web page draws it, sent on
/// connect and after every registry change. Local mode is one "worker" holding every layer.
public struct ClusterMonitor: Sendable {
    let modelName: String
    let totalLayers: Int
    let isLocal: Bool
    let registry: WorkerRegistry
    /// Whether the cluster has a key: then every registered worker presented it.
    let clusterKeyed: Bool

    public init(modelName: String, totalLayers: Int, isLocal: Bool, registry: WorkerRegistry, clusterKeyed: Bool) {
        self.clusterKeyed = clusterKeyed
        self.modelName = modelName
        self.totalLayers = totalLayers
        self.isLocal = isLocal
        self.registry = registry
    }

    /// The spec's fields, then ours: `mode` and each registered worker.
    func snapshot() async -> JSONValue {
        var ranges: [JSONValue]
        var workers: [JSONValue] = []
        var complete = true
        var connected = 0
        if isLocal {
            ranges = [.array([.int(0), .int(totalLayers), .int(1)])]
        } else {
            let registered = await registry.registered
            complete = await registry.route != nil
            connected = registered.count
            let planned = await registry.plan.ranges
            let extra = Set(registered.map(\.layers)).subtracting(planned).sorted { $0.lowerBound < $1.lowerBound }
            ranges = (planned + extra).map { range in
                .array([
                    .int(range.lowerBound), .int(range.upperBound),
                    .int(registered.filter { $0.layers == range }.count),
                ])
            }
            workers = registered.map { worker in
                let (host, port) = Self.split(worker.address)
                return .object([
                    ("client_id", .string(worker.clientID)), ("host", .string(host)), ("port", .int(port)),
                    ("pp_rank", .int(worker.ppRank)), ("start_idx", .int(worker.layers.lowerBound)),
                    ("end_idx", .int(worker.layers.upperBound)), ("initialized", .bool(worker.initialized)),
                    ("authenticated", .bool(clusterKeyed)),
                ])
            }
        }
        return .object([
            ("model_name", .string(modelName)), ("total_layers", .int(totalLayers)), ("client_info", .array(ranges)),
            ("has_full_model", .bool(complete)), ("connected_clients", .int(connected)),
            ("mode", .string(isLocal ? "local" : "cluster")), ("workers", .array(workers)),
            ("cluster_key", .bool(clusterKeyed)),
        ])
    }

    /// Serves one monitor socket until the client leaves (or the server stops).
    func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for try await _ in inbound.messages(maxSize: 1 << 16) {}  // the page sends nothing we need
            }
            group.addTask {
                for await _ in await registry.changes() {
                    try await outbound.write(.text(await snapshot().serialized))
                }
            }
            _ = try await group.next()
            group.cancelAll()
        }
    }

    /// `host:port` (IPv6 in brackets) apart.
    static func split(_ address: String) -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return (address, 0)
        }
        let host = address[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return (host, port)
    }
}

/// `GET /metrics`: everything recorded through swift-metrics, in Prometheus text format, plus
/// the KV cache's pages read at scrape time.
public struct MetricsEndpoint: Sendable {
    let registry: PrometheusCollectorRegistry
    let cache: KVCacheManager?

    public init(registry: PrometheusCollectorRegistry, cache: KVCacheManager?) {
        self.registry = registry
        self.cache = cache
    }

    /// Makes swift-metrics record into a fresh Prometheus registry (once per process, before
    /// any metric is created).
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let latency: [Duration] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000].map {
            .milliseconds($0)
        }
        factory.durationHistogramBuckets = [
            "tllm_time_to_first_token_seconds": latency, "tllm_inter_token_latency_seconds": latency,
            "tllm_step_duration_seconds": latency,
        ]
        let sizes: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
        factory.valueHistogramBuckets = ["tllm_batch_sequences": sizes, "tllm_batch_tokens": sizes]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    func render() async -> String {
        if let cache {
            let statistics = await cache.statistics
            for (state, pages) in [
                ("used", statistics.pagesInUse), ("cached", statistics.pagesCached), ("free", statistics.pagesFree),
            ] {
                Gauge(label: "tllm_kv_cache_pages", dimensions: [("state", state)]).record(pages)
            }
            Gauge(label: "tllm_kv_cache_page_tokens").record(statistics.pageTokens)
            Gauge(label: "tllm_kv_cache_sequences").record(statistics.sequences)
            Gauge(label: "tllm_kv_cache_evicted_pages").record(statistics.evictedPages)
        }
        return registry.emitToString()
    }
}
