import Hummingbird
import NIOConcurrencyHelpers
import NIOCore

/// Tells a request handler when its client goes away, even while nothing is being written
/// (a long prefill, a non-streaming completion): the scheduler then aborts the request.
///
/// Hummingbird allows remote half-closure, so a client that closes its socket shows up as an
/// `inputClosed` event, not as a closed channel; `ClientDisconnectHandler` sits in every HTTP/1
/// connection's pipeline and turns that event (or the channel going inactive) into callbacks.
final class ClientDisconnectSignal: Sendable {
    private struct State {
        var closed = false
        var nextKey = 0
        var callbacks: [Int: @Sendable () -> Void] = [:]
    }
    private let state = NIOLockedValueBox(State())

    /// Runs `callback` once when the client has gone (at once if it already has). Returns a key
    /// for `cancel` (a keep-alive connection outlives its requests).
    @discardableResult
    func onDisconnect(_ callback: @escaping @Sendable () -> Void) -> Int {
        let (key, alreadyClosed) = state.withLockedValue { state in
            state.nextKey += 1
            if !state.closed { state.callbacks[state.nextKey] = callback }
            return (state.nextKey, state.closed)
        }
        if alreadyClosed { callback() }
        return key
    }

    /// Forgets a callback whose request has finished.
    func cancel(_ key: Int) {
        state.withLockedValue { _ = $0.callbacks.removeValue(forKey: key) }
    }

    fileprivate func fire() {
        let callbacks = state.withLockedValue { state in
            defer {
                state.closed = true
                state.callbacks = [:]
            }
            return state.closed ? [] : Array(state.callbacks.values)
        }
        for callback in callbacks { callback() }
    }
}

/// The pipeline half of `ClientDisconnectSignal`: passes everything through, fires on input close.
final class ClientDisconnectHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let signal = ClientDisconnectSignal()

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent { signal.fire() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        signal.fire()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }
}

/// The request context of the server: Hummingbird's core storage plus the connection, so that
/// handlers can watch for the client leaving.
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// The disconnect signal of this request's connection (nil when the pipeline has none).
    func disconnectSignal() async -> ClientDisconnectSignal? {
        let channel = channel
        return try? await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.handler(type: ClientDisconnectHandler.self).signal
        }.get()
    }
}
