"""Decode speed of one request through the pipeline: --is_local vs a master with 2 and with 3
tllm.client workers on loopback, same model, same run; bytes on the wire per decode step
(loopback counters of /proc/net/dev, so gRPC framing and the SSE stream are included).
With --concurrency N: aggregate output tokens/s of N concurrent requests on 2 and 3 stages,
steps in flight on (one per stage) vs off (--max_steps_in_flight 1), same run.

    python Benchmarks/cluster/pipeline_bench.py --server BIN --client BIN --model M [--tokens 128]
        [--concurrency 8]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from api_overhead import stream_once  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_bytes() -> int:
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[0])
    return 0


def wait_ready(port: int, timeout: float = 120) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("cluster not ready")


def start(args, workers: int, threads: int, flags: tuple[str, ...] = ()) -> tuple[int, list[subprocess.Popen]]:
    """A master (--is_local when workers == 0) and its workers; returns the HTTP port and the processes."""
    port = free_port()
    master = [args.server, "--model_path", args.model, "--http_port", str(port), "--hostname", "127.0.0.1",
              "--threads", str(threads), *flags]
    master += ["--is_local"] if workers == 0 else ["--client_size", str(workers), "--grpc_port", str(free_port())]
    nodes = [subprocess.Popen(master, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for _ in range(workers):
        nodes.append(subprocess.Popen(
            [args.client, "--master_addr", f"http://127.0.0.1:{port}", "--hostname", "127.0.0.1",
             "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return port, nodes


def stop(nodes: list[subprocess.Popen]) -> None:
    for node in reversed(nodes):
        node.terminate()
        node.wait(timeout=30)


def run(args, workers: int, threads: int) -> tuple[float, float]:
    port, nodes = start(args, workers, threads)
    try:
        wait_ready(port)
        stream_once(port, 8)
        rates, per_token = [], []
        for _ in range(args.repetitions):
            before = loopback_bytes()
            _, rate, tokens = stream_once(port, args.tokens)
            per_token.append((loopback_bytes() - before) / tokens)
            rates.append(rate)
        return statistics.median(rates), statistics.median(per_token)
    finally:
        stop(nodes)


def aggregate(args, workers: int, in_flight: bool) -> float:
    """Output tokens/s of `--concurrency` requests streamed at once (median of the repetitions)."""
    flags = () if in_flight else ("--max_steps_in_flight", "1")
    port, nodes = start(args, workers, args.threads, flags)
    try:
        wait_ready(port)
        stream_once(port, 8)
        rates = []
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            for _ in range(args.repetitions):
                began = time.perf_counter()
                results = list(pool.map(lambda _: stream_once(port, args.tokens), range(args.concurrency)))
                rates.append(sum(tokens for _, _, tokens in results) / (time.perf_counter() - began))
        return statistics.median(rates)
    finally:
        stop(nodes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="compute threads per process")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="measure N concurrent requests with steps in flight on and off instead")
    args = parser.parse_args()
    if args.concurrency:
        print(f"{'stages':>6} | {'in flight: tok/s':>16} | {'one at a time: tok/s':>20} | {'ratio':>5}")
        for workers in (2, 3):
            on, off = aggregate(args, workers, True), aggregate(args, workers, False)
            print(f"{workers:>6} | {on:>16.1f} | {off:>20.1f} | {on / off:>5.2f}")
        return
    print(f"{'stages':>6} | {'decode tok/s':>12} | {'vs local':>8} | {'loopback bytes / token':>22}")
    local = None
    for workers in (0, 2, 3):
        rate, per_token = run(args, workers, args.threads)
        local = local or rate
        label = "local" if workers == 0 else str(workers)
        print(f"{label:>6} | {rate:>12.1f} | {rate / local:>8.3f} | {per_token:>22.0f}")


if __name__ == "__main__":
    main()
