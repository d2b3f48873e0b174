"""Mixed clusters (tllm-protocol.md, all of it): Swift nodes with the Python peers of
Tests/cluster-peers, written to the spec with grpcio and numpy.

- A Swift master drives a Swift worker (layers 0..15) and a Python worker (15..30): greedy outputs
  are compared with `--is_local` on the same model (float16 on the wire may flip a near tie, so
  the agreement is reported and most prompts must match token for token).
- Malformed or stray messages to the Swift master and workers (a Forward for an unknown step, bad
  tensors, a Status from a rank that does not exist, SetConfig with an unreachable address) are
  answered or ignored: every process stays up and the cluster still serves.
- The Python master (a test driver: no OpenAI API) drives two Swift workers: its greedy tokens
  equal the Swift local server's.

Env: TLLM_CLIENT_BIN (default <repo>/.build/debug/tllm.client), plus conftest.py's. The peers run
with sys.executable, which needs Tests/requirements.txt.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from tllm_server_helpers import REQUEST_TIMEOUT, Node, free_port, logs, user

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS = REPO_ROOT / "Tests" / "cluster-peers"
sys.path.insert(0, str(PEERS))
from tllm_peer import channel, encode_tensor, load_stubs

pb2, pb2_grpc = load_stubs()

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Why do cats purr?",
    # 93 prompt tokens: the prefill crosses the wire LZ4-compressed (rows >= 64).
    (
        "Read this and answer: The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
        "France. It is named after the engineer Gustave Eiffel, whose company designed and built the tower from "
        "1887 to 1889. Question: who designed it?"
    ),
]
MAX_TOKENS = 16
HIDDEN = 576  # the default model's width
RPC_DEADLINE = 15  # seconds: an answer to a probe must come within this


def swift_worker(client_bin, master_http: int, name: str, log_dir: Path) -> tuple[Node, int]:
    port = free_port()
    args = [str(client_bin), "--master_addr", f"http://127.0.0.1:{master_http}", "--hostname", "127.0.0.1",
            "--grpc_port", str(port), "--threads", "1"]
    return Node(f"mixed-{name}", args, log_dir), port


def rpc(target: str, method: str, request):
    """(status, msg) of the answer, or the gRPC error code; fails the test when nothing answers in time."""
    try:
        answer = getattr(pb2_grpc.RPCServiceStub(channel(target)), method)(request, timeout=RPC_DEADLINE)
        return answer.status, answer.msg
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} to {target}: no answer in {RPC_DEADLINE}s"
        return error.code(), error.details()


def chat(http: httpx.Client, prompt: str) -> dict:
    r = http.post("/v1/chat/completions", json={"messages": user(prompt), "max_tokens": MAX_TOKENS})
    assert r.status_code == 200, r.text
    return r.json()


def report(label: str, outputs: dict, reference: dict) -> int:
    exact = sum(outputs[p] == reference[p] for p in PROMPTS)
    print(f"{label}: {exact}/{len(PROMPTS)} prompts token-exact with --is_local")
    for p in PROMPTS:
        if outputs[p] != reference[p]:
            print(f"  {p[:40]!r}\n    local: {reference[p]!r}\n    mixed: {outputs[p]!r}")
    return exact


@pytest.fixture(scope="module")
def local(server):
    """prompt -> the Swift --is_local server's greedy completion (text, prompt and completion tokens)."""
    with server.http() as http:
        out = {}
        for p in PROMPTS:
            body = chat(http, p)
            out[p] = (body["choices"][0]["message"]["content"], body["usage"]["prompt_tokens"],
                      body["usage"]["completion_tokens"])
        return out


