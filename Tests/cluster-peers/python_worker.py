#!/usr/bin/env python3
"""A tllm worker in Python (numpy float32), written to /work/shared/spec/tllm-protocol.md, to mix
with Swift nodes in tests (Tests/server/test_mixed_cluster.py).

    python Tests/cluster-peers/python_worker.py --master_addr http://127.0.0.1:8022 \
        --hostname 127.0.0.1 [--grpc_port N] [--is_debug] [--ping_interval 30]

Life: serve RPCService on [::]:grpc_port; POST /register_client until the master answers
"success"; load the assigned layers from repo_path; POST /init_model; then GET /health every 30 s
(5 s retries, up to 100) and, when the master comes back, register again stating the range held
(pp_rank, start_idx, end_idx), without /init_model, as the original worker does.

RPCService: Health → Healthy; SetConfig stores where results go; Forward is acknowledged at once
and computed in arrival order on one thread, which then sends Status to the master and Forward to
the next hop (only each request's last row from the last stage); ImageForward → UNIMPLEMENTED.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small, and threaded OpenBLAS is many times slower on a busy
# 2-core machine (threads wait for each other).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import queue
import signal
import threading
import time
import uuid
from concurrent import futures
from urllib.parse import urlparse

import grpc
import httpx
import numpy as np
from tllm_peer import (
    GRPC_OPTIONS,
    DecoderLayers,
    GGUFModel,
    Sequence,
    channel,
    decode_tensor,
    encode_tensor,
    load_stubs,
    log,
)

pb2, pb2_grpc = load_stubs()
IDLE_SECONDS = 60.0  # a request's KV cache is dropped after this long unused


class Worker(pb2_grpc.RPCServiceServicer):
    def __init__(self, debug: bool = False):
        self.debug = debug
        self.layers: DecoderLayers | None = None
        self.total_layers = 0
        self.route = None  # (next stub, master stub, pp_rank)
        self.caches: dict[str, Sequence] = {}
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self.compute_loop, daemon=True).start()

    # -- RPCService

    def Health(self, request, context):
        return pb2.HealthResponse(msg="Healthy", status=200)

    def Status(self, request, context):
        return pb2.StatusResponse(msg="Successful", status=200)

    def SetConfig(self, request, context):
        # Channels connect lazily: an unreachable address only shows when results are sent.
        nxt = pb2_grpc.RPCServiceStub(channel(request.forward_url))
        master = pb2_grpc.RPCServiceStub(channel(request.master_url))
        self.route = (nxt, master, request.pp_rank)
        log("worker", f"SetConfig: pp_rank {request.pp_rank}, results to {request.forward_url}, "
                      f"status to {request.master_url}")
        return pb2.SetConfigResponse(msg="SetConfig Completed", status=200)

    def Forward(self, request, context):
        if self.layers is None:
            return pb2.ForwardResponse(msg="Model not initialized", status=500)
        if self.route is None:
            return pb2.ForwardResponse(msg="No route: SetConfig first", status=500)
        counts = [len(ids.input_ids) for ids in request.input_ids_list]
        try:
            if len(request.uuid_list) != len(counts) or not counts or min(counts) < 1:
                raise ValueError(f"{len(request.uuid_list)} uuids, input id counts {counts}")
            if len(set(request.uuid_list)) != len(counts):
                raise ValueError("uuid_list names a request twice")
            x = decode_tensor(request.hidden_states)
            if x.shape != (sum(counts), self.layers.m.hidden):
                raise ValueError(f"hidden_states is {list(x.shape)}, expected [{sum(counts)}, {self.layers.m.hidden}]")
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        self.jobs.put((request, x, counts))
        return pb2.ForwardResponse(msg="Forward Completed", status=200)

    def ImageForward(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "image generation is not supported")

    # -- computing

    def compute_loop(self):
        while True:
            request, x, counts = self.jobs.get()
            try:
                self.step(request, x, counts)
            except Exception as error:  # noqa: BLE001 (one bad step must not stop the worker)
                log("worker", f"step {'-'.join(request.uuid_list)} failed: {error!r}")

    def step(self, request, x, counts):
        started = time.perf_counter()
        now = time.monotonic()
        for key in [k for k, s in self.caches.items() if now - s.used > IDLE_SECONDS]:
            del self.caches[key]
        batch = [(self.caches.setdefault(u, Sequence(len(self.layers.weights))), n)
                 for u, n in zip(request.uuid_list, counts)]
        y = self.layers.forward(x, batch)
        if self.layers.end == self.total_layers:
            y = y[np.cumsum(counts) - 1]  # each request's last row
        cost = time.perf_counter() - started
        if self.debug:
            log("worker", f"step: {len(counts)} request(s), {sum(counts)} rows, {cost * 1000:.0f} ms")
        nxt, master, rank = self.route
        status = master.Status.future(pb2.StatusRequest(uuid=request.uuid_list, pp_idx=rank, cost_time=cost),
                                      timeout=10)
        out = pb2.ForwardRequest(uuid_list=request.uuid_list, input_ids_list=request.input_ids_list,
                                 hidden_states=encode_tensor(pb2, y))
        step = "-".join(request.uuid_list)
        try:
            answer = nxt.Forward(out, timeout=10)
            if answer.status != 200:
                log("worker", f"step {step}: next hop answered {answer.status} {answer.msg}")
        except grpc.RpcError as error:
            log("worker", f"step {step}: Forward failed: {error.code()} {error.details()}")
        try:
            status.result()
        except grpc.RpcError as error:
            log("worker", f"step {step}: Status failed: {error.code()} {error.details()}")


class Registration:
    """The HTTP side (spec section 3)."""

    def __init__(self, master_addr: str, hostname: str, port: int, worker: Worker):
        self.http = httpx.Client(base_url=master_addr.rstrip("/"), trust_env=False, timeout=60)
        self.client_id = f"py-{uuid.uuid4().hex[:12]}"
        self.hosts = [hostname]
        self.port = port
        self.worker = worker
        self.assigned = (-1, -1, -1)  # pp_rank, start_idx, end_idx
        self.waiting = False

    def post(self, path: str, body: dict) -> dict | None:
        """The master's JSON answer; None (logged once per wait) while it cannot be reached."""
        try:
            return self.http.post(path, json=body).json()
        except (httpx.HTTPError, ValueError) as error:
            if not self.waiting:
                log("worker", f"waiting for the master at {self.http.base_url}: {error!r}")
            self.waiting = True
            return None

    def register(self) -> tuple[int, int, int, str | None]:
        """POST /register_client (with the assignment we hold, if any) until the master says "success"."""
        self.waiting = False
        while True:
            rank, start, end = self.assigned
            answer = self.post("/register_client", {
                "client_id": self.client_id, "host": self.hosts, "port": self.port,
                "pp_rank": rank, "tp_rank": -1, "start_idx": start, "end_idx": end,
            })
            if answer and answer.get("msg") == "success" and answer.get("end_idx", -1) > answer.get("start_idx", -1):
                return answer["pp_rank"], answer["start_idx"], answer["end_idx"], answer.get("repo_path")
            if answer:
                log("worker", f"registration refused: {answer}")
            time.sleep(2)

    def register_and_load(self):
        """First registration: get a range, load it, report it with /init_model."""
        while True:
            rank, start, end, repo_path = self.register()
            if self.worker.layers is None or (self.worker.layers.start, self.worker.layers.end) != (start, end):
                self.load(repo_path, start, end)
            self.assigned = (rank, start, end)
            report = self.post("/init_model", {"client_id": self.client_id, "pp_rank": rank, "start_idx": start,
                                               "end_idx": end})
            if report and report.get("status") == 200:
                log("worker", f"serving layers [{start}, {end}) as pp_rank {rank}")
                return
            log("worker", f"init_model answered {report}; registering again")
            self.assigned = (-1, -1, -1)

    def load(self, path, start, end):
        started = time.monotonic()
        model = GGUFModel(path)
        layers = DecoderLayers(model, start, end)
        self.worker.total_layers = model.layers
        self.worker.caches.clear()
        self.worker.layers = layers
        log("worker", f"loaded layers [{start}, {end}) of {path} in {time.monotonic() - started:.1f} s")

    def healthy(self) -> bool:
        try:
            return self.http.get("/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def watch_master(self, interval: float):
        while True:
            time.sleep(interval)
            if self.healthy():
                continue
            log("worker", "the master does not answer; retrying every 5 s")
            for _ in range(100):
                time.sleep(5)
                if self.healthy():
                    break
            else:
                raise SystemExit("the master did not come back; giving up")
            # Re-registration (spec section 3): the range we hold, no reload and no /init_model (the
            # original worker does not send it either); the master rebuilds the route from it.
            log("worker", f"the master is back: registering again with {self.assigned}")
            self.register()
            log("worker", "registered again")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--master_addr", required=True, help="the master's HTTP address, http://HOST:PORT")
    ap.add_argument("--hostname", default="127.0.0.1", help="the address the master should use for this worker")
    ap.add_argument("--grpc_port", type=int, default=0, help="gRPC port (default: a free one)")
    ap.add_argument("--is_debug", action="store_true", help="log every step")
    ap.add_argument("--ping_interval", type=float, default=30, help="seconds between GET /health to the master")
    args = ap.parse_args()
    if "://" not in args.master_addr:
        args.master_addr = "http://" + args.master_addr
    if urlparse(args.master_addr).port is None:
        args.master_addr = args.master_addr.rstrip("/") + ":8022"

    worker = Worker(debug=args.is_debug)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=GRPC_OPTIONS)
    pb2_grpc.add_RPCServiceServicer_to_server(worker, server)
    port = server.add_insecure_port(f"[::]:{args.grpc_port}")
    if not port:
        raise SystemExit(f"cannot listen on port {args.grpc_port}")
    server.start()
    log("worker", f"gRPC on port {port}; master {args.master_addr}")

    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())

    def life():
        registration = Registration(args.master_addr, args.hostname, port, worker)
        registration.register_and_load()
        registration.watch_master(args.ping_interval)

    thread = threading.Thread(target=life, daemon=True)
    thread.start()
    while not stop.wait(0.5) and thread.is_alive():
        pass
    server.stop(grace=1).wait(5)
    log("worker", "stopped")
    if not stop.is_set():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
