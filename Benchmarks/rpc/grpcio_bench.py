#!/usr/bin/env python3
"""Reference gRPC measurement with grpcio: the numbers the Swift tllm RPC layer is compared to.

What is measured
  A grpcio server serving schemas.RPCService/Forward that parses the request
  (protobuf deserialisation of ForwardRequest) and answers
  {msg: "Forward Completed", status: 200} at once (no tensor decode), and a grpcio
  client. For each transport (tcp loopback 127.0.0.1, Unix socket, TLS over loopback) and tensor
  shape ([1,576], [1,4096], [512,4096]; payload = float16 LE, LZ4 frame when
  rows >= 64, encoded once outside any timing):
    latency     N sequential unary Forward calls after warm-up -> p50/p99 in us
    throughput  C concurrent in-flight calls for D seconds    -> calls/s, MB/s
  MB/s = calls/s * len(hidden_states.data) / 1e6 (payload bytes as sent, i.e.
  compressed for the LZ4 shapes; payload_bytes is reported too).

Process layout and API choice: the server runs in its own Python process (so
client and server do not share a GIL; the machine this was tuned on has 2
cores) as a sync grpc.server with a ThreadPoolExecutor (16 threads). The
client uses the sync API for the sequential latency loop (lowest per-call
overhead) and grpc.aio with C coroutines on one channel for throughput. On a
2-core Linux VM with grpcio 1.85 the four combinations (server sync/aio x
throughput client aio/threads) were within run-to-run noise of each other
(+-30 %); sync server + aio client was the best or tied in most cells, so it
is the default. `--server aio` and `--client-mode threads` select the others.
Channel/server options are the spec's (128 MiB send/receive limits), nothing
else tuned (default HTTP/2 windows, no compression), as the original tllm.

Usage
  python Benchmarks/rpc/grpcio_bench.py [--duration 3] [--calls 1000]
         [--concurrency 8] [--json OUT] [--transports tcp,unix]
         [--shapes 1x576,1x4096,512x4096]
Output: one JSON object on stdout (and in OUT with --json):
  {"impl": "grpcio", "results": [{"transport": "tcp", "shape": [1, 576],
   "p50_us": ..., "p99_us": ..., "calls_per_s": ..., "mb_per_s": ..., ...}, ...]}
and a table on stderr. Needs grpcio, grpcio-tools, numpy, lz4.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = REPO_ROOT / "Protos" / "schemas.proto"
MAX_MESSAGE = 128 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.enable_http_proxy", 0),
]
DEFAULT_SHAPES = "1x576,1x4096,512x4096"


def load_stubs(out_dir: Path):
    """Generate and import schemas_pb2 / schemas_pb2_grpc from Protos/schemas.proto."""
    from grpc_tools import protoc

    rc = protoc.main(
        ["grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", str(PROTO)]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({rc})")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("schemas_pb2"), importlib.import_module("schemas_pb2_grpc")


# --------------------------------------------------------------------------
# Server (child process)


def serve(args) -> None:
    import grpc

    pb2, pb2_grpc = load_stubs(Path(args.gen_dir))
    reply = pb2.ForwardResponse(msg="Forward Completed", status=200)

    if args.server == "aio":

        class AioServicer(pb2_grpc.RPCServiceServicer):
            async def Forward(self, request, context):
                return reply

        async def main():
            server = grpc.aio.server(options=GRPC_OPTIONS)
            pb2_grpc.add_RPCServiceServicer_to_server(AioServicer(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.add_insecure_port(f"unix://{args.unix_path}")
            tls_port = add_tls_port(grpc, server, args.tls_dir)
            await server.start()
            print(f"port {port} {tls_port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for s in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(s, stop.set)
            await stop.wait()
            await server.stop(0.5)

        asyncio.run(main())
    else:

        class SyncServicer(pb2_grpc.RPCServiceServicer):
            def Forward(self, request, context):
                return reply

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.server_threads), options=GRPC_OPTIONS)
        pb2_grpc.add_RPCServiceServicer_to_server(SyncServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.add_insecure_port(f"unix://{args.unix_path}")
        tls_port = add_tls_port(grpc, server, args.tls_dir)
        server.start()
        print(f"port {port} {tls_port}", flush=True)
        stop = threading.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: stop.set())
        stop.wait()
        server.stop(0.5).wait(5)


def add_tls_port(grpc, server, tls_dir: str | None) -> int:
    """A TLS listener with tls_dir's node1 certificate (0 without --tls-dir)."""
    if not tls_dir:
        return 0
    d = Path(tls_dir)
    credentials = grpc.ssl_server_credentials([((d / "node1.key").read_bytes(), (d / "node1.pem").read_bytes())])
    return server.add_secure_port("127.0.0.1:0", credentials)