class Mixed:
    """A Swift master, a Swift worker on layers [0, 15), a Python worker on [15, 30)."""

    def __init__(self, server_bin, client_bin, model, log_dir):
        self.http_port, self.grpc_port = free_port(), free_port()
        self.master = Node("mixed-master", [str(server_bin), "--model_path", str(model), "--http_port", str(self.http_port),
                                      "--grpc_port", str(self.grpc_port), "--hostname", "127.0.0.1",
                                      "--client_size", "2", "--threads", "1",
                                      # The Swift worker reports its memory; this cluster is about mixing,
                                      # so it is answered at once rather than after the planning window.
                                      "--registration_window", "0"], log_dir)
        self.nodes = [self.master]
        # The master gives the first free range to whoever registers first: the Swift worker,
        # then (once the master has recorded it) the Python worker.
        self.swift, self.swift_port = swift_worker(client_bin, self.http_port, "swift-worker", log_dir)
        self.nodes.append(self.swift)
        self.master.wait_for(r"rank 0, layers 0\.\.<15", 90, self.nodes)
        self.log_dir = log_dir
        self.start_python_worker("python-worker")
        self.master.wait_for("pipeline ready", 120, self.nodes)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", trust_env=False,
                                 timeout=REQUEST_TIMEOUT)

    def start_python_worker(self, name: str):
        self.python_port = free_port()
        self.python = Node(f"mixed-{name}", [sys.executable, str(PEERS / "python_worker.py"), "--master_addr",
                                  f"http://127.0.0.1:{self.http_port}", "--hostname", "127.0.0.1",
                                  "--grpc_port", str(self.python_port), "--is_debug"], self.log_dir)
        self.nodes.append(self.python)
        self.master.wait_for(rf"worker py-\w+ at 127\.0\.0\.1:{self.python_port}: rank 1, layers 15\.\.<30", 60,
                             self.nodes)

    @property
    def master_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def check_alive(self):
        for node in self.nodes:
            assert node.alive(), f"{node.name} exited ({node.proc.returncode}):\n{logs(self.nodes)}"

    def stop(self) -> list[int | None]:
        self.http.close()
        return [n.stop() for n in reversed(self.nodes)]


@pytest.fixture(scope="module")
def mixed(server_bin, client_bin, model_path, log_dir):
    c = Mixed(server_bin, client_bin, model_path, log_dir)
    yield c
    codes = c.stop()
    assert all(code == 0 for code in codes), f"exit codes {codes}:\n{logs(c.nodes)}"


def test_swift_master_with_swift_and_python_workers(mixed, local):
    assert "serving layers [15, 30) as pp_rank 1" in mixed.python.text()
    bodies = {p: chat(mixed.http, p) for p in PROMPTS}
    outputs = {p: b["choices"][0]["message"]["content"] for p, b in bodies.items()}
    for p, b in bodies.items():
        assert b["usage"]["prompt_tokens"] == local[p][1], p
    exact = report("Swift master + Swift worker + Python worker", outputs, {p: local[p][0] for p in PROMPTS})
    assert exact >= len(PROMPTS) - 1, logs(mixed.nodes)

    # Several requests at once: the Python worker gets steps with several uuids.
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: chat(mixed.http, p)["choices"][0]["message"]["content"], PROMPTS))
    same = sum(t == outputs[p] for t, p in zip(together, PROMPTS))
    print(f"concurrent requests: {same}/{len(PROMPTS)} as when alone")
    assert same >= len(PROMPTS) - 1
    assert re.search(r"step: [2-9] request\(s\)", mixed.python.text()), "the Python worker never saw a batched step"
    mixed.check_alive()


