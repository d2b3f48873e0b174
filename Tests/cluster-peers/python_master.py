#!/usr/bin/env python3
"""A minimal tllm master in Python, written to /work/shared/spec/tllm-protocol.md, used as a test
driver for workers (Tests/server/test_mixed_cluster.py): no OpenAI API, one greedy generation per
prompt, the result printed as JSON.

    python Tests/cluster-peers/python_master.py --http_port 8022 --grpc_port 25001 \
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf --client_size 2 \
        --prompt "What is the capital of France?" [--prompt ...] [--max_tokens 24]

HTTP (section 3): POST /register_client (TCP ping, first free range), POST /init_model, GET /health.
gRPC (section 2): RPCService receiving the last stage's Forward and every stage's Status.
Once initialised workers tile [0, layers) it sends SetConfig to each, then for each prompt runs
greedy steps: embedding here, Forward to worker 0, wait (10 s) for the last stage's Forward and a
Status from every stage, final norm + LM head here. Prints one JSON object per prompt on stdout:
{"prompt", "prompt_ids", "token_ids", "text", "finish_reason", "steps", "stage_seconds"}.
With --prompt_ids "1,2,3" the ids are used as given (no chat template).
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices are small, and threaded OpenBLAS is many times slower on a busy
# 2-core machine (threads wait for each other).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import random
import socket
import sys
import threading
import time
import uuid
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
from tllm_peer import (
    GRPC_OPTIONS,
    PP_TIMEOUT,
    REPO_ROOT,
    GGUFModel,
    channel,
    decode_tensor,
    encode_tensor,
    grpc_target,
    load_stubs,
    log,
    rms_norm,
)

pb2, pb2_grpc = load_stubs()
TOKENIZER = REPO_ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures" / "smollm2-tokenizer.json"
# SmolLM2's chat template (in the GGUF) for one user message, as text.
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
USER = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


def ping(host: str, port: int, tries: int = 3, timeout: float = 3.0) -> float | None:
    """Seconds to TCP-connect to host:port (first success of 3 tries), None if unreachable."""
    for _ in range(tries):
        started = time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=timeout):
                return time.monotonic() - started
        except OSError:
            continue
    return None


class Registry:
    """Workers by client id; ranges as the original splits them (each = total // n)."""

    def __init__(self, total_layers: int, client_size: int, repo_path: str):
        each = total_layers // client_size
        # The original's range(0, total, each); its last range may pass the end, clipped here.
        self.ranges = [(s, min(s + each, total_layers)) for s in range(0, total_layers, each)]
        self.total = total_layers
        self.repo_path = repo_path
        self.workers: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.complete = threading.Event()

    def register(self, body: dict) -> dict:
        delays = {h: ping(h, body["port"]) for h in body["host"]}
        reachable = {h: d for h, d in delays.items() if d is not None}
        if not reachable:
            return {"msg": "ping failed", "pp_rank": -1, "start_idx": -1, "end_idx": -1}
        address = grpc_target(min(reachable, key=reachable.get), body["port"])
        again = body.get("pp_rank", -1) != -1  # a worker that survived a master restart: loaded already
        with self.lock:
            if again:
                rank, start, end = body["pp_rank"], body["start_idx"], body["end_idx"]
            else:
                taken = {(w["start"], w["end"]) for cid, w in self.workers.items() if cid != body["client_id"]}
                free = [i for i, r in enumerate(self.ranges) if r not in taken]
                rank = free[0] if free else random.randrange(len(self.ranges))
                start, end = self.ranges[rank]
            self.workers[body["client_id"]] = {"address": address, "rank": rank, "start": start, "end": end,
                                               "ready": again}
        log("master", f"worker {body['client_id']} at {address}: rank {rank}, layers [{start}, {end})")
        if again:
            self.check_route()
        return {"pp_rank": rank, "start_idx": start, "end_idx": end, "msg": "success", "repo_path": self.repo_path}

    def init_model(self, body: dict) -> dict:
        with self.lock:
            worker = self.workers.get(body.get("client_id"))
            if worker is None:
                return {"msg": "client not found", "status": 499}
            worker.update(rank=body["pp_rank"], start=body["start_idx"], end=body["end_idx"], ready=True)
        self.check_route()
        return {"msg": "success", "status": 200}

    def route(self) -> list[dict] | None:
        with self.lock:
            ready = [w for w in self.workers.values() if w["ready"]]
        chain, layer = [], 0
        while layer < self.total:
            nxt = next((w for w in ready if w["start"] == layer), None)
            if nxt is None:
                return None
            chain.append(nxt)
            layer = nxt["end"]
        return chain

    def check_route(self):
        if self.route() is not None:
            self.complete.set()


def http_server(port: int, registry: Registry) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def reply(self, code: int, body: dict | None = None):
            data = json.dumps(body if body is not None else {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.reply(200) if self.path == "/health" else self.reply(404, {"error": "not found"})

        def do_POST(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/register_client":
                    self.reply(200, registry.register(body))
                elif self.path == "/init_model":
                    self.reply(200, registry.init_model(body))
                else:
                    self.reply(404, {"error": "not found"})
            except (ValueError, KeyError, TypeError) as error:
                self.reply(400, {"error": repr(error)})

        def log_message(self, fmt, *args):
            log("master", "http " + fmt % args)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class Inbox(pb2_grpc.RPCServiceServicer):
    """The master's RPCService: results and statuses by step (the uuid list joined with "-")."""

    def __init__(self):
        self.cond = threading.Condition()
        self.results: dict[str, np.ndarray] = {}
        self.statuses: dict[str, dict[int, float]] = {}

    def Forward(self, request, context):
        try:
            x = decode_tensor(request.hidden_states)
        except ValueError as error:
            log("master", f"Forward with a bad tensor ignored: {error}")
            return pb2.ForwardResponse(msg="Forward Completed", status=200)
        with self.cond:
            self.results["-".join(request.uuid_list)] = x
            self.cond.notify_all()
        return pb2.ForwardResponse(msg="Forward Completed", status=200)

    def Status(self, request, context):
        with self.cond:
            self.statuses.setdefault("-".join(request.uuid), {})[request.pp_idx] = request.cost_time
            self.cond.notify_all()
        return pb2.StatusResponse(msg="Successful", status=200)

    def Health(self, request, context):
        return pb2.HealthResponse(msg="Healthy", status=200)

    def SetConfig(self, request, context):
        return pb2.SetConfigResponse(msg="SetConfig Completed", status=200)

    def wait(self, key: str, stages: int, timeout: float = PP_TIMEOUT):
        """(hidden [n, hidden], {stage: cost}) once the last stage's Forward and every Status came."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (key in self.results and set(range(stages)) <= set(self.statuses.get(key, {}))):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"step {key}: result {'in' if key in self.results else 'missing'}, "
                                       f"statuses from {sorted(self.statuses.get(key, {}))} of {stages} stages")
                self.cond.wait(left)
            return self.results.pop(key), self.statuses.pop(key)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--http_port", type=int, default=8022)
    ap.add_argument("--grpc_port", type=int, default=25001)
    ap.add_argument("--hostname", default="127.0.0.1", help="the master's address for workers")
    ap.add_argument("--model", required=True, help="the GGUF file (repo_path for workers)")
    ap.add_argument("--client_size", type=int, default=1)
    ap.add_argument("--prompt", action="append", default=[], help="a user message (repeatable)")
    ap.add_argument("--prompt_ids", action="append", default=[], help="comma-separated token ids (repeatable)")
    ap.add_argument("--max_tokens", type=int, default=24)
    ap.add_argument("--wait", type=float, default=120, help="seconds to wait for a complete route")
    args = ap.parse_args()

    model = GGUFModel(args.model)
    registry = Registry(model.layers, args.client_size, args.model)
    inbox = Inbox()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=GRPC_OPTIONS)
    pb2_grpc.add_RPCServiceServicer_to_server(inbox, grpc_server)
    if not grpc_server.add_insecure_port(f"[::]:{args.grpc_port}"):
        raise SystemExit(f"cannot listen on gRPC port {args.grpc_port}")
    grpc_server.start()
    http = http_server(args.http_port, registry)
    log("master", f"HTTP on {args.http_port}, gRPC on {args.grpc_port}, ranges {registry.ranges}")

    # What the master computes itself: embedding, final norm, LM head; the tokenizer.
    embedding = model.tensor("token_embd.weight")
    head = embedding if "output.weight" not in model.tensors else model.head_weight()
    final_norm = model.tensor("output_norm.weight")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    stop_ids = {int(model.field("tokenizer.ggml.eos_token_id", 2))}
    if tokenizer.token_to_id("<|eot_id|>") is not None:
        stop_ids.add(tokenizer.token_to_id("<|eot_id|>"))

    if not registry.complete.wait(args.wait):
        raise SystemExit(f"no complete route within {args.wait} s: {registry.workers}")
    route = registry.route()
    master_url = grpc_target(args.hostname, args.grpc_port)
    stubs = [pb2_grpc.RPCServiceStub(channel(w["address"])) for w in route]
    for rank, (w, stub) in enumerate(zip(route, stubs)):
        forward_url = route[rank + 1]["address"] if rank + 1 < len(route) else master_url
        answer = stub.SetConfig(pb2.SetConfigRequest(forward_url=forward_url, master_url=master_url, pp_rank=rank),
                                timeout=10)
        assert answer.status == 200, f"SetConfig to {w['address']}: {answer}"
    log("master", "route: " + " -> ".join(f"{w['address']} [{w['start']}, {w['end']})" for w in route)
        + f" -> {master_url}")

    prompts = [(p, tokenizer.encode(SYSTEM + USER.format(p), add_special_tokens=False).ids) for p in args.prompt]
    prompts += [(None, [int(i) for i in ids.split(",")]) for ids in args.prompt_ids]
    for prompt, prompt_ids in prompts:
        request_id = f"pymaster{uuid.uuid4().hex[:16]}"
        step_ids, generated, costs, finish = prompt_ids, [], [], "length"
        while len(generated) < args.max_tokens:
            x = embedding[step_ids]
            answer = stubs[0].Forward(pb2.ForwardRequest(uuid_list=[request_id],
                                                         input_ids_list=[pb2.InputIds(input_ids=step_ids)],
                                                         hidden_states=encode_tensor(pb2, x)), timeout=PP_TIMEOUT)
            if answer.status != 200:
                raise SystemExit(f"worker 0 refused the step: {answer.status} {answer.msg}")
            hidden, stage_costs = inbox.wait(request_id, len(route))
            assert hidden.shape == (1, model.hidden), hidden.shape
            costs.append([stage_costs[s] for s in range(len(route))])
            logits = rms_norm(hidden[-1], final_norm, model.eps) @ head.T
            token = int(np.argmax(logits))
            generated.append(token)
            if token in stop_ids:
                finish = "stop"
                break
            step_ids = [token]
        text = tokenizer.decode([t for t in generated if t not in stop_ids], skip_special_tokens=False)
        print(json.dumps({"prompt": prompt, "prompt_ids": prompt_ids, "token_ids": generated, "text": text,
                          "finish_reason": finish, "steps": len(costs),
                          "stage_seconds": [round(sum(c[s] for c in costs), 4) for s in range(len(route))]}),
              flush=True)
    http.shutdown()
    grpc_server.stop(grace=1).wait(5)


if __name__ == "__main__":
    sys.exit(main())
