import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import TLLMCluster

@Suite struct LayerPlanTests {
    @Test(arguments: [(30, 1), (30, 2), (30, 4), (16, 3), (5, 8), (32, 8)])
    func rangesTileEveryLayerEvenly(_ total: Int, _ workers: Int) {
        let plan = LayerPlan(totalLayers: total, workers: workers)
        #expect(plan.ranges.count == min(total, workers))
        #expect(plan.ranges.first?.lowerBound == 0 && plan.ranges.last?.upperBound == total)
        #expect(zip(plan.ranges, plan.ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        let sizes = plan.ranges.map(\.count)
        #expect(sizes.max()! - sizes.min()! <= 1)
    }

    @Test func weightedRangesFollowTheWeights() {
        #expect(LayerPlan(totalLayers: 30, weights: [1, 3]).ranges == [0..<8, 8..<30])
        #expect(LayerPlan(totalLayers: 30, weights: [16, 8, 8]).ranges == [0..<15, 15..<23, 23..<30])
        // Every worker gets a layer, however small its share.
        #expect(LayerPlan(totalLayers: 4, weights: [1000, 1, 1]).ranges == [0..<2, 2..<3, 3..<4])
        // Equal weights are the even split.
        #expect(LayerPlan(totalLayers: 30, weights: [2, 2, 2, 2]) == LayerPlan(totalLayers: 30, workers: 4))
        #expect(LayerPlan(totalLayers: 2, weights: [1, 1, 1]).ranges == [0..<1, 1..<2])
    }

    @Test func defaultWorkersFollowTheModelSize() {
        #expect(LayerPlan.defaultWorkers(modelName: "Llama-3.2-1B-Instruct") == 1)
        #expect(LayerPlan.defaultWorkers(modelName: "mlx-community/Meta-Llama-3.1-8B-Instruct-4bit") == 2)
        #expect(LayerPlan.defaultWorkers(modelName: "Qwen2.5-14B-Instruct") == 4)
        #expect(LayerPlan.defaultWorkers(modelName: "Qwen2-72B") == 8)
        #expect(LayerPlan.defaultWorkers(modelName: "Llama-3.1-405B") == 8)
        #expect(LayerPlan.defaultWorkers(modelName: "SmolLM2-135M-Instruct.Q4_1.gguf") == 1)
        #expect(LayerPlan.defaultWorkers(modelName: "model.gguf") == 1)
        #expect(LayerPlan.sizeLabel(in: "Qwen2-0.5B-Instruct") == 0.5)
    }
}