def test_stray_and_malformed_messages_are_answered(mixed, local):
    master, swift, python = mixed.master_target, f"127.0.0.1:{mixed.swift_port}", f"127.0.0.1:{mixed.python_port}"
    rows2 = encode_tensor(pb2, np.zeros((2, HIDDEN), np.float32))

    def forward(tensor=None, ids=(1, 2), uuid="probe-step"):
        return pb2.ForwardRequest(uuid_list=[uuid], input_ids_list=[pb2.InputIds(input_ids=list(ids))],
                                  hidden_states=tensor)

    # The master: a Forward for a step it never sent, Statuses from ranks that do not exist.
    assert rpc(master, "Forward", forward(rows2)) == (200, "Forward Completed")
    assert rpc(master, "Status", pb2.StatusRequest(uuid=["probe-step"], pp_idx=7, cost_time=0.1)) == (200, "Successful")
    assert rpc(master, "Status", pb2.StatusRequest(uuid=["probe-step"], pp_idx=-1)) == (200, "Successful")
    # Always acknowledged (section 2), even when the tensor is unusable.
    assert rpc(master, "Forward", forward(pb2.BFloat16Tensor(data=b"abc", shape=[2, HIDDEN]))) == (200, "Forward Completed")
    assert rpc(master, "Forward", forward(None)) == (200, "Forward Completed")
    for target in (master, swift, python):
        assert rpc(target, "ImageForward", pb2.ImageForwardRequest(uuid=["x"]))[0] in (
            grpc.StatusCode.UNIMPLEMENTED, 501)
        assert rpc(target, "Health", pb2.Empty()) == (200, "Healthy")

    # The workers: malformed tensors are refused with INVALID_ARGUMENT (and a message) before anything is
    # queued. Each carries its own uuid, bad-<worker>-<i>.
    def malformed(tag: str) -> list:
        u = [f"bad-{tag}-{i}" for i in range(9)]
        return [
            forward(pb2.BFloat16Tensor(data=b"abc", shape=[2, HIDDEN]), uuid=u[0]),  # too short
            forward(pb2.BFloat16Tensor(data=b"\x04\x22\x4d\x18garbage" * 9, shape=[64, HIDDEN]), ids=range(64),
                    uuid=u[1]),  # bad LZ4
            forward(pb2.BFloat16Tensor(data=bytes(4 * HIDDEN), shape=[2, HIDDEN, 1]), uuid=u[2]),  # 3-d
            forward(encode_tensor(pb2, np.zeros((2, 100), np.float32)), uuid=u[3]),  # wrong width
            forward(encode_tensor(pb2, np.zeros((3, HIDDEN), np.float32)), uuid=u[4]),  # rows != input ids
            forward(pb2.BFloat16Tensor(data=b"", shape=[-2, HIDDEN]), uuid=u[5]),
            forward(pb2.BFloat16Tensor(data=b"", shape=[2**31 - 1, 2**31 - 1]), uuid=u[6]),
            forward(None, uuid=u[7]),
            pb2.ForwardRequest(uuid_list=[u[8], u[8] + "-b"], input_ids_list=[pb2.InputIds(input_ids=[1, 2])],
                               hidden_states=rows2),  # two uuids, one input id list
        ]

    def python_steps() -> int:  # steps the Python worker computed (--is_debug logs each)
        return len(re.findall(r"step: \d+ request\(s\)", mixed.python.text()))

    for tag, target in (("swift", swift), ("python", python)):
        for request in malformed(tag):
            code, message = rpc(target, "Forward", request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and message, f"{request.uuid_list}: {code} {message!r}"
        assert rpc(target, "Status", pb2.StatusRequest(uuid=["x"], pp_idx=9)) == (200, "Successful")
        # Nothing computed or relayed: both workers compute in arrival order and relay a step before the next, so
        # once a good step sent now has reached the master (through the Python worker, the last stage), a bad one
        # computed before it would have shown: one more Python step, or its uuid in a log (a compute or relay
        # failure, or the master's "Forward for unknown step").
        steps = python_steps()
        assert rpc(target, "Forward", forward(rows2, uuid=f"good-after-{tag}")) == (200, "Forward Completed")
        mixed.master.wait_for(rf"Forward for unknown step good-after-{tag} ignored", 60, mixed.nodes)
        assert python_steps() == steps + 1, (
            f"the Python worker computed {python_steps() - steps} steps, not 1:\n{mixed.python.text()[-4000:]}")
        for node in mixed.nodes:
            assert f"bad-{tag}-" not in node.text(), f"{node.name} saw a malformed step:\n{logs(mixed.nodes)}"

    # SetConfig on worker 0 with addresses that do not parse: refused, and the route stays.
    code, message = rpc(swift, "SetConfig", pb2.SetConfigRequest(forward_url="not a target", master_url="::::",
                                                                 pp_rank=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message, (code, message)
    assert "results go to not a target" not in mixed.swift.text()
    mixed.check_alive()
    assert chat(mixed.http, PROMPTS[0])["choices"][0]["message"]["content"] == local[PROMPTS[0]][0]

    # Then with a port nobody listens on (for results and Status alike): answered; a request then fails once its
    # step times out (10 s, RemotePipeline) instead of hanging (bounded generously: a busy debug build is slow);
    # the right SetConfig repairs the route.
    nowhere = f"127.0.0.1:{free_port()}"
    assert rpc(swift, "SetConfig", pb2.SetConfigRequest(forward_url=nowhere, master_url=nowhere, pp_rank=0)) == (
        200, "SetConfig Completed")
    bound = 30.0
    started = time.monotonic()
    r = mixed.http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 2}, timeout=bound + 30)
    elapsed = time.monotonic() - started
    print(f"request through an unreachable hop: HTTP {r.status_code} after {elapsed:.1f} s")
    assert r.status_code >= 500, r.text
    assert elapsed < bound, f"the request through an unreachable hop took {elapsed:.1f} s (step timeout 10 s)"
    assert rpc(swift, "SetConfig", pb2.SetConfigRequest(forward_url=python, master_url=master, pp_rank=0)) == (
        200, "SetConfig Completed")
    assert chat(mixed.http, PROMPTS[0])["choices"][0]["message"]["content"] == local[PROMPTS[0]][0]
    assert mixed.http.get("/health").status_code == 200
    mixed.check_alive()


def test_python_master_drives_swift_workers(client_bin, model_path, log_dir, local):
    http_port, grpc_port = free_port(), free_port()
    args = [sys.executable, str(PEERS / "python_master.py"), "--http_port", str(http_port), "--grpc_port",
            str(grpc_port), "--model", str(model_path), "--client_size", "2", "--max_tokens", str(MAX_TOKENS)]
    for p in PROMPTS:
        args += ["--prompt", p]
    master = Node("python-master", args, log_dir)
    nodes = [master]
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(trust_env=False, timeout=2) as http:
            while True:
                assert master.alive(), logs(nodes)
                assert time.monotonic() < deadline, f"the Python master never answered /health:\n{logs(nodes)}"
                try:
                    if http.get(f"http://127.0.0.1:{http_port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
        ports = []
        for i in range(2):
            node, port = swift_worker(client_bin, http_port, f"pm-swift-worker{i}", log_dir)
            nodes.append(node)
            ports.append(port)
        try:
            master.proc.wait(180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the Python master did not finish in 180 s:\n{logs(nodes)}")
        assert master.proc.returncode == 0, logs(nodes)
        results = [json.loads(line) for line in master.stdout.read_text().splitlines() if line.startswith("{")]
        assert [r["prompt"] for r in results] == PROMPTS, logs(nodes)
        # Each Swift worker took SetConfig from the Python master: results to the next hop.
        text = "\n".join(n.text() for n in nodes[1:])
        assert re.search(rf"pp_rank 1: results go to 127\.0\.0\.1:{grpc_port}, status to 127\.0\.0\.1:{grpc_port}",
                         text), text
        assert re.search(rf"pp_rank 0: results go to 127\.0\.0\.1:({ports[0]}|{ports[1]})", text), text
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    for r in results:
        assert len(r["prompt_ids"]) == local[r["prompt"]][1], r["prompt"]  # the same chat template
    outputs = {r["prompt"]: r["text"] for r in results}
    exact = report("Python master + two Swift workers", outputs, {p: local[p][0] for p in PROMPTS})
    same_length = sum(len(r["token_ids"]) == local[r["prompt"]][2] for r in results)
    print(f"  completion lengths equal: {same_length}/{len(PROMPTS)}")
    assert exact >= len(PROMPTS) - 1
    assert all(code == 0 for code in codes), f"exit codes {codes}:\n{logs(nodes)}"


def test_a_lost_python_worker_is_replaced(mixed, local):
    """The master's health checks (every 10 s) drop a dead stage; a new Python worker gets its range,
    SetConfig re-routes the Swift worker to it, and the cluster serves again."""
    mixed.python.proc.kill()
    mixed.python.proc.wait(10)
    mixed.nodes.remove(mixed.python)
    mixed.master.wait_for(r"failed its health check", 40, mixed.nodes)
    r = mixed.http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 2})
    assert r.status_code == 503, r.text
    mixed.start_python_worker("python-worker-2")
    mixed.swift.wait_for(rf"pp_rank 0: results go to 127\.0\.0\.1:{mixed.python_port}", 60, mixed.nodes)
    mixed.master.wait_for(r"pipeline ready(.|\n)*pipeline ready", 30, mixed.nodes)
    assert chat(mixed.http, PROMPTS[0])["choices"][0]["message"]["content"] == local[PROMPTS[0]][0]
    mixed.check_alive()


def test_a_worker_that_survives_a_master_restart_is_routed_again(server_bin, model_path, log_dir):
    """Section 3: a worker whose master went away registers again, stating its range (pp_rank,
    start_idx, end_idx), and sends no /init_model (the original does not); the master records it
    and rebuilds the route. One Python worker holds all 30 layers; it checks the master every 2 s."""
    http_port, grpc_port = free_port(), free_port()
    master_args = [str(server_bin), "--model_path", str(model_path), "--http_port", str(http_port), "--grpc_port",
                   str(grpc_port), "--hostname", "127.0.0.1", "--client_size", "1", "--threads", "1"]
    master = Node("restart-master", master_args, log_dir)
    worker = Node("restart-python-worker", [sys.executable, str(PEERS / "python_worker.py"), "--master_addr",
                                            f"http://127.0.0.1:{http_port}", "--hostname", "127.0.0.1",
                                            "--ping_interval", "2"], log_dir)
    nodes = [master, worker]
    try:
        master.wait_for("pipeline ready", 120, nodes)
        assert master.stop() == 0, logs(nodes)
        worker.wait_for("the master does not answer", 30, [worker])
        master = Node("restart-master-2", master_args, log_dir)
        nodes = [master, worker]
        worker.wait_for("registered again", 60, nodes)
        master.wait_for(r"worker py-\w+ at 127\.0\.0\.1:\d+: rank 0, layers 0\.\.<30", 10, nodes)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", trust_env=False, timeout=REQUEST_TIMEOUT) as http:
            deadline = time.monotonic() + 15
            while True:
                r = http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 2})
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(1)
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{logs(nodes)}"
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert all(code == 0 for code in codes), f"exit codes {codes}:\n{logs(nodes)}"
