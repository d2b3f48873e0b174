"""Helpers for the gRPC interop tests between grpcio (Python) and tllm-rpc (Swift): the
generated stubs' peers, the tensor codec, a recording grpcio servicer, `tllm-rpc serve` as a
process. Test modules import from here (never `from conftest import`: two package-less
conftest modules share that name); the fixtures are in conftest.py.

Wire contract: shared/spec/tllm-protocol.md section 2, Protos/schemas.proto.
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
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "Protos"

MAX_MESSAGE = 128 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    # Never route loopback test traffic through an http_proxy from the environment.
    ("grpc.enable_http_proxy", 0),
]

LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
LZ4_MIN_ROWS = 64

STARTUP_TIMEOUT = 30.0  # seconds for `tllm-rpc serve` to print `ready`
STOP_TIMEOUT = 10.0  # seconds for a graceful stop after SIGTERM
RPC_TIMEOUT = 30.0  # deadline of every grpcio call
CALL_TIMEOUT = 90.0  # wall clock limit of one `tllm-rpc call` process


# --------------------------------------------------------------------------
# Generated stubs


# --------------------------------------------------------------------------
# Tensor codec (normative rules of the spec, section 2 "Tensor payload")


def to_f16(x: np.ndarray) -> np.ndarray:
    """IEEE round-to-nearest-even float16 (little-endian); overflow to inf is intended."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.ascontiguousarray(x, dtype="<f2")


def encode_tensor(x: np.ndarray) -> tuple[bytes, list[int]]:
    """[rows, hidden] array -> (data, shape): f16 LE row-major, LZ4 frame iff rows >= 64."""
    assert x.ndim == 2, x.shape
    raw = to_f16(x).tobytes()
    rows = int(x.shape[0])
    data = lz4.frame.compress(raw) if rows >= LZ4_MIN_ROWS else raw
    return data, [rows, int(x.shape[1])]


def decode_tensor(data: bytes, shape) -> np.ndarray:
    """(data, shape) -> float16 array of that shape; the receiver decides LZ4 by shape[0] alone."""
    shape = [int(s) for s in shape]
    assert len(shape) == 2 and shape[0] >= 0 and shape[1] >= 0, f"bad shape {shape}"
    raw = lz4.frame.decompress(data) if shape[0] >= LZ4_MIN_ROWS else bytes(data)
    expected = shape[0] * shape[1] * 2
    assert len(raw) == expected, f"payload has {len(raw)} bytes, shape {shape} needs {expected}"
    return np.frombuffer(raw, dtype="<f2").reshape(shape)


def tensor_message(pb, x: np.ndarray):
    data, shape = encode_tensor(x)
    return pb.pb2.BFloat16Tensor(data=data, shape=shape)


# --------------------------------------------------------------------------
# grpcio helpers


def make_channel(target: str, extra_options=()) -> grpc.Channel:
    opts = dict(GRPC_OPTIONS)
    opts.update(dict(extra_options))
    return grpc.insecure_channel(target, options=list(opts.items()))


def wait_ready(channel: grpc.Channel, timeout: float = 10.0) -> None:
    grpc.channel_ready_future(channel).result(timeout=timeout)


# --------------------------------------------------------------------------
# Recording Python server (plays the spec's master/worker)


@dataclass
class Recorded:
    method: str
    request: Any
    metadata: dict
    peer: str
    t: float = field(default_factory=time.monotonic)