def open_channel(grpc_module, target: str, aio: bool = False):
    """A channel to `target`; `tls://HOST:PORT` is TLS trusting the --tls-dir CA."""
    factory = grpc_module.aio if aio else grpc_module
    if target.startswith("tls://"):
        credentials = grpc_module.ssl_channel_credentials((Path(TLS_DIR[0]) / "ca.pem").read_bytes())
        return factory.secure_channel(target[len("tls://"):], credentials, options=GRPC_OPTIONS)
    return factory.insecure_channel(target, options=GRPC_OPTIONS)


TLS_DIR: list[str] = []


class ServerProcess:
    def __init__(self, args, gen_dir: Path, unix_path: str):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_serve",
            "--gen-dir",
            str(gen_dir),
            "--unix-path",
            unix_path,
            "--server",
            args.server,
            "--server-threads",
            str(args.server_threads),
        ] + (["--tls-dir", args.tls_dir] if args.tls_dir else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.unix_path = unix_path
        line = self._readline(30.0)
        if not line.startswith("port "):
            self.stop()
            raise SystemExit(f"bench server failed to start: {line!r}")
        self.port = int(line.split()[1])
        self.tls_port = int(line.split()[2])
        # The socket file exists once start() returned; wait a moment to be safe.
        deadline = time.monotonic() + 10
        while not os.path.exists(unix_path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _readline(self, timeout: float) -> str:
        result: list[bytes] = []
        t = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return result[0].decode().strip() if result else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------
# Client


def encode_payload(pb2, shape, seed=0):
    import lz4.frame
    import numpy as np

    rows, hidden = shape
    x = (np.random.default_rng(seed).standard_normal((rows, hidden), dtype=np.float32) * 3).astype("<f2")
    raw = x.tobytes()
    data = lz4.frame.compress(raw) if rows >= 64 else raw
    uuids = ["bench-req"]
    req = pb2.ForwardRequest(
        uuid_list=uuids,
        input_ids_list=[pb2.InputIds(input_ids=list(range(rows)))],
        hidden_states=pb2.BFloat16Tensor(data=data, shape=[rows, hidden]),
    )
    return req, len(data)


def forward_callable(grpc_mod, channel, pb2):
    return channel.unary_unary(
        "/schemas.RPCService/Forward",
        request_serializer=pb2.ForwardRequest.SerializeToString,
        response_deserializer=pb2.ForwardResponse.FromString,
    )


def measure_latency(target, pb2, req, calls, warmup, timeout):
    import grpc
    import numpy as np

    with open_channel(grpc, target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        fwd = forward_callable(grpc, ch, pb2)
        for _ in range(warmup):
            fwd(req, timeout=timeout)
        lat = np.empty(calls, dtype=np.int64)
        pc = time.perf_counter_ns
        for i in range(calls):
            t0 = pc()
            r = fwd(req, timeout=timeout)
            lat[i] = pc() - t0
        assert r.status == 200, r
    return float(np.percentile(lat, 50)) / 1e3, float(np.percentile(lat, 99)) / 1e3


def measure_throughput_aio(target, pb2, req, concurrency, duration, timeout):
    import grpc

    async def run():
        async with open_channel(grpc, target, aio=True) as ch:
            await asyncio.wait_for(ch.channel_ready(), 10)
            fwd = forward_callable(grpc, ch, pb2)
            # warm-up: every worker once
            await asyncio.gather(*(fwd(req, timeout=timeout) for _ in range(concurrency)))
            count = [0] * concurrency
            stop_at = time.perf_counter() + duration

            async def worker(i):
                n = 0
                while time.perf_counter() < stop_at:
                    r = await fwd(req, timeout=timeout)
                    n += 1
                count[i] = n
                assert r.status == 200

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            return sum(count), time.perf_counter() - t0

    return asyncio.run(run())


def measure_throughput_threads(target, pb2, req, concurrency, duration, timeout):
    import grpc

    with open_channel(grpc, target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        fwd = forward_callable(grpc, ch, pb2)
        for _ in range(concurrency):
            fwd(req, timeout=timeout)
        count = [0] * concurrency
        barrier = threading.Barrier(concurrency + 1)
        stop_at = [0.0]

        def worker(i):
            barrier.wait()
            n = 0
            while time.perf_counter() < stop_at[0]:
                fwd(req, timeout=timeout)
                n += 1
            count[i] = n

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
        for t in threads:
            t.start()
        stop_at[0] = time.perf_counter() + duration
        t0 = time.perf_counter()
        barrier.wait()
        for t in threads:
            t.join(duration + 2 * timeout)
        return sum(count), time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of each throughput run (default 3)")
    ap.add_argument("--calls", type=int, default=1000, help="sequential calls of each latency run (default 1000)")
    ap.add_argument("--concurrency", type=int, default=8, help="in-flight calls in throughput runs (default 8)")
    ap.add_argument("--json", metavar="OUT", help="also write the JSON result to OUT")
    ap.add_argument("--transports", default="tcp,unix", help="comma list of tcp,unix,tls (default tcp,unix)")
    ap.add_argument("--tls-dir", help="directory with ca.pem, node1.pem, node1.key (Tests/server/tls_test_pki.py); "
                    "needed by the tls transport")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma list of ROWSxCOLS (default {DEFAULT_SHAPES})")
    ap.add_argument("--server", choices=["sync", "aio"], default="sync", help="grpcio server flavour (default sync)")
    ap.add_argument("--server-threads", type=int, default=16, help="thread pool size of --server sync")
    ap.add_argument("--client-mode", choices=["aio", "threads"], default="aio", help="throughput client (default aio)")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline of each call in seconds")
    # internal: run as the server child process
    ap.add_argument("--_serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gen-dir", help=argparse.SUPPRESS)
    ap.add_argument("--unix-path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._serve:
        serve(args)
        return 0

    import grpc

    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",") if s]
    transports = [t for t in args.transports.split(",") if t]
    for t in transports:
        if t not in ("tcp", "unix", "tls"):
            ap.error(f"unknown transport {t}")
    if "tls" in transports and not args.tls_dir:
        ap.error("the tls transport needs --tls-dir")
    if args.tls_dir:
        TLS_DIR.append(args.tls_dir)

    tmp = Path(tempfile.mkdtemp(prefix="tllm-bench-", dir="/tmp"))
    try:
        gen = tmp / "gen"
        gen.mkdir()
        pb2, _ = load_stubs(gen)
        payloads = {s: encode_payload(pb2, s) for s in shapes}  # outside any timing
        server = ServerProcess(args, gen, str(tmp / "bench.sock"))
        measure_tp = measure_throughput_aio if args.client_mode == "aio" else measure_throughput_threads
        results = []
        t_start = time.monotonic()
        try:
            for transport in transports:
                target = {"tcp": f"127.0.0.1:{server.port}", "unix": f"unix://{server.unix_path}",
                          "tls": f"tls://127.0.0.1:{server.tls_port}"}[transport]
                for shape in shapes:
                    req, nbytes = payloads[shape]
                    warmup = max(20, args.calls // 10)
                    p50, p99 = measure_latency(target, pb2, req, args.calls, warmup, args.timeout)
                    n, elapsed = measure_tp(target, pb2, req, args.concurrency, args.duration, args.timeout)
                    cps = n / elapsed
                    row = {
                        "transport": transport,
                        "shape": list(shape),
                        "p50_us": round(p50, 1),
                        "p99_us": round(p99, 1),
                        "calls_per_s": round(cps, 1),
                        "mb_per_s": round(cps * nbytes / 1e6, 2),
                        "payload_bytes": nbytes,
                        "calls": args.calls,
                        "concurrency": args.concurrency,
                        "duration_s": round(elapsed, 3),
                    }
                    results.append(row)
                    print(
                        f"  {transport:4} {shape[0]:>4}x{shape[1]:<5} p50 {p50:9.1f} us  p99 {p99:9.1f} us  "
                        f"{cps:9.1f} calls/s  {row['mb_per_s']:9.2f} MB/s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {
        "impl": "grpcio",
        "grpcio_version": grpc.__version__,
        "python": platform.python_version(),
        "server": args.server,
        "client_mode": args.client_mode,
        "cpus": os.cpu_count(),
        "total_s": round(time.monotonic() - t_start, 1),
        "results": results,
    }
    _table(out, sys.stderr)
    text = json.dumps(out)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def _table(out, f):
    hdr = f"{'transport':9} {'shape':>10} {'payload':>10} {'p50 us':>10} {'p99 us':>10} {'calls/s':>10} {'MB/s':>9}"
    print(f"\n{out['impl']} {out['grpcio_version']} (server {out['server']}, client {out['client_mode']})", file=f)
    print(hdr, file=f)
    print("-" * len(hdr), file=f)
    for r in out["results"]:
        shape = f"{r['shape'][0]}x{r['shape'][1]}"
        print(
            f"{r['transport']:9} {shape:>10} {r['payload_bytes']:>10} {r['p50_us']:>10.1f} {r['p99_us']:>10.1f} "
            f"{r['calls_per_s']:>10.1f} {r['mb_per_s']:>9.2f}",
            file=f,
        )


if __name__ == "__main__":
    sys.exit(main())
