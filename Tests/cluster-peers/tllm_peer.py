"""What the Python peers (python_worker.py, python_master.py) share: the gRPC stubs, the tensor
codec, and a float32 numpy Llama over the layers of a GGUF file.

Written from /work/shared/spec/tllm-protocol.md (section 2: messages, tensor payload) and
Tests/fixture-scripts/reference_logits.py (the forward pass: Q/K rows un-permuted from
llama.cpp's rotary layout back to Hugging Face's, rotated with `rotate_half`).
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import lz4.frame
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = REPO_ROOT / "Protos" / "schemas.proto"

MAX_MESSAGE = 128 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_metadata_size", 32 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),  # loopback traffic never goes through a proxy from the environment
]
LZ4_MIN_ROWS = 64
PP_TIMEOUT = 10.0  # seconds the master waits for a step (spec section 2)


def log(who: str, message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [{who}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# gRPC stubs, generated from Protos/schemas.proto at start-up


def load_stubs():
    """(schemas_pb2, schemas_pb2_grpc) generated into a temporary directory."""
    import grpc_tools
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="tllm-peer-pb-")
    atexit.register(shutil.rmtree, out, True)
    wkt = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO.parent}", f"-I{wkt}", f"--python_out={out}", f"--grpc_python_out={out}", str(PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"grpc_tools.protoc failed on {PROTO}")
    sys.path.insert(0, out)
    return importlib.import_module("schemas_pb2"), importlib.import_module("schemas_pb2_grpc")


def channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=GRPC_OPTIONS)


def grpc_target(host: str, port: int) -> str:
    """host:port, IPv6 in brackets."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------
# Tensor payload: [rows, hidden] float16 little-endian, LZ4 frame when rows >= 64


def encode_tensor(pb2, x: np.ndarray):
    rows, cols = x.shape
    with np.errstate(over="ignore"):
        raw = np.ascontiguousarray(x, dtype="<f2").tobytes()
    data = lz4.frame.compress(raw) if rows >= LZ4_MIN_ROWS else raw
    return pb2.BFloat16Tensor(data=data, shape=[rows, cols])


def decode_tensor(tensor) -> np.ndarray:
    """float32 [rows, cols]; ValueError when the payload does not match its shape."""
    shape = list(tensor.shape)
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape {shape} is not [rows, hidden]")
    if shape[0] * shape[1] * 2 > MAX_MESSAGE:
        raise ValueError(f"shape {shape} is larger than a message may be")
    try:
        raw = lz4.frame.decompress(tensor.data) if shape[0] >= LZ4_MIN_ROWS else tensor.data
    except RuntimeError as error:
        raise ValueError(f"not an LZ4 frame: {error}") from None
    if len(raw) != shape[0] * shape[1] * 2:
        raise ValueError(f"{len(raw)} bytes for shape {shape}")
    return np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float32)


# --------------------------------------------------------------------------
# The model (GGUF, dequantised with the `gguf` package)


