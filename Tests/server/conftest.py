"""Fixtures for the end-to-end tests of the OpenAI-compatible server `tllm.server`.

Contract: shared/spec/tllm-protocol.md section 4, docs/server.md.

Run:  python -m pytest Tests/server          (from the repo root, any venv with
      Tests/requirements.txt: openai, aiohttp, httpx, pytest)
Env:  TLLM_SERVER_BIN     the server (default <repo>/.build/debug/tllm.server)
      TLLM_GENERATE_BIN   the reference generator (default <repo>/.build/debug/tllm-generate)
      TLLM_DEFAULT_MODEL  the model (default <repo>/models/SmolLM2-135M-Instruct.Q4_1.gguf)
      CI                  when set, a missing binary or model is a test failure instead of a skip

Most tests share one session-scoped server (`server`); tests that need special flags
start short-lived ones with `start_server(...)`. Every server's stdout and stderr go to
files; a failing test shows the tail of the logs of the servers it used.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tllm_server_helpers import GENERATE_TIMEOUT, THREADS, TllmServer

REPO_ROOT = Path(__file__).resolve().parents[2]


# Never send loopback test traffic through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    _have = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_have, "127.0.0.1", "localhost") if x)


# --------------------------------------------------------------------------
# Binaries and model


def _path_from_env(var: str, default: Path) -> Path:
    p = Path(os.environ.get(var) or default)
    return p if p.is_absolute() else REPO_ROOT / p


def _missing(msg: str):
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def _executable(var: str, name: str) -> Path:
    p = _path_from_env(var, REPO_ROOT / ".build" / "debug" / name)
    if not (p.is_file() and os.access(p, os.X_OK)):
        _missing(f"{name} binary not found at {p} (build it with `swift build` or set {var})")
    return p


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return _executable("TLLM_SERVER_BIN", "tllm.server")


@pytest.fixture(scope="session")
def generate_bin() -> Path:
    return _executable("TLLM_GENERATE_BIN", "tllm-generate")


@pytest.fixture(scope="session")
def client_bin() -> Path:
    path = Path(os.environ.get("TLLM_CLIENT_BIN", REPO_ROOT / ".build/debug/tllm.client"))
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing")
        pytest.skip(f"{path} is missing: swift build --product tllm.client")
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    p = _path_from_env("TLLM_DEFAULT_MODEL", REPO_ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not p.exists():
        _missing(f"model not found at {p} (run scripts/fetch-default-model.sh or set TLLM_DEFAULT_MODEL)")
    return p


# --------------------------------------------------------------------------
# The server process


@pytest.fixture(scope="session")
def log_dir(request) -> Path:
    """Server logs; kept when a test failed (the reports name the files)."""
    d = Path(tempfile.mkdtemp(prefix="tllm-server-test-", dir="/tmp"))
    yield d
    if request.session.testsfailed == 0:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def server(server_bin, model_path, log_dir):
    """The shared server: default flags. test_shared_server.py (marked run_last) checks that it
    never crashed and exits 0 on SIGTERM; this teardown only stops it."""
    s = TllmServer(server_bin, model_path, log_dir, "shared")
    yield s
    s.terminate()


@pytest.fixture(autouse=True)
def _shared_server_alive(request):
    """When the shared server died in an earlier test (that test failed), start it again on the
    same port so that the following tests still say something; test_shared_server.py then
    fails listing every crash."""
    if "server" in request.fixturenames:
        s = request.getfixturevalue("server")
        if not s.alive():
            s.restart()
    yield


@pytest.fixture
def start_server(server_bin, model_path, log_dir, request):
    """Factory: start_server(name, **flags) -> TllmServer with extra flags (e.g. api_key="k",
    max_queue=1) and optionally `env={...}` (extra environment variables); each must exit 0
    within 10 s of SIGTERM at teardown."""
    started: list[TllmServer] = []

    def start(name: str = "custom", **flags) -> TllmServer:
        s = TllmServer(server_bin, model_path, log_dir, name, **flags)
        started.append(s)
        request.node._tllm_servers = getattr(request.node, "_tllm_servers", []) + [s]
        return s

    yield start
    bad = []
    for s in started:
        if s.stopped:  # the test stopped it and checked how
            continue
        if not s.alive():
            bad.append(f"`{s.cmdline}` died during the test (exit code {s.proc.returncode}); logs:\n{s.log_tail()}")
            continue
        rc = s.terminate()
        if rc != 0:
            bad.append(f"`{s.cmdline}`: exit code {rc} after SIGTERM; logs:\n{s.log_tail()}")
    assert not bad, "\n".join(bad)


@pytest.fixture
def worker_port():
    """A listening TCP socket standing in for a worker's gRPC port (registration pings it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="session")
def client(server) -> openai.OpenAI:
    c = server.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def http(server) -> httpx.Client:
    c = server.http()
    yield c
    c.close()


@pytest.fixture(scope="session")
def model_info(http) -> dict:
    r = http.get("/v1/models")
    assert r.status_code == 200, f"GET /v1/models: {r.status_code} {r.text}"
    data = r.json()["data"]
    assert data, "GET /v1/models lists no model"
    return data[0]


@pytest.fixture(scope="session")
def model_id(model_info) -> str:
    return model_info["id"]


# --------------------------------------------------------------------------
# The reference: tllm-generate


@dataclass
class Generated:
    text: str
    prompt_tokens: int | None
    generated_tokens: int | None
    stderr: str


@pytest.fixture(scope="session")
def generate(generate_bin, model_path):
    """generate(prompt, max_tokens, raw=False) -> Generated: greedy `tllm-generate` output (the
    trailing newline of stdout removed), cached per (prompt, max_tokens, raw)."""
    cache: dict = {}

    def run(prompt: str, max_tokens: int, raw: bool = False) -> Generated:
        key = (prompt, max_tokens, raw)
        if key in cache:
            return cache[key]
        args = [
            str(generate_bin),
            "--model_path", str(model_path),
            "--prompt", prompt,
            "--max_tokens", str(max_tokens),
            "--threads", str(THREADS),
        ]  # fmt: skip
        if raw:
            args.append("--raw")
        try:
            p = subprocess.run(
                args, stdin=subprocess.DEVNULL, capture_output=True, timeout=GENERATE_TIMEOUT, cwd=REPO_ROOT
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`tllm-generate --prompt {prompt!r}` did not exit within {GENERATE_TIMEOUT}s")
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 0, f"tllm-generate exited {p.returncode}; stderr:\n{err}"
        out = p.stdout.decode("utf-8", "replace")
        assert out.endswith("\n"), f"tllm-generate stdout does not end with a newline: {out!r}"
        m = re.search(r"prompt (\d+) tokens.*?generated (\d+) tokens", err, re.S)
        g = Generated(out[:-1], int(m.group(1)) if m else None, int(m.group(2)) if m else None, err)
        cache[key] = g
        return g

    return run


# --------------------------------------------------------------------------
# Server logs in failure reports


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    # Servers from start_server(...) and, through the fixture closure, the shared `server`.
    servers = list(getattr(item, "_tllm_servers", []))
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, TllmServer) and value not in servers:
            servers.append(value)
    for s in servers:
        report.sections.append((f"tllm.server logs ({s.name}, port {s.port})", s.log_tail()))


# --------------------------------------------------------------------------
# Order


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "run_last: runs after every other test of the session, whatever order the files come in")


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `run_last` go to the end of the session (the shared server's final check,
    which must see every test that used it), whichever directories and files were given."""
    last = [item for item in items if item.get_closest_marker("run_last")]
    items[:] = [item for item in items if not item.get_closest_marker("run_last")] + last
