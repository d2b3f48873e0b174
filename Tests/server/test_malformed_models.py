"""Malformed model files are refused cleanly (issue 17 item 3), end to end on the real binaries.

Each case writes one malformed model into a temporary directory, derived from the default GGUF
(bytes rewritten here, with a small GGUF parser and writer of our own) or from a tiny valid
Hugging Face directory made here (config.json + model.safetensors written by hand +
tokenizer.json / tokenizer_config.json from the tokenizer fixtures), then loads it with

    tllm-generate --model_path FILE --prompt hi --max_tokens 1 --threads 1

and, for a few cases, starts `tllm.server --is_local --model_path FILE` on it.

"Cleanly" means: the process exits within LOAD_TIMEOUT seconds with an exit code > 0 that is not
a signal (no SIGILL / SIGTRAP from a Swift trap, no SIGABRT / SIGSEGV / SIGBUS), stderr has no
Swift "Fatal error", and stderr names the file at fault (its path or basename) and, where a
tensor is at fault, the tensor. A server must exit the same way, never start serving.

Two positive controls per format (the unmodified rewrite of the GGUF, GGUF version 2, the valid
Hugging Face directory) must load and generate (exit 0): they prove that the writers here make
valid files, so that each malformed case differs from a valid file only by its defect.

Every case runs twice: on the debug binaries and on AddressSanitizer builds of the same
binaries (`scripts/fuzz.sh build` makes them in .build/fuzz/debug; TLLM_ASAN_BIN_DIR names that
directory, as scripts/test.sh does), where any report of the sanitizer is a failure. Without
TLLM_ASAN_BIN_DIR the ASan runs are skipped, except under CI, where they fail.

Run:  python -m pytest -q Tests/server/test_malformed_models.py   (fixtures from conftest.py)
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gguf
import httpx
import numpy as np
import pytest

from tllm_server_helpers import free_port

LOAD_TIMEOUT = 30.0  # seconds for one load to fail (or, for the controls, to generate a token)
# Exit codes a shell reports for a signal (128 + n): SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE,
# SIGKILL (the OOM killer), SIGSEGV. Python reports a signal itself as a negative code.
SIGNAL_EXIT_CODES = {128 + s for s in (4, 5, 6, 7, 8, 9, 11)}
CRASH_MARKERS = ("Fatal error", "*** Program crashed", "*** Signal ", "AddressSanitizer")

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FIXTURES = REPO_ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures"


# --------------------------------------------------------------------------
# Running a loader and judging how it ended


@dataclass
class Outcome:
    cmd: str
    returncode: int | None  # None: still running at the deadline (killed)
    stderr: str
    stdout: str = ""
    served: bool = False  # a server answered GET /health 200 on the malformed model
    seconds: float = 0.0


def _kill_group(proc: subprocess.Popen):
    """Kills the process we started and its own children (the Swift backtracer)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def run_generate(binary: Path, model: Path, timeout: float = LOAD_TIMEOUT) -> Outcome:
    args = [str(binary), "--model_path", str(model), "--prompt", "hi", "--max_tokens", "1", "--threads", "1"]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO_ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        rc = None
    return Outcome(" ".join(args), rc, err.decode("utf-8", "replace"), out.decode("utf-8", "replace"),
                   seconds=time.monotonic() - start)


def run_server(binary: Path, model: Path, log_dir: Path, timeout: float = LOAD_TIMEOUT) -> Outcome:
    """Starts `tllm.server --is_local` on the model; returns when it exits, when it answers
    GET /health (it accepted the model: stopped at once), or at the deadline (killed)."""
    port = free_port()
    args = [str(binary), "--is_local", "--model_path", str(model), "--http_port", str(port),
            "--hostname", "127.0.0.1", "--threads", "1"]  # fmt: skip
    err_path, out_path = log_dir / "server.stderr", log_dir / "server.stdout"
    start = time.monotonic()
    served = False
    with open(err_path, "wb") as err, open(out_path, "wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO_ROOT,
                                start_new_session=True)
        try:
            with httpx.Client(trust_env=False, timeout=1.0) as http:
                while time.monotonic() - start < timeout and proc.poll() is None:
                    try:
                        if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                            served = True
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.2)
        finally:
            rc = proc.poll()
            if rc is None:
                _kill_group(proc)
    text = err_path.read_text(errors="replace")
    stdout = out_path.read_text(errors="replace")
    # The server logs through swift-log (stdout or stderr): judge both.
    return Outcome(" ".join(args), rc, text + ("\n" + stdout if stdout.strip() else ""), stdout, served,
                   time.monotonic() - start)


def _trap_line(text: str) -> str:
    for line in text.splitlines():
        if any(m in line for m in CRASH_MARKERS):
            return line.strip()
    return ""


def crash_summary(text: str, frames: int = 6) -> str:
    """After a crash: the runtime's message and the crashed thread's top frame and first frames in
    this repository's sources, which the last 2000 characters of a Swift backtrace (registers,
    images) miss."""
    lines = text.splitlines()
    register = re.compile(r"^\s*[a-z0-9]{2,6}\s+0x[0-9a-f]+\s")  # the register dump may spell "Fatal error"
    out = [ln.strip() for ln in lines
           if not register.match(ln) and (ln.startswith("*** ") and "Backtracing" not in ln or "Fatal error" in ln)]
    for i, ln in enumerate(lines):
        if ln.rstrip().endswith("crashed:"):
            stack = []
            for frame in lines[i + 1 :]:
                if frame.startswith("Thread ") or frame.startswith("Registers"):
                    break
                if frame.strip() and frame.strip() != "...":
                    stack.append(re.sub(r"^\s*\d+\s+(\[[^\]]*\]\s*)*0x[0-9a-f]+\s+", "", frame))
            ours = [f for f in stack[1:] if "Sources/" in f and "/.build/" not in f][:frames]
            out += [ln.strip(), *("  " + f for f in stack[:1] + ours)]
            break
    return "\n".join(out)


