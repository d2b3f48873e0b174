import Foundation
import NIOCore
import NIOPosix

/// Finds which of a worker's addresses the master can reach.
public protocol ReachabilityProbe: Sendable {
    /// The reachable `host:port` with the lowest connect delay (IPv6 in brackets), or nil.
    func fastest(hosts: [String], port: Int) async -> String?
}

/// TCP connects to each host (3 tries, 3 s timeout each, as the original) and keeps the fastest.
public struct TCPReachabilityProbe: ReachabilityProbe {
    public var attempts = 3
    public var timeout: TimeAmount = .seconds(3)

    public init() {}

    public func fastest(hosts: [String], port: Int) async -> String? {
        await withTaskGroup(of: (String, Duration)?.self) { group in
            for host in hosts {
                group.addTask { await delay(host: host, port: port).map { (host, $0) } }
            }
            var best: (String, Duration)?
            for await result in group {
                if let result, best == nil || result.1 < best!.1 { best = result }
            }
            return best.map { host, _ in
                let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
                return bare.contains(":") ? "[\(bare)]:\(port)" : "\(bare):\(port)"
            }
        }
    }

    private func delay(host: String, port: Int) async -> Duration? {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        for _ in 0..<attempts {
            let start = ContinuousClock.now
            do {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(timeout)
                    .connect(host: bare, port: port).get()
                let elapsed = ContinuousClock.now - start
                try? await channel.close()
                return elapsed
            } catch {
                continue
            }
        }
        return nil
    }
}
