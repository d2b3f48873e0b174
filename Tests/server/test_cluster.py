"""A Swift master with Swift workers as separate processes on loopback (tllm-protocol.md, all of
it): registration, SetConfig, Forward hops with float16 (+ LZ4) tensors, Status reports. Greedy
outputs are compared with `--is_local` on the same model; the float16 rounding on the wire may
flip a near tie, so the agreement is reported and most prompts must match token for token.

Env: TLLM_CLIENT_BIN (default <repo>/.build/debug/tllm.client), plus conftest.py's.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from tllm_server_helpers import CLUSTER_PROMPTS, REQUEST_TIMEOUT, Node, free_port, logs, user, wait_until_generating

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = CLUSTER_PROMPTS
MAX_TOKENS = 24


class Cluster:
    def __init__(self, server_bin: Path, client_bin: Path, model: Path, log_dir: Path, workers: int, tag: str,
                 start_workers_first: bool = False, client_size: int | None = None,
                 worker_memory: list[str] | None = None, master_flags: tuple[str, ...] = ()):
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.nodes: list[Node] = []
        master_args = [str(server_bin), "--model_path", str(model), "--http_port", str(self.http_port),
                       "--grpc_port", str(free_port()), "--hostname", "127.0.0.1", "--client_size", str(client_size or max(workers, 1)),
                       "--threads", "1", *master_flags]
        worker_args = [str(client_bin), "--master_addr", self.url, "--hostname", "127.0.0.1", "--threads", "1"]
        self.master_args, self.worker_args, self.log_dir, self.tag = master_args, worker_args, log_dir, tag

        def worker(i: int) -> Node:
            memory = ["--memory", worker_memory[i]] if worker_memory else []
            return Node(f"{tag}-worker{i}", worker_args + memory, log_dir)

        if start_workers_first:
            self.nodes += [worker(i) for i in range(workers)]
            time.sleep(2)
            self.nodes.insert(0, Node(f"{tag}-master", master_args, log_dir))
        else:
            self.nodes.append(Node(f"{tag}-master", master_args, log_dir))
            self.nodes += [worker(i) for i in range(workers)]
        self.http = httpx.Client(base_url=self.url, trust_env=False, timeout=REQUEST_TIMEOUT)

    @property
    def master(self) -> Node:
        return self.nodes[0]

    def wait_ready(self, timeout: float = 90):
        """Until generation works (every layer covered, SetConfig done)."""
        wait_until_generating(self.http, self.nodes, timeout, self.tag)

    def chat(self, prompt: str, **kw) -> str:
        r = self.http.post("/v1/chat/completions", json={"messages": user(prompt), "max_tokens": MAX_TOKENS, **kw})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    def logs(self) -> str:
        return logs(self.nodes)

    def stop(self) -> list[int | None]:
        self.http.close()
        return [n.stop() for n in reversed(self.nodes)]


@pytest.fixture
def cluster(server_bin, client_bin, model_path, log_dir):
    made: list[Cluster] = []

    def make(workers: int, tag: str, **kw) -> Cluster:
        c = Cluster(server_bin, client_bin, model_path, log_dir, workers, tag, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        codes = c.stop()
        assert all(code == 0 for code in codes), f"exit codes {codes}:\n{c.logs()}"


@pytest.fixture(scope="module")
def local_outputs(server):
    with server.http() as http:
        outputs = {}
        for prompt in PROMPTS:
            r = http.post("/v1/chat/completions", json={"messages": user(prompt), "max_tokens": MAX_TOKENS})
            assert r.status_code == 200, r.text
            outputs[prompt] = r.json()["choices"][0]["message"]["content"]
        return outputs


@pytest.mark.parametrize("workers", [2, 3])
def test_pipeline_matches_local(cluster, local_outputs, workers):
    c = cluster(workers, f"pp{workers}")
    c.wait_ready()
    outputs = {prompt: c.chat(prompt) for prompt in PROMPTS}
    exact = sum(outputs[p] == local_outputs[p] for p in PROMPTS)
    print(f"{workers} workers: {exact}/{len(PROMPTS)} prompts token-exact with --is_local")
    assert exact >= len(PROMPTS) - 1, "\n".join(
        f"{p!r}\n  local:   {local_outputs[p]!r}\n  cluster: {outputs[p]!r}" for p in PROMPTS)
    for p in PROMPTS:
        shared = next((i for i, (a, b) in enumerate(zip(outputs[p], local_outputs[p])) if a != b),
                      min(len(outputs[p]), len(local_outputs[p])))
        assert shared >= min(20, len(local_outputs[p])), f"{p!r} diverges at character {shared}"

    # Streaming gives the same text; several requests at once give what each gives alone.
    with c.http.stream("POST", "/v1/chat/completions",
                       json={"messages": user(PROMPTS[0]), "max_tokens": MAX_TOKENS, "stream": True}) as r:
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in r.iter_lines() if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert text == outputs[PROMPTS[0]]

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(c.chat, PROMPTS))
    assert together == [outputs[p] for p in PROMPTS]
    assert "pipeline ready" in c.master.text()


def test_layers_follow_the_memory_workers_report(cluster, local_outputs):
    """Workers that report 1 GiB and 3 GiB within the registration window get a quarter and three
    quarters of the 30 layers (whichever registers first takes the first range); outputs still
    equal --is_local."""
    c = cluster(2, "memory", worker_memory=["1GiB", "3GiB"])
    c.wait_ready()
    assert re.search(r"layer plan weighted by memory \(all 2 workers registered\)", c.master.text()), c.logs()
    served = {}
    for worker, gib in zip(c.nodes[1:], (1, 3)):
        start, end = map(int, worker.wait_for(r"serving layers \[(\d+), (\d+)\)", 30, c.nodes).groups())
        served[gib] = end - start
    # 30 × 1/4 = 7.5 and 30 × 3/4 = 22.5: the tie goes to the first range.
    assert sorted(served.items()) in ([(1, 8), (3, 22)], [(1, 7), (3, 23)]), served
    outputs = {prompt: c.chat(prompt) for prompt in PROMPTS}
    exact = sum(outputs[p] == local_outputs[p] for p in PROMPTS)
    print(f"memory-weighted 2 workers ({served}): {exact}/{len(PROMPTS)} prompts token-exact with --is_local")
    assert exact >= len(PROMPTS) - 1, outputs


CONCURRENT_PROMPTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers.",
    "Why do cats purr?", "Name a famous painter.", "What is 12 times 12?", "Describe a rainbow.",
    "Give me a tip for sleeping well.",
]


def test_steps_in_flight_give_the_same_text(cluster):
    """8 concurrent requests on 3 stages: with one step per stage in flight (lanes of requests
    computed by different stages at once) the texts equal those of one step at a time."""
    def run(tag: str, *flags: str) -> tuple[list[str], str]:
        c = cluster(3, tag, master_flags=("--is_debug", *flags))
        c.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(len(CONCURRENT_PROMPTS)) as pool:
            texts = list(pool.map(lambda p: c.chat(p, max_tokens=32), CONCURRENT_PROMPTS))
        log = c.master.text()
        for code in c.stop():
            assert code == 0, c.logs()
        return texts, log

    serial, serial_log = run("serial", "--max_steps_in_flight", "1")
    overlapped, overlapped_log = run("inflight")
    assert overlapped == serial
    assert not re.search(r"lane [12] of", serial_log)
    lanes = set(re.findall(r"\(lane (\d) of 3\)", overlapped_log))
    assert lanes == {"0", "1", "2"}, f"steps ran on lanes {lanes}"


def test_worker_started_before_its_master_waits(cluster):
    c = cluster(1, "early", start_workers_first=True)
    c.wait_ready()
    assert c.chat(PROMPTS[0])
    assert "waiting for the master" in c.nodes[1].text()


def test_master_without_workers_answers_503(cluster):
    c = cluster(0, "lonely")
    deadline = time.monotonic() + 60
    while True:
        try:
            r = c.http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 2})
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, c.logs()
            time.sleep(0.2)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "No available Full Node to process the request"
    assert int(r.headers["retry-after"]) > 0


def test_a_standby_for_the_same_layers_takes_over_a_dead_stage(cluster):
    """Three workers for two ranges: the third duplicates one (the spec's "random range"). When
    the route's worker for that range dies (kill -9), the master's health check drops it and
    routes through the standby at once; nothing is restarted."""
    c = cluster(3, "standby", client_size=2)
    workers = c.nodes[1:]
    served = {}
    for node in workers:
        port = int(node.wait_for(r"worker gRPC on port (\d+)", 60, c.nodes).group(1))
        m = node.wait_for(r"serving layers \[(\d+), (\d+)\)", 90, c.nodes)
        served[port] = (node, (int(m.group(1)), int(m.group(2))))
    c.wait_ready()
    before = c.chat(PROMPTS[0])
    route = re.findall(r":(\d+) \[(\d+), (\d+)\)", c.master.wait_for(r"pipeline ready: [^\n]*", 30).group(0))
    route_ports = {int(port) for port, _, _ in route}
    (standby_port,) = set(served) - route_ports
    standby, layers = served[standby_port]
    (victim,) = [node for port, (node, r) in served.items() if port in route_ports and r == layers]

    victim.proc.kill()
    victim.proc.wait(10)
    c.nodes.remove(victim)  # killed on purpose: its exit code is not a failure
    deadline = time.monotonic() + 60
    while True:
        r = c.http.post("/v1/chat/completions", json={"messages": user(PROMPTS[0]), "max_tokens": MAX_TOKENS})
        if r.status_code == 200:
            break
        # Until the health check notices, requests fail on the broken route (500) or find none (503).
        assert r.status_code in (500, 503) and r.json()["error"]["message"], r.text
        assert time.monotonic() < deadline, f"no route through the standby in 60 s:\n{c.logs()}"
        time.sleep(0.5)
    assert r.json()["choices"][0]["message"]["content"] == before
    assert re.search(rf"pipeline ready: [^\n]*:{standby_port} \[{layers[0]}, {layers[1]}\)", c.master.text()), c.logs()


def test_a_stage_whose_next_hop_died_fails_the_step_at_once(cluster):
    """kill -9 the last worker: the first one cannot forward its result and says so to the master
    (a Status with a negative cost_time), so the request ends with a clear error at once instead
    of at the 10 s step deadline. (If the master's 10 s health check notices the dead worker
    first, the route is gone and the answer is 503: also at once.)"""
    c = cluster(2, "deadhop")
    c.wait_ready()
    last = next(n for n in c.nodes[1:] if re.search(r"serving layers \[\d+, 30\)", n.text()))
    last.proc.kill()
    last.proc.wait(10)
    c.nodes.remove(last)  # killed on purpose
    started = time.monotonic()
    r = c.http.post("/v1/chat/completions", json={"messages": user(PROMPTS[0]), "max_tokens": MAX_TOKENS})
    elapsed = time.monotonic() - started
    assert r.status_code in (500, 503), r.text
    message = r.json()["error"]["message"]
    print(f"dead next hop: {r.status_code} after {elapsed:.2f} s: {message}")
    if r.status_code == 500:
        assert "stage 0 could not complete" in message, message
    # Failing fast means not waiting for the 10 s step deadline: the cause is the refused
    # connection (or the missing route), never a deadline.
    assert "deadline" not in message.lower(), message
    assert elapsed < 9, f"the request took {elapsed:.1f} s to fail: {message}\n{c.logs()}"
    # The master keeps serving: health, models, and 503 until a worker covers the layers again.
    assert c.http.get("/health").status_code == 200
    assert c.http.get("/v1/models").status_code == 200


def stream_until_end(c: Cluster, prompt: str, max_tokens: int, started: threading.Event) -> dict:
    """One streaming request read to its end: its text, an error event if any, whether [DONE]
    came, and when the stream ended. `started` is set once three text chunks arrived."""
    result = {"text": "", "error": None, "done": False, "chunks": 0}
    body = {"messages": user(prompt), "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    with c.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line == "data: [DONE]":
                result["done"] = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    result["error"] = event["error"]
                elif event["choices"] and event["choices"][0]["delta"].get("content"):
                    result["text"] += event["choices"][0]["delta"]["content"]
                    result["chunks"] += 1
                    if result["chunks"] >= 3:
                        started.set()
    result["ended"] = time.monotonic()
    started.set()
    return result


def test_kill_9_a_worker_mid_generation_then_restart_it(cluster):
    """kill -9 the last worker while two streams and a plain request generate: each ends with a
    clear error (an error event then [DONE] for streams, a 500 in OpenAI's shape otherwise) within
    the 10 s step deadline; the master keeps answering /health and /v1/models, and new requests get
    503 with Retry-After; a worker started again registers, and requests succeed with the same text."""
    c = cluster(2, "kill9")
    c.wait_ready()
    reference = c.chat(PROMPTS[1])
    last = next(n for n in c.nodes[1:] if re.search(r"serving layers \[\d+, 30\)", n.text()))
    events = [threading.Event() for _ in range(2)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(stream_until_end, c, p, 2000, e) for p, e in zip(PROMPTS[2:], events)]
        plain = pool.submit(c.http.post, "/v1/chat/completions",
                            json={"messages": user(PROMPTS[0]), "max_tokens": 2000, "ignore_eos": True})
        for event in events:
            assert event.wait(60), c.logs()
        last.proc.kill()
        killed = time.monotonic()
        last.proc.wait(10)
        c.nodes.remove(last)  # killed on purpose: its exit code is not a failure
        results = [s.result(timeout=60) for s in streams]
        answer = plain.result(timeout=60)
    for result in results:
        assert result["error"] and result["error"]["message"], result
        assert result["done"], result
        # Ended by the failure, not left to the 600 s request timeout (the bound is generous: a
        # busy machine may take the step deadline and some).
        assert result["ended"] - killed < 40, f"the stream ended {result['ended'] - killed:.1f} s after the kill"
        assert 0 < result["chunks"] < 2000
    assert answer.status_code == 500, answer.text
    assert answer.json()["error"]["message"]
    print(f"after kill -9: streams ended {[round(r['ended'] - killed, 2) for r in results]} s later with "
          f"{results[0]['error']['message']!r}; plain request: {answer.json()['error']['message']!r}")

    assert c.http.get("/health").status_code == 200
    assert c.http.get("/v1/models").status_code == 200
    deadline = time.monotonic() + 30
    while True:  # 503 once the health check (every 10 s) has dropped the dead stage
        r = c.http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 2})
        if r.status_code == 503:
            break
        assert r.status_code == 500 and r.json()["error"]["message"], r.text
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.5)
    assert int(r.headers["retry-after"]) > 0

    c.nodes.append(Node(f"{c.tag}-restarted", c.worker_args, c.log_dir))
    c.wait_ready()
    assert c.chat(PROMPTS[1]) == reference


def test_workers_re_register_with_a_restarted_master(cluster):
    """Restart the master while its workers run: they notice within their 30 s health check, re-register
    with the ranges they hold (no reload), and the next request succeeds without restarting a worker."""
    c = cluster(2, "remaster")
    c.wait_ready()
    reference = c.chat(PROMPTS[0])
    workers = c.nodes[1:]
    assert c.master.stop() == 0
    c.nodes[0] = Node(f"{c.tag}-master-again", c.master_args, c.log_dir)
    c.wait_ready(timeout=120)
    assert c.chat(PROMPTS[0]) == reference
    for worker in workers:
        assert worker.alive()
        assert "the master is back: registering again" in worker.text(), c.logs()
        assert worker.text().count("loaded layers") == 1, "a worker reloaded its layers"