def assert_clean_failure(case: str, outcome: Outcome, names: list[str], tensor: str | None):
    """The clean-failure rule (module docstring). `names`: any of them in stderr names the file."""
    rc, err = outcome.returncode, outcome.stderr
    problems = []
    if outcome.served:
        problems.append("the server accepted the malformed model and answered GET /health 200")
    elif rc is None:
        problems.append(f"did not exit within {LOAD_TIMEOUT:.0f} s (hang; killed)")
    elif rc < 0:
        problems.append(f"killed by signal {signal.Signals(-rc).name}")
    elif rc in SIGNAL_EXIT_CODES:
        problems.append(f"exit code {rc}: signal {signal.Signals(rc - 128).name}")
    elif rc == 0:
        problems.append("exit code 0: the malformed model was accepted")
    if _trap_line(err):
        problems.append(f"Swift runtime trap: {_trap_line(err)}")
    if rc is not None and rc > 0 and not any(n in err for n in names):
        problems.append(f"stderr names none of {names}")
    if tensor is not None and rc is not None and rc > 0 and tensor not in err:
        problems.append(f"stderr does not name tensor {tensor}")
    crash = crash_summary(err)
    assert not problems, (
        f"[{case}] " + "; ".join(problems) + f"\n$ {outcome.cmd}\nexit code: {rc} after {outcome.seconds:.1f} s"
        + (f"\n--- crash ---\n{crash}" if crash else "")
        + f"\n--- stderr (last 2000 chars) ---\n{err[-2000:]}"
    )


def assert_loads(case: str, outcome: Outcome):
    """A positive control: the file must load and generate."""
    assert outcome.returncode == 0 and not _trap_line(outcome.stderr), (
        f"[{case}] a valid model did not load: exit code {outcome.returncode} after {outcome.seconds:.1f} s"
        f"\n$ {outcome.cmd}\n--- stderr (last 2000 chars) ---\n{outcome.stderr[-2000:]}"
    )


# --------------------------------------------------------------------------
# GGUF: a parser that keeps every offset, and a writer


U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
          U64: "<Q", I64: "<q", F64: "<d"}  # fmt: skip
SIZE = {t: struct.calcsize(f) for t, f in SCALAR.items()}


def enc_str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def enc_value(vtype: int, value) -> bytes:
    """A metadata value; arrays as (element type, items)."""
    if vtype == STR:
        return enc_str(value)
    if vtype == ARR:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(enc_value(etype, x) for x in items)
    return struct.pack(SCALAR[vtype], value)


@dataclass
class KV:
    key: str
    vtype: int
    raw: bytes  # the encoded value
    start: int = -1  # offset of the entry (its key's length) in the original file
    value_start: int = -1


@dataclass
class TensorInfo:
    name: str
    dims: list[int]  # GGUF order: dims[0] is the row length
    ggml_type: int
    offset: int  # relative to the data section
    start: int = -1  # offset of the entry in the original file