/// Registration over real TCP reachability checks against listeners on this machine.
@Suite struct WorkerRegistryTests {
    /// A TCP listener standing in for a worker's gRPC port.
    static func listener(host: String = "127.0.0.1") async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: 0).get()
    }

    /// A port nothing listens on.
    static func closedPort() async throws -> Int {
        let channel = try await listener()
        let port = channel.localAddress!.port!
        try await channel.close()
        return port
    }

    @Test func firstRegistrationsTakeFreeRangesThenAnyRange() async throws {
        let worker = try await Self.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "/models/m.gguf")
        let a = await registry.register(.init(clientID: "a", hosts: ["127.0.0.1"], port: port))
        let b = await registry.register(.init(clientID: "b", hosts: ["127.0.0.1"], port: port))
        #expect(a == .init(ppRank: 0, startIndex: 0, endIndex: 15, message: "success", repoPath: "/models/m.gguf"))
        #expect(b == .init(ppRank: 1, startIndex: 15, endIndex: 30, message: "success", repoPath: "/models/m.gguf"))
        let c = await registry.register(.init(clientID: "c", hosts: ["127.0.0.1"], port: port))
        #expect([0, 1].contains(c.ppRank) && c.message == "success")
        // A worker registering again keeps its range rather than taking a second one.
        let again = await registry.register(.init(clientID: "a", hosts: ["127.0.0.1"], port: port))
        #expect(again.ppRank == 0)
        try await worker.close()
    }

    @Test func unreachableWorkersAreTurnedAway() async throws {
        var probe = TCPReachabilityProbe()
        probe.timeout = .milliseconds(500)
        let registry = WorkerRegistry(totalLayers: 30, workers: 1, modelPath: "m", prober: probe)
        let answer = await registry.register(
            .init(clientID: "x", hosts: ["127.0.0.1"], port: try await Self.closedPort()))
        #expect(answer == .init(ppRank: -1, startIndex: -1, endIndex: -1, message: "ping failed", repoPath: nil))
        #expect(await registry.registered.isEmpty)
    }

    @Test func theReachableAddressIsKeptWithIPv6InBrackets() async throws {
        let worker = try await Self.listener(host: "::1")
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 4, workers: 1, modelPath: "m")
        _ = await registry.register(.init(clientID: "v6", hosts: ["192.0.2.1", "::1"], port: port))
        #expect(await registry.registered.map(\.address) == ["[::1]:\(port)"])
        try await worker.close()
    }

    @Test func theRouteIsCompleteOnceEveryRangeIsInitialised() async throws {
        let worker = try await Self.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "m")
        _ = await registry.register(.init(clientID: "a", hosts: ["127.0.0.1"], port: port))
        #expect(await registry.route == nil)
        // A worker that survived a master restart states its range; its layers are loaded (the
        // original sends no /init_model after such a registration).
        let restored = await registry.register(
            .init(clientID: "b", hosts: ["127.0.0.1"], port: port, ppRank: 1, startIndex: 15, endIndex: 30))
        #expect(restored.startIndex == 15 && restored.endIndex == 30 && restored.message == "success")
        #expect(await registry.route == nil, "a has not loaded yet")
        #expect(await !registry.initialized(clientID: "nobody", ppRank: 0, layers: 0..<15))
        #expect(await registry.initialized(clientID: "a", ppRank: 0, layers: 0..<15))
        #expect(await registry.route?.map(\.clientID) == ["a", "b"])
        await registry.unregister(clientID: "a")
        #expect(await registry.route == nil)
        try await worker.close()
    }

    /// A worker that joins for layers a serving worker holds is a standby, however its id sorts:
    /// a route change moves every running request, so it happens only when a stage is lost.
    @Test func aNewcomerNeverDisplacesAServingWorker() async throws {
        let worker = try await Self.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "m")
        for (id, range) in [("m", 0..<15), ("n", 15..<30)] {
            _ = await registry.register(
                .init(
                    clientID: id, hosts: ["127.0.0.1"], port: port, ppRank: range.lowerBound / 15,
                    startIndex: range.lowerBound, endIndex: range.upperBound))
        }
        #expect(await registry.route?.map(\.clientID) == ["m", "n"])
        // "a" sorts before "m" and states the same range (a rogue, or a standby finishing its load).
        _ = await registry.register(
            .init(clientID: "a", hosts: ["127.0.0.1"], port: port, ppRank: 0, startIndex: 0, endIndex: 15))
        #expect(await registry.initialized(clientID: "a", ppRank: 0, layers: 0..<15))
        #expect(await registry.route?.map(\.clientID) == ["m", "n"])
        // Re-registering (as standbys do every 30 s) keeps each worker's place.
        _ = await registry.register(
            .init(clientID: "m", hosts: ["127.0.0.1"], port: port, ppRank: 0, startIndex: 0, endIndex: 15))
        #expect(await registry.route?.map(\.clientID) == ["m", "n"])
        // The standby takes over when the serving worker is lost.
        await registry.unregister(clientID: "m")
        #expect(await registry.route?.map(\.clientID) == ["a", "n"])
        try await worker.close()
    }
}

/// Planning by the memory workers report (over real TCP reachability checks).
@Suite struct MemoryWeightedPlanTests {
    static let gib = 1 << 30

