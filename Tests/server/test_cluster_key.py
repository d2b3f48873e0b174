"""The cluster key (issue 18, docs/cluster.md "Cluster key"): with `--cluster_key` on every node,
registration and every gRPC call between nodes carry `Authorization: Bearer KEY`; a caller
without it gets 401 / UNAUTHENTICATED and nothing it sends is acted on. Real processes: a Swift
master, a Swift worker, a rogue worker made of grpcio (which records every call it receives).

Without a key the protocol stays the original's: test_mixed_cluster.py runs Python tllm workers
against a key-less Swift master.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import sys
import threading
import time
from pathlib import Path

import aiohttp
import grpc
import httpx
import pytest
from tllm_server_helpers import REQUEST_TIMEOUT, Node, free_port, logs, user, wait_until_generating

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "Tests" / "cluster-peers"))
from tllm_peer import GRPC_OPTIONS, channel, load_stubs  # noqa: E402

pb2, pb2_grpc = load_stubs()

KEY = "k3y-for-tests"
PROMPT = "What is the capital of France?"
MAX_TOKENS = 12
RPC_DEADLINE = 15


class Recorder(pb2_grpc.RPCServiceServicer):
    """A rogue worker: answers like one and records every call that reaches it."""

    def __init__(self):
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def _record(self, name):
        with self.lock:
            self.calls.append(name)

    def Health(self, request, context):
        self._record("Health")
        return pb2.HealthResponse(msg="Healthy", status=200)

    def SetConfig(self, request, context):
        self._record("SetConfig")
        return pb2.SetConfigResponse(msg="SetConfig Completed", status=200)

    def Forward(self, request, context):
        self._record("Forward")
        return pb2.ForwardResponse(msg="Forward Completed", status=200)

    def Status(self, request, context):
        self._record("Status")
        return pb2.StatusResponse(msg="Successful", status=200)


def call(target: str, method: str, request, key: str | None):
    """The gRPC status code of a call (OK when it answered)."""
    metadata = [("authorization", f"Bearer {key}")] if key is not None else None
    try:
        getattr(pb2_grpc.RPCServiceStub(channel(target)), method)(request, timeout=RPC_DEADLINE, metadata=metadata)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} to {target}: no answer"
        return error.code()


@pytest.fixture
def keyed(server_bin, client_bin, model_path, log_dir):
    """A Swift master and one Swift worker sharing KEY (the worker gets it from the environment)."""
    http_port, grpc_port, worker_port = free_port(), free_port(), free_port()
    master = Node("keyed-master", [str(server_bin), "--model_path", str(model_path), "--http_port", str(http_port),
                                   "--grpc_port", str(grpc_port), "--hostname", "127.0.0.1", "--client_size", "1",
                                   "--threads", "1", "--cluster_key", KEY], log_dir)
    worker = Node("keyed-worker", [str(client_bin), "--master_addr", f"http://127.0.0.1:{http_port}",
                                   "--hostname", "127.0.0.1", "--grpc_port", str(worker_port), "--threads", "1"],
                  log_dir, env={"TLLM_CLUSTER_KEY": KEY})
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", trust_env=False, timeout=REQUEST_TIMEOUT)
    nodes = [master, worker]
    try:
        wait_until_generating(http, nodes, 90, "keyed")
        yield http, nodes, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{worker_port}"
    finally:
        http.close()
        codes = [n.stop() for n in reversed(nodes)]
        assert codes == [0, 0], f"exit codes {codes}:\n{logs(nodes)}"


def chat(http: httpx.Client) -> str:
    r = http.post("/v1/chat/completions", json={"messages": user(PROMPT), "max_tokens": MAX_TOKENS})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_keyed_cluster_serves_and_refuses_rogues(keyed, server):
    http, nodes, master_grpc, worker_grpc = keyed
    with server.http() as local:
        r = local.post("/v1/chat/completions", json={"messages": user(PROMPT), "max_tokens": MAX_TOKENS})
        assert r.status_code == 200, r.text
        reference = r.json()["choices"][0]["message"]["content"]
    assert chat(http) == reference

    # The monitor says the cluster is keyed and the worker presented the key.
    async def monitor() -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{http.base_url}/ws/monitor".replace("http://", "ws://")) as ws:
                return json.loads((await ws.receive(timeout=10)).data)

    state = asyncio.run(monitor())
    assert state["cluster_key"] is True and [w["authenticated"] for w in state["workers"]] == [True], state

    # A rogue worker listens and tries to register: without the key, and with a wrong one.
    rogue = Recorder()
    rogue_server = grpc.server(concurrent.futures.ThreadPoolExecutor(4), options=GRPC_OPTIONS)
    pb2_grpc.add_RPCServiceServicer_to_server(rogue, rogue_server)
    rogue_port = rogue_server.add_insecure_port("127.0.0.1:0")
    rogue_server.start()
    try:
        body = {"client_id": "rogue", "host": ["127.0.0.1"], "port": rogue_port, "pp_rank": 0, "start_idx": 0,
                "end_idx": 30}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {KEY}x"},
                        {"Authorization": KEY}):
            for path, payload in (("/register_client", body),
                                  ("/init_model", {"client_id": "rogue", "pp_rank": 0, "start_idx": 0,
                                                   "end_idx": 30})):
                r = http.post(path, json=payload, headers=headers)
                assert r.status_code == 401, f"{path} {headers}: {r.status_code} {r.text}"
                assert r.json()["error"]["code"] == "invalid_cluster_key", r.text

        # Calls to the real worker and to the master without the key: UNAUTHENTICATED, never acted on.
        rows = pb2.BFloat16Tensor(data=bytes(2 * 576 * 2), shape=[2, 576])
        forward = pb2.ForwardRequest(uuid_list=["rogue-step"], input_ids_list=[pb2.InputIds(input_ids=[1, 2])],
                                     hidden_states=rows)
        set_config = pb2.SetConfigRequest(forward_url=f"127.0.0.1:{rogue_port}",
                                          master_url=f"127.0.0.1:{rogue_port}", pp_rank=0)
        for key in (None, "wrong", KEY + "x"):
            assert call(worker_grpc, "SetConfig", set_config, key) == grpc.StatusCode.UNAUTHENTICATED
            assert call(worker_grpc, "Forward", forward, key) == grpc.StatusCode.UNAUTHENTICATED
            assert call(worker_grpc, "Health", pb2.Empty(), key) == grpc.StatusCode.UNAUTHENTICATED
            assert call(master_grpc, "Forward", forward, key) == grpc.StatusCode.UNAUTHENTICATED
            assert call(master_grpc, "Status", pb2.StatusRequest(uuid=["rogue-step"], pp_idx=0, cost_time=-1),
                        key) == grpc.StatusCode.UNAUTHENTICATED
        # With the key the same probe is answered: the refusal above was the key, not the request.
        assert call(worker_grpc, "Health", pb2.Empty(), KEY) == grpc.StatusCode.OK

        # The cluster still serves the same text, and the rogue heard nothing: no health check, no
        # SetConfig, no hidden states.
        assert chat(http) == reference
        time.sleep(1)
        assert rogue.calls == [], rogue.calls
        assert "worker rogue" not in logs(nodes), logs(nodes)
        assert "rogue-step" not in nodes[1].text(), "the worker computed a step it should have refused"
    finally:
        rogue_server.stop(0)


def test_worker_without_the_key_cannot_join(server_bin, client_bin, model_path, log_dir):
    http_port = free_port()
    master = Node("keyonly-master", [str(server_bin), "--model_path", str(model_path), "--http_port", str(http_port),
                                     "--hostname", "127.0.0.1", "--client_size", "1", "--threads", "1",
                                     "--cluster_key", KEY], log_dir)
    worker = Node("keyless-worker", [str(client_bin), "--master_addr", f"http://127.0.0.1:{http_port}",
                                     "--hostname", "127.0.0.1", "--threads", "1"], log_dir)
    nodes = [master, worker]
    try:
        # A misconfigured worker says why and exits, rather than retrying forever.
        worker.proc.wait(60)
        assert worker.proc.returncode != 0, logs(nodes)
        assert "requires the cluster key" in worker.text() and "this worker has none" in worker.text(), logs(nodes)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", trust_env=False, timeout=30) as http:
            r = http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 1})
            assert r.status_code == 503, r.text
        assert "pipeline ready" not in master.text(), logs(nodes)
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert codes[1] == 0, logs(nodes)


@pytest.mark.parametrize("hostname,warned", [("127.0.0.1", False), ("0.0.0.0", True)])
def test_open_cluster_is_logged(server_bin, model_path, log_dir, hostname, warned):
    http_port = free_port()
    master = Node(f"open-master-{warned}", [str(server_bin), "--model_path", str(model_path), "--http_port",
                                            str(http_port), "--hostname", hostname, "--client_size", "1",
                                            "--threads", "1"], log_dir)
    try:
        master.wait_for(r"serving ", 60)
        assert ("the cluster is open" in master.text()) == warned, master.text()
    finally:
        assert master.stop() == 0, master.text()