class Gguf:
    """The default model's header, parsed: version, metadata entries, tensor infos, offsets."""

    def __init__(self, data: bytes):
        self.data = data
        magic, self.version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
        assert magic == b"GGUF"
        off = 24
        self.kvs: list[KV] = []
        for _ in range(n_kv):
            start = off
            key, off = self._str(off)
            (vtype,) = struct.unpack_from("<I", data, off)
            off += 4
            end = self._skip(off, vtype)
            self.kvs.append(KV(key, vtype, data[off:end], start, off))
            off = end
        self.tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            start = off
            name, off = self._str(off)
            (n_dims,) = struct.unpack_from("<I", data, off)
            dims = list(struct.unpack_from(f"<{n_dims}Q", data, off + 4))
            off += 4 + 8 * n_dims
            ggml_type, offset = struct.unpack_from("<IQ", data, off)
            off += 12
            self.tensors.append(TensorInfo(name, dims, ggml_type, offset, start))
        self.data_start = -(-off // 32) * 32  # the file has no general.alignment: 32
        # Bytes of each tensor, as ggml's block sizes give them.
        self.nbytes = {}
        for t in self.tensors:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
            self.nbytes[t.name] = math.prod(t.dims) // block * size

    def _str(self, off: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self.data, off)
        return self.data[off + 8 : off + 8 + n].decode(), off + 8 + n

    def _skip(self, off: int, vtype: int) -> int:
        if vtype in SIZE:
            return off + SIZE[vtype]
        if vtype == STR:
            return off + 8 + struct.unpack_from("<Q", self.data, off)[0]
        assert vtype == ARR
        etype, n = struct.unpack_from("<IQ", self.data, off)
        off += 12
        if etype in SIZE:
            return off + n * SIZE[etype]
        for _ in range(n):
            off = self._skip(off, etype)
        return off

    def kv(self, key: str) -> KV:
        return next(k for k in self.kvs if k.key == key)

    def tensor(self, name: str) -> TensorInfo:
        return next(t for t in self.tensors if t.name == name)

    def first_tensor_past(self, size: int) -> str:
        """The first tensor (file order) whose data does not fit in a file of `size` bytes."""
        return next(t.name for t in self.tensors if self.data_start + t.offset + self.nbytes[t.name] > size)


def write_gguf(path: Path, g: Gguf, *, version: int | None = None, kvs: list[KV] | None = None,
               tensors: list[TensorInfo] | None = None):
    """A GGUF made of a (changed) header and the original tensor data section; tensor offsets
    are relative to the data section, so they stay valid when the header changes size."""
    kvs = g.kvs if kvs is None else kvs
    tensors = g.tensors if tensors is None else tensors
    parts = [struct.pack("<4sIQQ", b"GGUF", g.version if version is None else version, len(tensors), len(kvs))]
    for kv in kvs:
        parts += [enc_str(kv.key), struct.pack("<I", kv.vtype), kv.raw]
    for t in tensors:
        parts += [enc_str(t.name), struct.pack(f"<I{len(t.dims)}Q", len(t.dims), *t.dims),
                  struct.pack("<IQ", t.ggml_type, t.offset)]  # fmt: skip
    header = b"".join(parts)
    with open(path, "wb") as f:
        f.write(header)
        f.write(b"\0" * (-len(header) % 32))  # the data section is 32-aligned whatever the header claims
        f.write(memoryview(g.data)[g.data_start :])


def write_patched(path: Path, g: Gguf, patches: dict[int, bytes] | None = None, size: int | None = None):
    """The original file with bytes overwritten at the given offsets and/or cut to `size`."""
    end = len(g.data) if size is None else size
    head = bytearray(g.data[: min(g.data_start, end)])
    for off, b in (patches or {}).items():
        head[off : off + len(b)] = b
    with open(path, "wb") as f:
        f.write(head)
        if end > g.data_start:
            f.write(memoryview(g.data)[g.data_start : end])


def set_kv(g: Gguf, key: str, vtype: int, value) -> list[KV]:
    """The metadata with `key` replaced (or appended), its value encoded from `value`."""
    new = KV(key, vtype, enc_value(vtype, value))
    kvs = [new if k.key == key else k for k in g.kvs]
    return kvs if any(k.key == key for k in g.kvs) else kvs + [new]


def set_raw_kv(g: Gguf, key: str, vtype: int, raw: bytes) -> list[KV]:
    return [KV(key, vtype, raw) if k.key == key else k for k in g.kvs]


def drop_kv(g: Gguf, key: str) -> list[KV]:
    return [k for k in g.kvs if k.key != key]


def set_tensor(g: Gguf, name: str, **changes) -> list[TensorInfo]:
    return [TensorInfo(t.name, list(changes.get("dims", t.dims)), changes.get("ggml_type", t.ggml_type),
                       changes.get("offset", t.offset)) if t.name == name else t for t in g.tensors]  # fmt: skip


# --------------------------------------------------------------------------
# The GGUF cases


@dataclass
class Case:
    id: str
    make: Callable  # (context, directory) -> model path (file or directory)
    tensor: str | None = None  # the tensor at fault, which stderr must name
    names: Callable | None = None  # (model path) -> strings of which stderr must contain one
    valid: bool = False  # a positive control: must load
    server: bool = False  # also start tllm.server on it
    note: str = ""


Q3 = "blk.3.attn_q.weight"
FFN_DOWN_5 = "blk.5.ffn_down.weight"


def gguf_case(id: str, make: Callable, tensor: str | None = None, **kw) -> Case:
    def build(g: Gguf, d: Path) -> Path:
        p = d / f"malformed-{id}.gguf"
        make(g, p)
        return p

    return Case(id, build, tensor, **kw)


def _truncate(at: Callable[[Gguf], int]):
    return lambda g, p: write_patched(p, g, size=at(g))


def _patch(at: Callable[[Gguf], int], value: bytes | Callable[[Gguf], bytes]):
    return lambda g, p: write_patched(p, g, {at(g): value(g) if callable(value) else value})


def _kv(key: str, vtype: int, value):
    return lambda g, p: write_gguf(p, g, kvs=set_kv(g, key, vtype, value))


def _tensor(name: str, **changes):
    return lambda g, p: write_gguf(p, g, tensors=set_tensor(g, name, **changes))


def _truncated_in_data(g: Gguf) -> int:
    return g.data_start + 50_000_001


GGUF_CASES = [
    # Positive controls: our writer and a v2 header make loadable files.
    gguf_case("control-rewritten", lambda g, p: write_gguf(p, g), valid=True),
    gguf_case("control-version-2", lambda g, p: write_gguf(p, g, version=2), valid=True,
              note="v2 has v3's layout; tllm reads both"),
    # Truncated.
    gguf_case("empty-file", _truncate(lambda g: 0)),
    gguf_case("truncated-in-magic", _truncate(lambda g: 3)),
    gguf_case("truncated-in-header-counts", _truncate(lambda g: 20)),
    # (Cut within the first 24 + 272 x 24 bytes, a file fails the tensor-count plausibility check first.)
    gguf_case("truncated-in-kv-key", _truncate(lambda g: g.kv("tokenizer.ggml.token_type").start + 10)),
    gguf_case("truncated-in-kv-token-array", _truncate(lambda g: g.kv("tokenizer.ggml.tokens").value_start + 400_000)),
    gguf_case("truncated-in-tensor-info", _truncate(lambda g: g.tensor(Q3).start + 20)),
    gguf_case("truncated-at-data-start", _truncate(lambda g: g.data_start), tensor="token_embd.weight"),
    gguf_case("truncated-in-tensor-data", _truncate(_truncated_in_data), tensor="<first past the cut>", server=True),
    gguf_case("truncated-last-byte", _truncate(lambda g: len(g.data) - 1), tensor="<last>"),
    # Header fields.
    gguf_case("wrong-magic", _patch(lambda g: 0, b"GGUG")),
    gguf_case("version-1", _patch(lambda g: 4, struct.pack("<I", 1))),
    gguf_case("version-999", _patch(lambda g: 4, struct.pack("<I", 999))),
    gguf_case("tensor-count-2pow63", _patch(lambda g: 8, struct.pack("<Q", 2**63))),
    gguf_case("tensor-count-2pow40", _patch(lambda g: 8, struct.pack("<Q", 2**40))),
    gguf_case("kv-count-2pow63", _patch(lambda g: 16, struct.pack("<Q", 2**63))),
    gguf_case("kv-count-2pow40", _patch(lambda g: 16, struct.pack("<Q", 2**40))),
    gguf_case("key-length-2pow63", _patch(lambda g: 24, struct.pack("<Q", 2**63))),
    gguf_case("key-length-past-eof", _patch(lambda g: 24, lambda g: struct.pack("<Q", len(g.data)))),
    gguf_case("string-value-length-2pow63",
              _patch(lambda g: g.kv("general.architecture").value_start, struct.pack("<Q", 2**63))),
    gguf_case("token-string-length-2pow62",
              _patch(lambda g: g.kv("tokenizer.ggml.tokens").value_start + 12, struct.pack("<Q", 2**62))),
    gguf_case("array-length-2pow62",
              _patch(lambda g: g.kv("tokenizer.ggml.tokens").value_start + 4, struct.pack("<Q", 2**62))),
    gguf_case("kv-value-type-13", lambda g, p: write_gguf(p, g, kvs=set_raw_kv(g, "general.type", 13, b""))),
    gguf_case("duplicate-kv", lambda g, p: write_gguf(p, g, kvs=g.kvs + [g.kv("llama.block_count")])),
    # Tensor infos.
    gguf_case("n_dims-0", _tensor(Q3, dims=[]), tensor=Q3),
    gguf_case("n_dims-9", _tensor(Q3, dims=[576, 576] + [1] * 7), tensor=Q3),
    gguf_case("dim-0", _tensor(Q3, dims=[576, 0]), tensor=Q3),
    gguf_case("dim-2pow63", _tensor(Q3, dims=[576, 2**63]), tensor=Q3),
    gguf_case("dims-product-overflows", _tensor(Q3, dims=[2**39, 2**39, 2**39, 2**39]), tensor=Q3),
    gguf_case("row-not-whole-blocks", _tensor(Q3, dims=[575, 576]), tensor=Q3),
    gguf_case("offset-past-eof", _tensor(Q3, offset=2**40), tensor=Q3),
    gguf_case("offset-unaligned", lambda g, p: write_gguf(p, g, tensors=set_tensor(g, Q3, offset=g.tensor(Q3).offset + 1)),
              tensor=Q3),
    gguf_case("offset-2pow63-64", _tensor(Q3, offset=2**63 - 64), tensor=Q3, server=True,
              note="data offset + relative offset overflows Int"),
    gguf_case("offset-plus-size-overflows", _tensor(Q3, offset=2**63 - 2**21), tensor=Q3,
              note="start fits in Int, start + size does not"),
    gguf_case("ggml-type-200", _tensor(Q3, ggml_type=200), tensor=Q3),
    gguf_case("ggml-type-IQ2_XXS", _tensor(Q3, ggml_type=16), tensor=Q3),
    gguf_case("duplicate-tensor", lambda g, p: write_gguf(p, g, tensors=g.tensors + [g.tensor(Q3)]), tensor=Q3),
    gguf_case("missing-tensor", lambda g, p: write_gguf(p, g, tensors=[t for t in g.tensors if t.name != FFN_DOWN_5]),
              tensor=FFN_DOWN_5),
    # Shapes that disagree with the hyperparameters (the header itself is consistent).
    gguf_case("attn_q-fewer-rows", _tensor(Q3, dims=[576, 192]), tensor=Q3, server=True),
    gguf_case("attn_q-3-dims", _tensor(Q3, dims=[576, 576, 1]), tensor=Q3),
    gguf_case("ffn_down-transposed", _tensor("blk.3.ffn_down.weight", dims=[576, 1536]),
              tensor="blk.3.ffn_down.weight"),
    gguf_case("attn_k-too-wide", _tensor("blk.3.attn_k.weight", dims=[1152, 192]), tensor="blk.3.attn_k.weight",
              note="reads the next tensors' bytes as its own: inside the file"),
    gguf_case("attn_norm-half-length", _tensor("blk.2.attn_norm.weight", dims=[288]),
              tensor="blk.2.attn_norm.weight"),
    gguf_case("output_norm-2-dims", _tensor("output_norm.weight", dims=[288, 2]), tensor="output_norm.weight"),
    gguf_case("token_embd-narrower", _tensor("token_embd.weight", dims=[512, 49152]), tensor="token_embd.weight"),
    gguf_case("token_embd-fewer-rows-than-vocab", _tensor("token_embd.weight", dims=[576, 100]),
              tensor="token_embd.weight"),
    # Hyperparameters.
    gguf_case("architecture-unknown", _kv("general.architecture", STR, "gptx")),
    gguf_case("block_count-0", _kv("llama.block_count", U32, 0)),
    gguf_case("block_count-10pow9", _kv("llama.block_count", U32, 10**9)),
    gguf_case("block_count-2pow62", _kv("llama.block_count", U64, 2**62)),
    gguf_case("embedding_length-0", _kv("llama.embedding_length", U32, 0)),
    gguf_case("embedding_length-512", _kv("llama.embedding_length", U32, 512), note="tensors are 576 wide"),
    gguf_case("feed_forward_length-1000", _kv("llama.feed_forward_length", U32, 1000), note="tensors say 1536"),
    gguf_case("head_count-0", _kv("llama.attention.head_count", U32, 0)),
    gguf_case("head_count-15", _kv("llama.attention.head_count", U32, 15),
              note="576 / 15 is not whole; 15 is a multiple of the 3 KV heads"),
    gguf_case("head_count_kv-0", _kv("llama.attention.head_count_kv", U32, 0)),
    gguf_case("key_length-2pow60", _kv("llama.attention.key_length", U64, 2**60)),
    gguf_case("context_length-0", _kv("llama.context_length", U32, 0)),
    gguf_case("context_length-2pow62", _kv("llama.context_length", U64, 2**62), server=True),
    gguf_case("rope-freq-base-nan", _kv("llama.rope.freq_base", F32, math.nan)),
    gguf_case("rope-freq-base-negative", _kv("llama.rope.freq_base", F32, -10000.0)),
    gguf_case("rms-epsilon-nan", _kv("llama.attention.layer_norm_rms_epsilon", F32, math.nan)),
    gguf_case("alignment-0", _kv("general.alignment", U32, 0)),
    gguf_case("alignment-3", _kv("general.alignment", U32, 3)),
    gguf_case("alignment-2pow31", _kv("general.alignment", U32, 2**31), note="refused as an alignment"),
    gguf_case("alignment-2pow63-u64", _kv("general.alignment", U64, 2**63),
              note="not an Int: read as absent (32)?"),
    # Tokenizer metadata.
    gguf_case("tokenizer-missing", lambda g, p: write_gguf(p, g, kvs=drop_kv(g, "tokenizer.ggml.tokens"))),
    gguf_case("tokenizer-model-unknown", _kv("tokenizer.ggml.model", STR, "wordpiece")),
    gguf_case("tokenizer-empty-vocab", _kv("tokenizer.ggml.tokens", ARR, (STR, []))),
    gguf_case("tokenizer-merge-unknown-token",
              lambda g, p: write_gguf(p, g, kvs=set_kv(g, "tokenizer.ggml.merges", ARR, (STR, ["zzqx qqzx"])))),
    gguf_case("tokenizer-merge-no-space",
              lambda g, p: write_gguf(p, g, kvs=set_kv(g, "tokenizer.ggml.merges", ARR, (STR, ["nospace"])))),
    gguf_case("bos-id-60000", _kv("tokenizer.ggml.bos_token_id", U32, 60000)),
    gguf_case("bos-id-2pow32-1", _kv("tokenizer.ggml.bos_token_id", U32, 2**32 - 1), server=True),
    gguf_case("eos-id-minus-1", _kv("tokenizer.ggml.eos_token_id", I32, -1)),
    gguf_case("token-types-short", _kv("tokenizer.ggml.token_type", ARR, (I32, [1] * 100))),
    gguf_case("token-type-2pow40", _kv("tokenizer.ggml.token_type", ARR, (I64, [1] * 49151 + [2**40]))),
    gguf_case("chat-template-invalid-jinja",
              _kv("tokenizer.chat_template", STR, "{% for message in messages %}{{ message['content'] }"),
              note="tllm-generate renders the template (no --raw)"),
    gguf_case("chat-template-unknown-tag", _kv("tokenizer.chat_template", STR, "{% frobnicate %}")),
]


@pytest.fixture(scope="session")
def gguf_model(model_path) -> Gguf:
    return Gguf(model_path.read_bytes())


@pytest.fixture(scope="session")
def work_root():
    d = Path(tempfile.mkdtemp(prefix="tllm-malformed-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def case_dir(work_root, request):
    d = work_root / request.node.name.replace("/", "_").replace("[", "-").rstrip("]")[:120]
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)  # 100 MB per GGUF case


def _expected_tensor(case: Case, g: Gguf, path: Path) -> str | None:
    if case.tensor == "<first past the cut>":
        return g.first_tensor_past(path.stat().st_size)
    if case.tensor == "<last>":
        return g.first_tensor_past(len(g.data) - 1)
    return case.tensor


@pytest.fixture(params=["debug", "asan"])
def build_flavour(request) -> str:
    if request.param == "asan" and not os.environ.get("TLLM_ASAN_BIN_DIR"):
        message = "no ASan build: run scripts/fuzz.sh build and set TLLM_ASAN_BIN_DIR=.build/fuzz/debug"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return request.param


def _flavoured(flavour: str, debug_binary: Path, name: str) -> Path:
    if flavour == "debug":
        return debug_binary
    path = Path(os.environ["TLLM_ASAN_BIN_DIR"]) / name
    assert path.exists(), f"{path} is missing: run scripts/fuzz.sh build"
    return path


@pytest.fixture
def loader_bin(build_flavour, generate_bin) -> Path:
    """tllm-generate, plain or under AddressSanitizer."""
    return _flavoured(build_flavour, generate_bin, "tllm-generate")


@pytest.fixture
def loader_server_bin(build_flavour, server_bin) -> Path:
    """tllm.server, plain or under AddressSanitizer."""
    return _flavoured(build_flavour, server_bin, "tllm.server")


def _names(path: Path) -> list[str]:
    return [str(path), path.name]


@pytest.mark.parametrize("case", GGUF_CASES, ids=lambda c: c.id)
def test_gguf(case: Case, gguf_model, loader_bin, case_dir):
    path = case.make(gguf_model, case_dir)
    outcome = run_generate(loader_bin, path)
    if case.valid:
        assert_loads(case.id, outcome)
    else:
        assert_clean_failure(case.id, outcome, _names(path), _expected_tensor(case, gguf_model, path))


@pytest.mark.parametrize("case", [c for c in GGUF_CASES if c.server], ids=lambda c: c.id)
def test_gguf_server(case: Case, gguf_model, loader_server_bin, case_dir):
    path = case.make(gguf_model, case_dir)
    outcome = run_server(loader_server_bin, path, case_dir)
    assert_clean_failure(f"server {case.id}", outcome, _names(path), _expected_tensor(case, gguf_model, path))


# --------------------------------------------------------------------------
# Hugging Face directories: a tiny valid one, then one defect each

HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 3000,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
}  # fmt: skip
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HF_Q1 = "model.layers.1.self_attn.q_proj.weight"
HF_DOWN1 = "model.layers.1.mlp.down_proj.weight"


def hf_tensors(config: dict) -> dict[str, np.ndarray]:
    """Random weights of the right shapes for a llama config (float32)."""
    rng = np.random.default_rng(17)
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    out = {"model.embed_tokens.weight": rng.normal(0, 0.02, (v, h)), "model.norm.weight": np.ones(h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": np.ones(h), p + "post_attention_layernorm.weight": np.ones(h),
            p + "self_attn.q_proj.weight": rng.normal(0, 0.05, (h, h)),
            p + "self_attn.k_proj.weight": rng.normal(0, 0.05, (kv, h)),
            p + "self_attn.v_proj.weight": rng.normal(0, 0.05, (kv, h)),
            p + "self_attn.o_proj.weight": rng.normal(0, 0.05, (h, h)),
            p + "mlp.gate_proj.weight": rng.normal(0, 0.05, (f, h)),
            p + "mlp.up_proj.weight": rng.normal(0, 0.05, (f, h)),
            p + "mlp.down_proj.weight": rng.normal(0, 0.05, (h, f)),
        }  # fmt: skip
    return {k: a.astype(np.float32) for k, a in out.items()}


def safetensors_header(tensors: dict[str, np.ndarray]) -> tuple[dict, list[bytes]]:
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        data = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    return header, blobs


def write_safetensors(path: Path, header: dict | bytes, blobs: list[bytes], length: int | None = None):
    """8-byte little-endian header length, the JSON header (padded to 8 bytes), the data.
    `header` may be raw bytes (a broken header); `length` overrides the length field."""
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + b"".join(blobs))


@dataclass
class HFDir:
    """The parts of a valid directory, changed by each case before it is written."""

    config: dict | bytes = field(default_factory=lambda: dict(HF_CONFIG))
    tensors: dict[str, np.ndarray] = field(default_factory=lambda: hf_tensors(HF_CONFIG))
    header: dict | bytes | None = None  # None: made from `tensors`
    blobs: list[bytes] | None = None
    header_length: int | None = None
    truncate: int | None = None  # bytes of model.safetensors to keep
    tokenizer: dict | bytes = field(
        default_factory=lambda: json.loads((TOKENIZER_FIXTURES / "qwen2-tokenizer.json").read_text()))
    tokenizer_config: dict | bytes = field(default_factory=lambda: dict(
        json.loads((TOKENIZER_FIXTURES / "qwen2-tokenizer_config.json").read_text()), chat_template=CHATML))
    generation_config: dict | None = None

    def write(self, d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)

        def dump(name: str, value):
            if value is not None:
                (d / name).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())

        dump("config.json", self.config)
        dump("tokenizer.json", self.tokenizer)
        dump("tokenizer_config.json", self.tokenizer_config)
        dump("generation_config.json", self.generation_config)
        header, blobs = safetensors_header(self.tensors)
        st = d / "model.safetensors"
        write_safetensors(st, self.header if self.header is not None else header,
                          self.blobs if self.blobs is not None else blobs, self.header_length)
        if self.truncate is not None:
            os.truncate(st, self.truncate)
        return d