    @Test func workersThatAllReportMemoryGetProportionalRanges() async throws {
        let worker = try await WorkerRegistryTests.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "m", registrationWindow: .seconds(60))
        // The first is held until the second registers; both are answered then.
        async let small = registry.register(
            .init(clientID: "small", hosts: ["127.0.0.1"], port: port, memory: Self.gib))
        while await registry.heldCount == 0 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(await registry.registered.isEmpty, "nobody is answered before the plan is fixed")
        let large = await registry.register(
            .init(clientID: "large", hosts: ["127.0.0.1"], port: port, memory: 3 * Self.gib))
        #expect(await small == .init(ppRank: 0, startIndex: 0, endIndex: 8, message: "success", repoPath: "m"))
        #expect(large == .init(ppRank: 1, startIndex: 8, endIndex: 30, message: "success", repoPath: "m"))
        #expect(await registry.plan.ranges == [0..<8, 8..<30])
        // The plan stays: a replacement for a lost worker takes the free range.
        await registry.unregister(clientID: "small")
        let replacement = await registry.register(
            .init(clientID: "new", hosts: ["127.0.0.1"], port: port, memory: 64 * Self.gib))
        #expect(replacement.startIndex == 0 && replacement.endIndex == 8)
        try await worker.close()
    }

    @Test func theWindowEndingFixesTheEvenSplit() async throws {
        let worker = try await WorkerRegistryTests.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(
            totalLayers: 30, workers: 2, modelPath: "m", registrationWindow: .milliseconds(300))
        let started = ContinuousClock.now
        let only = await registry.register(.init(clientID: "a", hosts: ["127.0.0.1"], port: port, memory: Self.gib))
        #expect(ContinuousClock.now - started >= .milliseconds(300))
        #expect(only.startIndex == 0 && only.endIndex == 15)
        #expect(await registry.planFixed)
        try await worker.close()
    }

    @Test func aWorkerWithoutMemoryFixesTheEvenSplitAtOnce() async throws {
        let worker = try await WorkerRegistryTests.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "m", registrationWindow: .seconds(60))
        async let held = registry.register(.init(clientID: "swift", hosts: ["127.0.0.1"], port: port, memory: Self.gib))
        while await registry.heldCount == 0 { try await Task.sleep(for: .milliseconds(20)) }
        // The original's workers send no memory: the even plan is fixed, held workers first.
        let python = await registry.register(.init(clientID: "python", hosts: ["127.0.0.1"], port: port))
        #expect(await held == .init(ppRank: 0, startIndex: 0, endIndex: 15, message: "success", repoPath: "m"))
        #expect(python == .init(ppRank: 1, startIndex: 15, endIndex: 30, message: "success", repoPath: "m"))
        try await worker.close()
    }

    @Test func aFreshWorkerAfterAMasterRestartFillsTheGapLeftByRestoredRanges() async throws {
        let worker = try await WorkerRegistryTests.listener()
        let port = worker.localAddress!.port!
        let registry = WorkerRegistry(totalLayers: 30, workers: 2, modelPath: "m", registrationWindow: .seconds(60))
        // A survivor of the restart kept the weighted range it had: [0, 8). The plan is fixed at
        // once (nobody waits for memory reports that could not fit it) ...
        _ = await registry.register(
            .init(clientID: "kept", hosts: ["127.0.0.1"], port: port, ppRank: 0, startIndex: 0, endIndex: 8))
        #expect(await registry.planFixed)
        // ... and a replacement takes the layers nobody holds, not the even plan's [15, 30).
        let fresh = await registry.register(
            .init(clientID: "fresh", hosts: ["127.0.0.1"], port: port, memory: Self.gib))
        #expect(fresh.startIndex == 8 && fresh.endIndex == 30)
        try await worker.close()
    }

    @Test func configEntriesCarryMemory() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tllm-config-\(UUID()).json")
        try Data(
            #"{"server": {"hostname": "m", "http_port": 8022}, "client": [{"grpc_port": 25002, "hostname": "a", "memory": "16GiB"}, {"grpc_port": 25003, "hostname": "b", "memory": 8589934592}]}"#
                .utf8
        ).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try ClientCommand.parse(["--config", file.path, "--client_idx", "0"]).memory == "16GiB")
        #expect(try ClientCommand.parse(["--config", file.path, "--client_idx", "1"]).memory == "8589934592")
        #expect(
            try ClientCommand.parse(["--config", file.path, "--client_idx", "1", "--memory", "1GiB"]).memory == "1GiB")
        #expect(throws: (any Error).self) { _ = try ClientCommand.parse(["--master_addr", "x", "--memory", "lots"]) }
    }
}

/// `tllm.client`'s flags: the original's forms, including the config file.
@Suite struct ClientOptionsTests {
    static let config = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/config.json").path

    @Test func configAndClientIndexNameTheNode() throws {
        let second = try ClientCommand.parse(["--config", Self.config, "--client_idx", "1"])
        #expect(second.grpcPort == 25003)
        #expect(second.hostname == "m3")
        #expect(second.masterAddress == "http://mac-mini:8022")
        let first = try ClientCommand.parse(["--config", Self.config, "--client_idx", "0", "--grpc_port", "9000"])
        #expect(first.grpcPort == 9000 && first.hostname == "m3pro")
        #expect(throws: (any Error).self) {
            _ = try ClientCommand.parse(["--config", Self.config, "--client_idx", "2"])
        }
    }

    @Test func theUpstreamReadmeFormTakesTheMasterFromHostname() throws {
        let options = try ClientCommand.parse(["--hostname", "http://192.168.1.10:8022"])
        #expect(options.masterAddress == "http://192.168.1.10:8022")
        #expect(options.hostname == nil)
        let explicit = try ClientCommand.parse([
            "--master_addr", "http://10.0.0.1:8022", "--grpc_port", "25002", "--hostname", "10.0.0.7", "--is_debug",
        ])
        #expect(explicit.masterAddress == "http://10.0.0.1:8022" && explicit.hostname == "10.0.0.7")
        #expect(throws: (any Error).self) { _ = try ClientCommand.parse([]) }
        #expect(throws: (any Error).self) {
            _ = try ClientCommand.parse(["--master_addr", "x", "--grpc_port", "70000"])
        }
    }

    @Test func masterAddressesAreNormalised() throws {
        #expect(try MasterConnection(address: "http://10.0.0.1:8022").baseURL.absoluteString == "http://10.0.0.1:8022")
        #expect(try MasterConnection(address: "10.0.0.1").baseURL.absoluteString == "http://10.0.0.1:8022")
        #expect(try MasterConnection(address: "[::1]:9000").baseURL.absoluteString == "http://[::1]:9000")
    }

    /// The `127.0.0.1` fallback (no usable interface) fails this: the machines that run the suite have a
    /// non-loopback IPv4 interface.
    @Test func advertisedAddressesAreIPv4NotLoopback() {
        let addresses = NetworkInterfaces.advertisedIPv4(limit: 3)
        #expect((1...3).contains(addresses.count))
        for address in addresses {
            let octets = address.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
            #expect(octets.count == 4, "\(address) is not a dotted-quad IPv4 address")
            #expect(octets.first != 127, "\(address) is a loopback address (the fallback when no interface has IPv4)")
        }
    }
}
