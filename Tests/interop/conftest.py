"""Fixtures for the gRPC interop tests between grpcio (Python) and tllm-rpc (Swift).

Wire contract: shared/spec/tllm-protocol.md section 2, Protos/schemas.proto.

Run:  python -m pytest Tests/interop            (from the repo root, any venv
      with grpcio, grpcio-tools, numpy, lz4, pytest)
Env:  TLLM_RPC_BIN  path of the Swift binary (default <repo>/.build/debug/tllm-rpc)
      CI            when set, a missing binary is a test failure instead of a skip
"""

from __future__ import annotations

import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import lz4.frame
import numpy as np
import pytest

from grpc_peer_helpers import (  # noqa: F401 (re-exported names the fixtures use)
    REPO_ROOT,
    PROTO_DIR,
    MAX_MESSAGE,
    GRPC_OPTIONS,
    LZ4_FRAME_MAGIC,
    LZ4_MIN_ROWS,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    RPC_TIMEOUT,
    CALL_TIMEOUT,
    to_f16,
    encode_tensor,
    decode_tensor,
    tensor_message,
    make_channel,
    wait_ready,
    Recorded,
    RecordingServicer,
    PyServer,
    SwiftServer,
    CallResult,
)
@pytest.fixture(scope="session")
def pb(tmp_path_factory) -> types.SimpleNamespace:
    """schemas_pb2 / schemas_pb2_grpc generated from Protos/schemas.proto."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("generated")
    # grpc_tools ships the well-known protos; pass its include dir like the CLI does.
    import grpc_tools

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "schemas.proto"),
        ]
    )
    assert rc == 0, f"grpc_tools.protoc failed with {rc}"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("schemas_pb2")
        pb2_grpc = importlib.import_module("schemas_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return types.SimpleNamespace(pb2=pb2, grpc=pb2_grpc)


@pytest.fixture
def short_tmp():
    """A short directory under /tmp (Unix socket paths are limited to ~108 bytes)."""
    d = tempfile.mkdtemp(prefix="tllm-it-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def py_server(pb, short_tmp):
    """grpcio RPCService on [::]:<port> and unix://<short_tmp>/py.sock recording all requests."""
    s = PyServer(pb, str(short_tmp / "py.sock"))
    yield s
    s.stop()


@pytest.fixture(scope="session")
def tllm_rpc_bin() -> Path:
    p = Path(os.environ.get("TLLM_RPC_BIN") or REPO_ROOT / ".build" / "debug" / "tllm-rpc")
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not (p.is_file() and os.access(p, os.X_OK)):
        msg = f"tllm-rpc binary not found at {p} (build it with `swift build` or set TLLM_RPC_BIN)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture
def start_swift_server(tllm_rpc_bin, short_tmp):
    """Factory: start_swift_server(listen=[...], unix=[...]) -> SwiftServer; all stopped at teardown."""
    started: list[SwiftServer] = []

    def start(listen=("[::]:0",), unix=()):
        s = SwiftServer(tllm_rpc_bin, listen=listen, unix=unix, log_dir=short_tmp)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def swift_server(tllm_rpc_bin):
    """One shared `tllm-rpc serve --listen [::]:0 --unix /tmp/.../swift.sock` (no SetConfig on it)."""
    d = Path(tempfile.mkdtemp(prefix="tllm-it-", dir="/tmp"))
    sock = str(d / "swift.sock")
    s = SwiftServer(tllm_rpc_bin, listen=["[::]:0"], unix=[sock], log_dir=d)
    assert s.unix_paths == [sock], s.unix_paths
    yield s
    s.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tllm_call(tllm_rpc_bin):
    """tllm_call(target, method, request_dict=None, hidden_f32=None, shape=None, timeout=30, extra_args=())
    -> CallResult; `extra_args` go after the method (e.g. --tls_ca FILE)."""

    def call(target, method, request=None, hidden_f32=None, shape=None, timeout=RPC_TIMEOUT, extra_args=()) -> CallResult:
        args = [str(tllm_rpc_bin), "call", target, method, *extra_args]
        if request is not None:
            args.append(request if isinstance(request, str) else json.dumps(request, ensure_ascii=False))
        if hidden_f32 is not None:
            args += ["--hidden-states-f32", str(hidden_f32), "--shape", ",".join(str(int(s)) for s in shape)]
        args += ["--timeout", str(timeout)]
        try:
            p = subprocess.run(
                args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + CALL_TIMEOUT, cwd=REPO_ROOT
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"`{' '.join(args[:4])} ...` did not exit within {timeout + CALL_TIMEOUT}s: {e}")
        return CallResult(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))

    return call