def hf_case(id: str, change: Callable[[HFDir], None], file: str | None = "model.safetensors",
            tensor: str | None = None, **kw) -> Case:
    """`file`: the file at fault, whose name stderr must give (None: the directory's path)."""

    def build(_ctx, d: Path) -> Path:
        spec = HFDir()
        change(spec)
        return spec.write(d / "model")

    def names(path: Path) -> list[str]:
        return [str(path / file), file] if file else [str(path)]

    return Case(id, build, tensor, names=names, **kw)


def _entry(name: str, **changes) -> Callable[[HFDir], None]:
    """Changes one tensor's header entry (the data stays as written for the valid shapes)."""

    def change(s: HFDir):
        header, blobs = safetensors_header(s.tensors)
        header[name] = dict(header[name], **changes)
        s.header, s.blobs = header, blobs

    return change


def _config(**changes) -> Callable[[HFDir], None]:
    def change(s: HFDir):
        s.config = dict(s.config, **changes)

    return change


def _drop_config(key: str) -> Callable[[HFDir], None]:
    def change(s: HFDir):
        s.config = {k: v for k, v in s.config.items() if k != key}

    return change


def _overlapping(s: HFDir):
    header, blobs = safetensors_header(s.tensors)
    header[HF_Q1] = dict(header[HF_Q1], data_offsets=header["model.layers.1.self_attn.o_proj.weight"]["data_offsets"])
    s.header, s.blobs = header, blobs


