#!/usr/bin/env python3
"""A userspace TCP proxy that adds a fixed one-way delay and can reset its connections on demand.

    tcp-delay-proxy.py --listen [HOST:]PORT --target HOST:PORT [--delay-ms MS] [--verbose]

Every connection accepted on --listen is forwarded to --target. Each chunk read from either side
is written to the other side MS milliseconds after it was read: a timestamped FIFO queue per
direction keeps the order, and reading goes on while earlier chunks wait, so the delay adds
latency without limiting bandwidth (a chunk read 1 ms after another leaves 1 ms after it). A
half-close (EOF) is delayed like data; a reset on one side resets the other side at once.

SIGUSR1 resets every connection open at that moment, on both sides (SO_LINGER 0, then close:
the peers see a TCP RST), for fault injection; the proxy keeps accepting new connections.
SIGUSR2 resets one connection instead: the first whose client sends something next (open at that
moment or opened later), before that is forwarded (so a request in flight is lost for sure); the
others are left alone. Signals add up: three SIGUSR2 reset the next three sends (a test can arm
a client's try and both retries before the first of them happens). SIGTERM / SIGINT stop the proxy (exit code 0).

stderr gets one line when it listens ("listening on ..."), one line per connection it accepts,
one line per reset (per signal), and with --verbose one line when a connection ends.

It has no dependency beyond the standard library (asyncio). scripts/netns-cluster.sh's `redirect`
puts it in front of a node's gRPC port inside a network namespace; see docs/multi-host-testing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import struct
import sys
import time

CHUNK = 64 * 1024  # bytes read at once
QUEUE_CHUNKS = 256  # chunks waiting per direction at most (back-pressure beyond that)


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    sys.stderr.write(f"{stamp} tcp-delay-proxy: {message}\n")
    sys.stderr.flush()


def host_port(text: str, default_host: str | None = None) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT, or PORT alone when there is a default host."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or default_host
    if host is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    try:
        return host, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the port is not a number") from None


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so that the kernel sends a RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass  # already closed
    writer.transport.abort()


class Connection:
    def __init__(self, number: int, peer: str, client: asyncio.StreamWriter, target: asyncio.StreamWriter):
        self.number = number
        self.peer = peer
        self.client = client
        self.target = target
        self.opened = time.monotonic()
        self.bytes = {"up": 0, "down": 0}
        self.tasks: list[asyncio.Task] = []
        self.was_reset = False

    def reset(self) -> None:
        self.was_reset = True
        reset(self.client)
        reset(self.target)
        for task in self.tasks:
            task.cancel()


class Proxy:
    def __init__(self, target: tuple[str, int], delay: float, verbose: bool):
        self.target = target
        self.delay = delay
        self.verbose = verbose
        self.open: set[Connection] = set()
        self.armed = 0  # how many of the next sends reset their connection (one per SIGUSR2)
        self.numbers = itertools.count(1)

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        number = next(self.numbers)
        peer = "%s:%d" % client_writer.get_extra_info("peername")[:2]
        try:
            target_reader, target_writer = await asyncio.open_connection(*self.target)
        except OSError as error:
            log(f"conn #{number} from {peer}: target {self.target[0]}:{self.target[1]} unreachable ({error}); reset")
            reset(client_writer)
            return
        conn = Connection(number, peer, client_writer, target_writer)
        log(f"conn #{number} {peer} -> {self.target[0]}:{self.target[1]} ({len(self.open) + 1} open)")
        self.open.add(conn)
        outcome = "closed"
        try:
            for name, reader, writer in (("up", client_reader, target_writer), ("down", target_reader, client_writer)):
                # One FIFO per direction: the reading task stamps each chunk with its due time
                # and goes on reading; the writing task waits for each chunk's due time in turn.
                queue: asyncio.Queue = asyncio.Queue(QUEUE_CHUNKS)
                conn.tasks += [
                    asyncio.create_task(self.read_side(reader, queue, conn, name)),
                    asyncio.create_task(self.write_side(queue, writer, conn, name)),
                ]
            # Done when both directions delivered their EOF (or a signal reset them); the
            # first error (a reset or a broken pipe on either side) resets both sides.
            done, _ = await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed and not conn.was_reset:
                outcome = f"reset after {type(failed[0].exception()).__name__}"
                conn.reset()
        except asyncio.CancelledError:
            outcome = "reset (signal)" if conn.was_reset else "cancelled"
            if not conn.was_reset:
                conn.reset()
        finally:
            self.open.discard(conn)
            for task in conn.tasks:
                task.cancel()
            if conn.was_reset and outcome == "closed":
                outcome = "reset (signal)"
            for writer in (client_writer, target_writer):
                writer.close()
            if self.verbose:
                elapsed = time.monotonic() - conn.opened
                log(f"conn #{number} {peer} {outcome} after {elapsed:.1f} s, "
                    f"{conn.bytes['up']} B up, {conn.bytes['down']} B down")

    async def read_side(self, reader: asyncio.StreamReader, queue: asyncio.Queue, conn: Connection, name: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await reader.read(CHUNK)
            if name == "up" and self.armed > 0:
                log(f"conn #{conn.number} {conn.peer}: reset as its client sends {len(data)} B (SIGUSR2)")
                self.armed -= 1  # one connection per SIGUSR2
                self.open.discard(conn)
                conn.reset()  # cancels this task too
                return
            await queue.put((loop.time() + self.delay, data))
            if not data:  # EOF, forwarded as a half-close
                return

    async def write_side(self, queue: asyncio.Queue, writer: asyncio.StreamWriter, conn: Connection, name: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            conn.bytes[name] += len(data)
            await writer.drain()

    def arm(self) -> None:
        self.armed += 1
        log(f"SIGUSR2: the next connection whose client sends will be reset ({len(self.open)} open; "
            f"armed: {self.armed} pending)")

    def reset_all(self) -> None:
        victims = sorted(self.open, key=lambda c: c.number)
        log(f"SIGUSR1: resetting {len(victims)} connection(s)"
            + (": " + ", ".join(f"#{c.number} {c.peer}" for c in victims) if victims else ""))
        for conn in victims:
            self.open.discard(conn)
            conn.reset()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=lambda t: host_port(t, "0.0.0.0"),
                        help="[HOST:]PORT to accept connections on (default host 0.0.0.0)")
    parser.add_argument("--target", required=True, type=host_port, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="one-way delay added in each direction, in milliseconds (default 0)")
    parser.add_argument("--verbose", action="store_true", help="also log a line when a connection ends")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")

    proxy = Proxy(args.target, args.delay_ms / 1000, args.verbose)
    server = await asyncio.start_server(proxy.handle, *args.listen, reuse_address=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.reset_all)
    loop.add_signal_handler(signal.SIGUSR2, proxy.arm)
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    listening = ", ".join("%s:%d" % s.getsockname()[:2] for s in server.sockets)
    log(f"listening on {listening}, forwarding to {args.target[0]}:{args.target[1]}, "
        f"delay {args.delay_ms:g} ms each way")
    await stop.wait()
    server.close()
    for conn in list(proxy.open):
        conn.reset()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
