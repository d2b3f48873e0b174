import Foundation
import Testing

@testable import TLLMCompute
@testable import TLLMModelFiles

/// A request computes the same numbers whatever it shares a step with (docs/compute.md, "Batch
/// invariance"): its prompt alone or beside other prompts and generated rows, in one piece or
/// in chunks, and its generated rows alone or beside others give bit-identical hidden states and
/// logits. Without it, greedy output under load would depend on timing.
@Suite(.serialized) struct BatchInvarianceTests {
    static let enabled = LlamaForwardTests.enabled

    /// A request: prompt ids, then ids fed back one at a time.
    struct Sequence {
        var id: String
        var prompt: [Int32]
        var generated: [Int32]
    }

    static let a = Sequence(id: "a", prompt: (0..<37).map { Int32(100 + $0 * 7) }, generated: [412, 9, 2201, 77])
    static let b = Sequence(id: "b", prompt: (0..<70).map { Int32(300 + $0 * 11) }, generated: [5, 18000, 640])
    static let c = Sequence(id: "c", prompt: [1, 42, 4242], generated: [3000, 3001])

    /// One step: slices of several sequences (id, first position, rows, prompt rows).
    typealias Step = [(sequence: Sequence, from: Int, rows: Int)]

    /// Runs `steps` on a fresh shard and returns each sequence's logits per position, keyed by id.
    static func run(_ steps: [Step], activations: ComputeOptions.Activations) async throws -> [String: [[Float]]] {
        let model = try GGUFModel(path: LlamaForwardTests.modelPath)
        let options = ComputeOptions(activations: activations)
        let shard = try ShardActor(
            model: model, layers: 0..<model.configuration.layerCount, threads: 2, options: options)
        let head = try HeadActor(model: model, threads: 2, options: options)
        var logits: [String: [[Float]]] = [:]
        for step in steps {
            var ids: [Int32] = []
            var slices: [SequenceSlice] = []
            for (sequence, from, rows) in step {
                let all = sequence.prompt + sequence.generated
                ids += all[from..<(from + rows)]
                let promptRows = max(0, min(rows, sequence.prompt.count - from))
                slices.append(SequenceSlice(id: sequence.id, rows: rows, promptRows: promptRows))
            }
            let hidden = try await shard.forward(try await head.embed(ids), sequences: slices)
            let all = await head.logits(hidden, rows: ids.count)
            let vocabulary = head.vocabularySize
            var row = 0
            for (sequence, _, rows) in step {
                for r in row..<(row + rows) {
                    logits[sequence.id, default: []].append(Array(all[(r * vocabulary)..<((r + 1) * vocabulary)]))
                }
                row += rows
            }
        }
        return logits
    }

    /// Each sequence on its own: its prompt in one step, then one step per generated id.
    static func alone(_ sequence: Sequence) -> [Step] {
        [[(sequence, 0, sequence.prompt.count)]]
            + sequence.generated.indices.map { [(sequence, sequence.prompt.count + $0, 1)] }
    }

    @Test(
        .enabled(if: enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: [ComputeOptions.Activations.int16, .int8])
    func aRequestsNumbersDoNotDependOnItsStepMates(activations: ComputeOptions.Activations) async throws {
        var reference: [String: [[Float]]] = [:]
        for sequence in [Self.a, Self.b, Self.c] {
            reference.merge(try await Self.run(Self.alone(sequence), activations: activations)) { $1 }
        }
        let (a, b, c) = (Self.a, Self.b, Self.c)
        let pa = a.prompt.count
        let pb = b.prompt.count
        let pc = c.prompt.count
        // Together: prompts side by side (107 rows, past every row-count threshold), prompts
        // chunked unevenly (including one-row pieces) beside generated rows of others.
        let mixed: [Step] = [
            [(a, 0, pa), (b, 0, pb), (c, 0, pc)],
            [(a, pa, 1), (b, pb, 1), (c, pc, 1)],
            [(c, pc + 1, 1), (a, pa + 1, 1), (b, pb + 1, 1)],
            [(a, pa + 2, 1), (b, pb + 2, 1)],
            [(a, pa + 3, 1)],
        ]
        let chunked: [Step] = [
            [(b, 0, 5)],
            [(a, 0, 1), (b, 5, 60)],
            [(a, 1, 30), (b, 65, 5), (c, 0, 2)],
            [(b, pb, 1), (a, 31, pa - 31), (c, 2, 1)],
            [(a, pa, 1), (b, pb + 1, 1), (c, pc, 1)],
            [(c, pc + 1, 1), (b, pb + 2, 1), (a, pa + 1, 1)],
            [(a, pa + 2, 2)],  // two generated ids fed back in one step (speculative verification)
        ]
        for (name, steps) in [("mixed", mixed), ("chunked", chunked)] {
            let together = try await Self.run(steps, activations: activations)
            for sequence in [a, b, c] {
                let ours = together[sequence.id] ?? []
                let theirs = reference[sequence.id] ?? []
                #expect(ours.count == theirs.count, "\(name): \(sequence.id) has \(ours.count) rows")
                for (position, (x, y)) in zip(ours, theirs).enumerated() where x != y {
                    let worst = zip(x, y).map { abs($0 - $1) }.max() ?? 0
                    Issue.record(
                        "\(name), \(activations): \(sequence.id) position \(position) differs by up to \(worst)")
                    break
                }
            }
        }
    }
}

/// The products alone: a row's result on each kernel kind does not depend on the rows beside it.
@Suite struct LinearBatchInvarianceTests {
    @Test(
        .enabled(if: LlamaForwardTests.enabled, "default model not fetched (scripts/fetch-default-model.sh)"),
        arguments: [ComputeOptions.Activations.int16, .int8])
    func rowsDoNotDependOnTheirNeighbours(activations: ComputeOptions.Activations) throws {
        let model = try GGUFModel(path: LlamaForwardTests.modelPath)
        let pool = ComputePool(threads: 2)
        for role in [TensorRole.layer(0, .query), .layer(0, .down)] {
            let linear = try Linear(try model.tensor(role), options: ComputeOptions(activations: activations))
            var generator = SystemRandomNumberGenerator()
            let total = 110
            let x = (0..<(total * linear.inputs)).map { _ in Float.random(in: -2...2, using: &generator) }
            for kind in [Linear.RowKind.prompt, .generated] {
                func product(_ rows: Range<Int>) -> [Float] {
                    var y = [Float](repeating: 0, count: rows.count * linear.outputs)
                    x.withUnsafeBufferPointer { input in
                        linear.apply(
                            input.baseAddress! + rows.lowerBound * linear.inputs, rows: rows.count, into: &y,
                            pool: pool, kind: kind)
                    }
                    return y
                }
                let whole = product(0..<total)
                for part in [37..<107, 0..<1, 5..<6, 3..<20, 64..<110] {
                    let alone = product(part)
                    for (index, row) in part.enumerated() {
                        let a = Array(alone[(index * linear.outputs)..<((index + 1) * linear.outputs)])
                        let b = Array(whole[(row * linear.outputs)..<((row + 1) * linear.outputs)])
                        if a != b {
                            Issue.record("\(role) \(kind) \(activations): row \(row) of \(part) differs")
                            break
                        }
                    }
                }
            }
        }
    }
}