class GGUFModel:
    def __init__(self, path):
        from gguf import GGUFReader

        self.reader = GGUFReader(str(path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        arch = self.field("general.architecture")
        self.hidden = int(self.field(f"{arch}.embedding_length"))
        self.layers = int(self.field(f"{arch}.block_count"))
        self.heads = int(self.field(f"{arch}.attention.head_count"))
        self.kv_heads = int(self.field(f"{arch}.attention.head_count_kv"))
        self.eps = float(self.field(f"{arch}.attention.layer_norm_rms_epsilon"))
        self.theta = float(self.field(f"{arch}.rope.freq_base"))
        self.head_dim = self.hidden // self.heads

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        return default if f is None else f.contents()

    def tensor(self, name) -> np.ndarray:
        from gguf.quants import dequantize

        t = self.tensors[name]
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        return values.reshape([int(x) for x in reversed(t.shape.tolist())])

    def head_weight(self) -> np.ndarray:
        """The LM head [vocab, hidden] (tied to the embedding when output.weight is absent)."""
        return self.tensor("output.weight" if "output.weight" in self.tensors else "token_embd.weight")


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps).astype(np.float32) * w


def unpermute(w, heads):
    # Inverse of convert_hf_to_gguf.py's permute(): back to Hugging Face row order.
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class Sequence:
    """One request's KV cache: per layer, keys and values [kv_heads, length, head_dim]."""

    def __init__(self, layers):
        self.k = [None] * layers
        self.v = [None] * layers
        self.length = 0
        self.used = time.monotonic()


class DecoderLayers:
    """Layers [start, end) of a GGUF Llama in float32; `forward` runs a whole step (the rows of
    several requests, each continuing its own cache) with one matrix product per weight."""

    def __init__(self, model: GGUFModel, start: int, end: int):
        self.m = model
        self.start, self.end = start, end
        self.weights = []
        for i in range(start, end):
            p = f"blk.{i}."
            t = model.tensor
            wq = unpermute(t(p + "attn_q.weight"), model.heads)
            wk = unpermute(t(p + "attn_k.weight"), model.kv_heads)
            self.weights.append({
                "attn_norm": t(p + "attn_norm.weight"),
                "qkv": np.ascontiguousarray(np.concatenate([wq, wk, t(p + "attn_v.weight")]).T),
                "o": np.ascontiguousarray(t(p + "attn_output.weight").T),
                "ffn_norm": t(p + "ffn_norm.weight"),
                "gate_up": np.ascontiguousarray(np.concatenate([t(p + "ffn_gate.weight"), t(p + "ffn_up.weight")]).T),
                "down": np.ascontiguousarray(t(p + "ffn_down.weight").T),
            })
        d = model.head_dim
        self.inv_freq = model.theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)

    def rotary(self, start, n):
        angles = np.outer(np.arange(start, start + n), self.inv_freq)
        angles = np.concatenate([angles, angles], axis=-1)
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)

    def forward(self, x: np.ndarray, batch: list[tuple[Sequence, int]]) -> np.ndarray:
        """x: [rows, hidden], the rows of each (sequence, count) of `batch` in order."""
        m = self.m
        H, KV, d = m.heads, m.kv_heads, m.head_dim
        bounds = np.cumsum([0] + [n for _, n in batch])
        ropes = [self.rotary(seq.length, n) for seq, n in batch]
        for li, w in enumerate(self.weights):
            h = rms_norm(x, w["attn_norm"], m.eps)
            qkv = h @ w["qkv"]
            out = np.empty((x.shape[0], m.hidden), dtype=np.float32)
            for (seq, n), (cos, sin), a, b in zip(batch, ropes, bounds[:-1], bounds[1:]):
                q = qkv[a:b, : H * d].reshape(n, H, d).transpose(1, 0, 2)
                k = qkv[a:b, H * d : (H + KV) * d].reshape(n, KV, d).transpose(1, 0, 2)
                v = qkv[a:b, (H + KV) * d :].reshape(n, KV, d).transpose(1, 0, 2)
                q = q * cos + rotate_half(q) * sin
                k = k * cos + rotate_half(k) * sin
                if seq.k[li] is not None:
                    k = np.concatenate([seq.k[li], k], axis=1)
                    v = np.concatenate([seq.v[li], v], axis=1)
                seq.k[li], seq.v[li] = k, v
                total = k.shape[1]
                k = np.repeat(k, H // KV, axis=0)
                v = np.repeat(v, H // KV, axis=0)
                scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d))
                # Row i sits at position total - n + i and sees keys 0 ... that position.
                mask = np.arange(total)[None, :] > (total - n + np.arange(n))[:, None]
                scores = np.where(mask, -np.inf, scores)
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                scores /= scores.sum(-1, keepdims=True)
                out[a:b] = (scores @ v).transpose(1, 0, 2).reshape(n, m.hidden)
            x = x + out @ w["o"]
            h = rms_norm(x, w["ffn_norm"], m.eps)
            gu = h @ w["gate_up"]
            g, u = gu[:, : gu.shape[1] // 2], gu[:, gu.shape[1] // 2 :]
            x = x + ((g / (1 + np.exp(-g))) * u) @ w["down"]
        for seq, n in batch:
            seq.length += n
            seq.used = time.monotonic()
        return x