class RecordingServicer:
    """Answers like the spec's master/worker and records every request it receives."""

    def __init__(self, pb):
        self._pb = pb
        self._cond = threading.Condition()
        self.records: list[Recorded] = []
        # method name -> (grpc.StatusCode, message): abort that method instead of answering.
        self.abort_with: dict[str, tuple[grpc.StatusCode, str]] = {}
        # method name -> seconds to sleep before answering (bounded by the call's deadline).
        self.delay: dict[str, float] = {}

    def _record(self, method, request, context):
        copy = type(request)()
        copy.CopyFrom(request)
        rec = Recorded(method, copy, dict(context.invocation_metadata()), context.peer())
        with self._cond:
            self.records.append(rec)
            self._cond.notify_all()
        if method in self.delay:
            end = time.monotonic() + self.delay[method]
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.02)
        if method in self.abort_with:
            code, msg = self.abort_with[method]
            context.abort(code, msg)

    def Status(self, request, context):
        self._record("Status", request, context)
        return self._pb.pb2.StatusResponse(msg="Successful", status=200)

    def Forward(self, request, context):
        self._record("Forward", request, context)
        return self._pb.pb2.ForwardResponse(msg="Forward Completed", status=200)

    def Health(self, request, context):
        self._record("Health", request, context)
        return self._pb.pb2.HealthResponse(msg="Healthy", status=200)

    def SetConfig(self, request, context):
        self._record("SetConfig", request, context)
        return self._pb.pb2.SetConfigResponse(msg="SetConfig Completed", status=200)

    def ImageForward(self, request, context):
        self._record("ImageForward", request, context)
        return self._pb.pb2.ForwardResponse(msg="unsupported", status=501)

    # -- inspection

    def requests(self, method: str | None = None) -> list[Any]:
        with self._cond:
            return [r.request for r in self.records if method is None or r.method == method]

    def wait_for(self, method: str, n: int, timeout: float) -> list[Any]:
        """Block until at least n requests of `method` arrived; fail the test after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r.request for r in self.records if r.method == method]
                if len(got) >= n:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timed out after {timeout}s waiting for {n} {method} request(s); got {len(got)}")
                self._cond.wait(left)

    def wait_for_forwards(self, n: int, timeout: float = 60.0) -> list[Any]:
        return self.wait_for("Forward", n, timeout)


class PyServer:
    def __init__(self, pb, unix_path: str | None):
        self.servicer = RecordingServicer(pb)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=GRPC_OPTIONS)
        pb.grpc.add_RPCServiceServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("[::]:0")
        assert self.port, "grpcio could not bind [::]:0"
        self.unix_path = unix_path
        if unix_path:
            assert self.server.add_insecure_port(f"unix://{unix_path}"), f"could not bind {unix_path}"
        self.server.start()

    @property
    def tcp_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def unix_target(self) -> str:
        assert self.unix_path
        return f"unix://{self.unix_path}"

    def stop(self):
        self.server.stop(grace=1.0).wait(5.0)


# --------------------------------------------------------------------------
# The Swift peer: tllm-rpc


class SwiftServer:
    """A running `tllm-rpc serve`, started with the given listeners."""

    def __init__(self, binary: Path, listen=(), unix=(), log_dir: Path | None = None, extra_args=()):
        args = [str(binary), "serve", *extra_args]
        for a in listen:
            args += ["--listen", a]
        for u in unix:
            args += ["--unix", u]
        self.args = args
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="tllm-it-log-", dir="/tmp"))
        self.stderr_path = log_dir / f"tllm-rpc-serve-{os.getpid()}-{id(self)}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, cwd=REPO_ROOT
        )
        self.tcp_ports: list[int] = []
        self.unix_paths: list[str] = []
        self.extra_stdout: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self._wait_ready(len(listen) + len(unix))
        except BaseException:
            self.stop()
            raise

    def _pump(self):
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        self._lines.put(None)

    def stderr_text(self) -> str:
        try:
            self._stderr.flush()
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_ready(self, n_listeners: int):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"`{' '.join(self.args)}` did not print `ready` within {STARTUP_TIMEOUT}s; "
                    f"stdout so far {self.extra_stdout}; stderr:\n{self.stderr_text()}"
                )
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait(5)
                raise AssertionError(
                    f"`{' '.join(self.args)}` exited ({rc}) before `ready`; stdout {self.extra_stdout}; "
                    f"stderr:\n{self.stderr_text()}"
                )
            parts = line.split(" ", 2)
            if line == "ready":
                break
            if len(parts) == 3 and parts[:2] == ["listening", "tcp"]:
                self.tcp_ports.append(int(parts[2]))
            elif len(parts) == 3 and parts[:2] == ["listening", "unix"]:
                self.unix_paths.append(parts[2])
            else:
                self.extra_stdout.append(line)
        got = len(self.tcp_ports) + len(self.unix_paths)
        assert got == n_listeners, (
            f"expected {n_listeners} `listening` lines before `ready`, got tcp={self.tcp_ports} "
            f"unix={self.unix_paths} other={self.extra_stdout}"
        )
        assert all(0 < p < 65536 for p in self.tcp_ports), self.tcp_ports

    @property
    def port(self) -> int:
        return self.tcp_ports[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; returns the exit code, None if it did not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            if self.terminate() is None:
                self.proc.kill()
                self.proc.wait(10)
        try:
            self._stderr.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# The Swift client: tllm-rpc call


@dataclass
class CallResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        lines = [l for l in self.stdout.splitlines() if l.strip()]
        assert lines, f"tllm-rpc call printed nothing (rc={self.returncode}); stderr:\n{self.stderr}"
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError as e:
            raise AssertionError(f"last stdout line is not JSON: {lines[-1]!r} ({e}); stderr:\n{self.stderr}")
