"""The pipeline's speed, same model, same run:

- default: decode tokens/s of one request with --is_local vs a master with 2 and with 3
  tllm.client workers on loopback, and bytes on the wire per decode step (loopback counters of
  /proc/net/dev, so gRPC framing and the SSE stream are included);
- --concurrency N: aggregate output tokens/s of N concurrent requests on 2 and 3 stages, steps
  in flight on (one per stage) vs off (--max_steps_in_flight 1), for each --delays value;
- --delays 0,1,5 (without --concurrency): decode tokens/s of one request on 2 stages with that
  many ms of one-way delay per hop, and the per-token overhead against the delay itself.

A delay above 0 runs every node in its own network namespace (scripts/netns-cluster.sh, root
only) with scripts/tcp-delay-proxy.py in front of each gRPC port; 0 is plain loopback.

    python Benchmarks/cluster/pipeline_bench.py --server BIN --client BIN --model M [--tokens 128]
        [--concurrency 8] [--delays 0,1]
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

REPO = Path(__file__).resolve().parents[2]
NETNS = ["bash", str(REPO / "scripts/netns-cluster.sh"), "--prefix", "tllmb", "--subnet", "10.213.9"]
PROXY = REPO / "scripts/tcp-delay-proxy.py"
GRPC_PORT, PROXY_PORT, HTTP_PORT = 25001, 25101, 8022


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


def wait_ready(host: str, port: int, timeout: float = 120) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(f"http://{host}:{port}/v1/chat/completions", data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("cluster not ready")


class Deployment:
    """A master (--is_local when workers == 0) and its workers: on loopback, or with delay_ms > 0
    each in a network namespace behind a delay proxy."""

    def __init__(self, args, workers: int, flags: tuple[str, ...] = (), delay_ms: float = 0):
        self.processes: list[subprocess.Popen] = []
        self.netns = delay_ms > 0
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
        try:
            if self.netns:
                subprocess.run([*NETNS, "down"], check=True, capture_output=True)
                subprocess.run([*NETNS, "up", "--nodes", str(workers + 1)], check=True, capture_output=True)
                names = ["m"] + [f"w{i}" for i in range(workers)]
                hosts = [f"10.213.9.{i + 1}" for i in range(workers + 1)]
                wrap = [["ip", "netns", "exec", f"tllmb-{name}"] for name in names]
                for name, prefix in zip(names, wrap):
                    proxy = subprocess.Popen([*prefix, sys.executable, str(PROXY), "--listen", str(PROXY_PORT),
                                              "--target", f"127.0.0.1:{GRPC_PORT}", "--delay-ms", f"{delay_ms:g}"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    self.processes.append(proxy)
                    assert "listening on" in proxy.stderr.readline()
                    subprocess.run([*NETNS, "redirect", name, str(GRPC_PORT), str(PROXY_PORT)], check=True,
                                   capture_output=True)
                self.host, self.port, grpc = hosts[0], HTTP_PORT, GRPC_PORT
            else:
                hosts = ["127.0.0.1"] * (workers + 1)
                wrap = [[] for _ in hosts]
                self.host, self.port, grpc = "127.0.0.1", free_port(), None
            master = [*wrap[0], args.server, "--model_path", args.model, "--http_port", str(self.port),
                      "--hostname", self.host, "--threads", str(args.threads), *flags]
            master += ["--is_local"] if workers == 0 else [
                "--client_size", str(workers), "--grpc_port", str(grpc or free_port())]
            self.processes.append(subprocess.Popen(master, **quiet))
            for i in range(workers):
                worker = [*wrap[i + 1], args.client, "--master_addr", f"http://{self.host}:{self.port}",
                          "--hostname", hosts[i + 1], "--threads", str(args.threads)]
                worker += ["--grpc_port", str(grpc)] if grpc else []
                self.processes.append(subprocess.Popen(worker, **quiet))
            wait_ready(self.host, self.port)
            stream_once(self.port, 8, self.host)  # warm-up
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.netns:
            subprocess.run([*NETNS, "down"], capture_output=True)


def run(args, workers: int, delay_ms: float = 0) -> tuple[float, float]:
    """Median decode tok/s of one request, and wire bytes per token (loopback only, else 0)."""
    d = Deployment(args, workers, delay_ms=delay_ms)
    try:
        rates, per_token = [], []
        for _ in range(args.repetitions):
            before = loopback_bytes()
            _, rate, tokens = stream_once(d.port, args.tokens, d.host)
            per_token.append((loopback_bytes() - before) / tokens if not d.netns else 0)
            rates.append(rate)
        return statistics.median(rates), statistics.median(per_token)
    finally:
        d.stop()


def aggregate(args, workers: int, in_flight: bool, delay_ms: float = 0) -> float:
    """Output tokens/s of `--concurrency` requests streamed at once (median of the repetitions)."""
    d = Deployment(args, workers, () if in_flight else ("--max_steps_in_flight", "1"), delay_ms)
    try:
        rates = []
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            for _ in range(args.repetitions):
                began = time.perf_counter()
                results = list(pool.map(lambda _: stream_once(d.port, args.tokens, d.host), range(args.concurrency)))
                rates.append(sum(tokens for _, _, tokens in results) / (time.perf_counter() - began))
        return statistics.median(rates)
    finally:
        d.stop()


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
    parser.add_argument("--delays", default="",
                        help="comma-separated one-way delays per hop in ms (above 0: network namespaces, root only)")
    args = parser.parse_args()
    delays = [float(d) for d in args.delays.split(",") if d]
    if args.concurrency:
        print(f"{'delay ms':>8} | {'stages':>6} | {'in flight: tok/s':>16} | {'one at a time: tok/s':>20} | {'ratio':>5}")
        for delay in delays or [0]:
            for workers in (2, 3):
                on, off = aggregate(args, workers, True, delay), aggregate(args, workers, False, delay)
                print(f"{delay:>8g} | {workers:>6} | {on:>16.1f} | {off:>20.1f} | {on / off:>5.2f}", flush=True)
        return
    if delays:
        # A decode step crosses 3 hops on 2 stages (master → w0 → w1 → master), each delayed once.
        print(f"{'delay ms':>8} | {'decode tok/s':>12} | {'ms / token':>10} | {'added ms / token':>16} | "
              f"{'injected 3 × delay':>18}")
        base = None
        for delay in delays:
            rate, _ = run(args, 2, delay)
            per_token = 1000 / rate
            base = base if base is not None else per_token
            print(f"{delay:>8g} | {rate:>12.1f} | {per_token:>10.1f} | {per_token - base:>16.1f} | {3 * delay:>18g}",
                  flush=True)
        return
    print(f"{'stages':>6} | {'decode tok/s':>12} | {'vs local':>8} | {'loopback bytes / token':>22}")
    local = None
    for workers in (0, 2, 3):
        rate, per_token = run(args, workers)
        local = local or rate
        label = "local" if workers == 0 else str(workers)
        print(f"{label:>6} | {rate:>12.1f} | {rate / local:>8.3f} | {per_token:>22.0f}", flush=True)


if __name__ == "__main__":
    main()