def _reshaped(name: str, shape: list[int]) -> Callable[[HFDir], None]:
    """A tensor whose stored shape (and data) disagree with config.json."""

    def change(s: HFDir):
        s.tensors[name] = np.zeros(shape, dtype=np.float32)

    return change


def _mlx_quantized_zero_rows(s: HFDir):
    """An MLX-packed weight of 0 x 2**62 words (0 bytes, consistent) with empty scales and biases."""
    s.config = dict(s.config, quantization={"group_size": 32, "bits": 4})
    header, blobs = safetensors_header(s.tensors)
    end = header[HF_Q1]["data_offsets"][0]
    header[HF_Q1] = {"dtype": "U32", "shape": [0, 2**62], "data_offsets": [end, end]}
    stem = HF_Q1.removesuffix(".weight")
    for part in ("scales", "biases"):
        header[f"{stem}.{part}"] = {"dtype": "F16", "shape": [0, 1], "data_offsets": [end, end]}
    s.header, s.blobs = header, blobs


def _tokenizer(change: Callable[[dict], None]) -> Callable[[HFDir], None]:
    def apply(s: HFDir):
        change(s.tokenizer)

    return apply


def _vocab_id(token: str, value):
    def change(t: dict):
        t["model"]["vocab"][token] = value

    return change


def _first_added_id(value):
    def change(t: dict):
        t["added_tokens"][0]["id"] = value

    return change


def _set(key_path: list[str], value):
    def change(t: dict):
        for k in key_path[:-1]:
            t = t[k]
        t[key_path[-1]] = value

    return change


HF_CASES = [
    hf_case("control-valid-directory", lambda s: None, valid=True),
    # model.safetensors: header length, header JSON.
    hf_case("st-shorter-than-8-bytes", lambda s: setattr(s, "truncate", 5)),
    hf_case("st-header-length-past-eof", lambda s: setattr(s, "header_length", 10**7)),
    hf_case("st-header-length-2pow63", lambda s: setattr(s, "header_length", 2**63), server=True),
    hf_case("st-header-not-json", lambda s: setattr(s, "header", b'{"model.norm.weight": {"dtype": "F32",')),
    hf_case("st-header-json-list", lambda s: setattr(s, "header", b"[1, 2, 3]")),
    hf_case("st-entry-not-object", _entry(HF_Q1, dtype=None), tensor=HF_Q1),
    hf_case("st-truncated-data", lambda s: setattr(s, "truncate", 200_000), tensor="<any>"),
    # Offsets, dtypes, shapes.
    hf_case("st-offsets-reversed", _entry(HF_Q1, data_offsets=[16384, 0]), tensor=HF_Q1),
    hf_case("st-offsets-negative", _entry(HF_Q1, data_offsets=[-16384, 0]), tensor=HF_Q1),
    hf_case("st-offsets-overlapping", _overlapping, tensor=HF_Q1,
            note="two tensors share bytes: the format forbids it"),
    hf_case("st-offsets-past-eof", _entry(HF_Q1, data_offsets=[10**8, 10**8 + 16384]), tensor=HF_Q1),
    hf_case("st-offsets-2pow63", _entry(HF_Q1, data_offsets=[2**63 - 16384, 2**63]), tensor=HF_Q1),
    hf_case("st-dtype-F8_E9", _entry(HF_Q1, dtype="F8_E9"), tensor=HF_Q1),
    hf_case("st-dtype-I32-weight", _entry(HF_Q1, dtype="I32"), tensor=HF_Q1),
    hf_case("st-shape-product-overflows", _entry(HF_Q1, shape=[2**32, 2**32]), tensor=HF_Q1, server=True),
    hf_case("st-shape-bytes-overflow", _entry(HF_Q1, shape=[2**62]), tensor=HF_Q1,
            note="elements fit in Int, elements x 4 bytes do not"),
    hf_case("st-shape-negative", _entry(HF_Q1, shape=[-64, -64]), tensor=HF_Q1),
    hf_case("st-shape-size-mismatch", _entry(HF_Q1, shape=[64, 65]), tensor=HF_Q1),
    hf_case("st-shape-huge-number", _entry(HF_Q1, shape=[1e30, 64]), tensor=HF_Q1),
    hf_case("st-shape-zero-rows-huge-width", _entry(HF_Q1, shape=[0, 2**62], data_offsets=[0, 0]), tensor=HF_Q1,
            note="0 elements, so 0 bytes is consistent; the width is absurd"),
    # A shape that disagrees with config.json: the error names the model directory and the tensor.
    hf_case("st-q_proj-fewer-rows", _reshaped(HF_Q1, [32, 64]), file=None, tensor=HF_Q1),
    hf_case("st-down_proj-transposed", _reshaped(HF_DOWN1, [128, 64]), file=None, tensor=HF_DOWN1),
    hf_case("st-norm-shorter", _reshaped("model.norm.weight", [32]), file=None, tensor="model.norm.weight"),
    hf_case("st-embedding-3-dims", _reshaped("model.embed_tokens.weight", [3000, 64, 1]), file=None,
            tensor="model.embed_tokens.weight"),
    hf_case("st-missing-tensor", lambda s: s.tensors.pop(HF_DOWN1), file=None, tensor=HF_DOWN1),
    hf_case("st-mlx-zero-rows-huge-width", _mlx_quantized_zero_rows, tensor=HF_Q1),
    # config.json.
    hf_case("config-not-json", lambda s: setattr(s, "config", b'{"model_type": "llama",'), file="config.json"),
    hf_case("config-json-list", lambda s: setattr(s, "config", b"[]"), file="config.json"),
    hf_case("config-missing", lambda s: setattr(s, "config", None), file="config.json"),
    hf_case("config-missing-hidden_size", _drop_config("hidden_size"), file="config.json"),
    hf_case("config-model_type-unknown", _config(model_type="bert"), file="config.json"),
    hf_case("config-layers-0", _config(num_hidden_layers=0), file="config.json"),
    hf_case("config-layers-10pow9", _config(num_hidden_layers=10**9), file="config.json",
            note="refused by the layer-count bound before any tensor is looked for"),
    hf_case("config-layers-2pow62", _config(num_hidden_layers=2**62), file="config.json"),
    hf_case("config-layers-1e30", _config(num_hidden_layers=1e30), file="config.json"),
    hf_case("config-hidden-not-divisible-by-heads", _config(num_attention_heads=6), file=None,
            note="64 / 6 is not whole; 6 is a multiple of the 2 KV heads"),
    hf_case("config-hidden_size-disagrees", _config(hidden_size=128), file=None),
    hf_case("config-intermediate-disagrees", _config(intermediate_size=100), file=None),
    hf_case("config-head_dim-2pow60", _config(head_dim=2**60), file="config.json"),
    hf_case("config-context-0", _config(max_position_embeddings=0), file="config.json"),
    hf_case("config-rope_theta-negative", _config(rope_theta=-10000.0), file="config.json"),
    hf_case("config-quantization-bits-5", _config(quantization={"group_size": 32, "bits": 5}), file="config.json"),
    # Tokenizer files.
    hf_case("tokenizer-not-json", lambda s: setattr(s, "tokenizer", b'{"model": {'), file="tokenizer.json"),
    hf_case("tokenizer-json-list", lambda s: setattr(s, "tokenizer", b"[]"), file="tokenizer.json"),
    hf_case("tokenizer-missing", lambda s: setattr(s, "tokenizer", None), file="tokenizer.json"),
    hf_case("tokenizer-no-model", _tokenizer(lambda t: t.pop("model")), file="tokenizer.json"),
    hf_case("tokenizer-empty-vocab", _tokenizer(lambda t: (t["model"].update(vocab={}, merges=[]),
                                                            t.update(added_tokens=[]))), file="tokenizer.json"),
    hf_case("tokenizer-merge-unknown-token", _tokenizer(_set(["model", "merges"], [["zzqx", "qqzx"]])),
            file="tokenizer.json"),
    hf_case("tokenizer-vocab-id-2pow40", _tokenizer(_vocab_id("zzqx", 2**40)), file="tokenizer.json"),
    hf_case("tokenizer-vocab-id-negative", _tokenizer(_vocab_id("zzqx", -1)), file="tokenizer.json"),
    hf_case("tokenizer-vocab-id-string", _tokenizer(_vocab_id("zzqx", "7")), file="tokenizer.json"),
    hf_case("tokenizer-added-id-2pow40", _tokenizer(_first_added_id(2**40)), file="tokenizer.json"),
    hf_case("tokenizer-model-WordPiece", _tokenizer(_set(["model", "type"], "WordPiece")), file="tokenizer.json"),
    hf_case("tokenizer_config-not-json", lambda s: setattr(s, "tokenizer_config", b"{'bos': 1"),
            file="tokenizer_config.json"),
    hf_case("tokenizer_config-chat-template-invalid",
            lambda s: s.tokenizer_config.update(chat_template="{% for m in messages %}{{ m['content'] }"),
            file="tokenizer_config.json"),
    hf_case("generation_config-eos-2pow40", lambda s: setattr(s, "generation_config", {"eos_token_id": 2**40}),
            file="generation_config.json"),
    hf_case("generation_config-eos-list-2pow40", lambda s: setattr(s, "generation_config", {"eos_token_id": [2, 2**40]}),
            file="generation_config.json"),
]


def _hf_expected_tensor(case: Case, outcome: Outcome) -> str | None:
    if case.tensor == "<any>":  # truncated data: whichever tensor the reader meets first past the cut
        return next((n for n in hf_tensors(HF_CONFIG) if n in outcome.stderr), "a tensor name")
    return case.tensor


@pytest.mark.parametrize("case", HF_CASES, ids=lambda c: c.id)
def test_huggingface_directory(case: Case, loader_bin, case_dir):
    path = case.make(None, case_dir)
    outcome = run_generate(loader_bin, path)
    if case.valid:
        assert_loads(case.id, outcome)
    else:
        assert_clean_failure(case.id, outcome, case.names(path), _hf_expected_tensor(case, outcome))


@pytest.mark.parametrize("case", [c for c in HF_CASES if c.server], ids=lambda c: c.id)
def test_huggingface_directory_server(case: Case, loader_server_bin, case_dir):
    path = case.make(None, case_dir)
    outcome = run_server(loader_server_bin, path, case_dir)
    assert_clean_failure(f"server {case.id}", outcome, case.names(path), _hf_expected_tensor(case, outcome))
