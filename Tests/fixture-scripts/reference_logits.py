#!/usr/bin/env python3
"""Float32 numpy reference of a Llama-family forward pass on the default model's GGUF
weights (dequantised by the `gguf` package), written from the Hugging Face semantics:
Q/K rows are un-permuted back from llama.cpp's rotary layout and rotated with
`rotate_half`. Not run in CI. Writes Tests/TLLMComputeTests/Fixtures/reference_logits.json:
the token ids of a text (tokenized with `tokenizers` and SmolLM2's tokenizer.json), and per position the top-5 token ids with their log-probs and
the log-softmax of the whole row's argmax.

    python Tests/fixture-scripts/reference_logits.py [model.gguf]
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "Tests" / "TLLMComputeTests" / "Fixtures" / "reference_logits.json"
TEXT = ("<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is Paris, a city known for the Eiffel Tower.")


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def tensor(reader, name):
    t = next(t for t in reader.tensors if t.name == name)
    values = dequantize(t.data, t.tensor_type).astype(np.float32)
    return values.reshape([int(x) for x in reversed(t.shape.tolist())])


def unpermute(w, heads):
    # Inverse of convert_hf_to_gguf.py's permute(): back to Hugging Face row order.
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps).astype(np.float32) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def forward(reader, ids):
    arch = field(reader, "general.architecture")
    hidden = field(reader, f"{arch}.embedding_length")
    layers = field(reader, f"{arch}.block_count")
    heads = field(reader, f"{arch}.attention.head_count")
    kv_heads = field(reader, f"{arch}.attention.head_count_kv")
    eps = field(reader, f"{arch}.attention.layer_norm_rms_epsilon")
    theta = field(reader, f"{arch}.rope.freq_base")
    d = hidden // heads
    n = len(ids)
    x = tensor(reader, "token_embd.weight")[ids]
    inv_freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.outer(np.arange(n), inv_freq)
    cos = np.cos(np.concatenate([angles, angles], axis=-1)).astype(np.float32)
    sin = np.sin(np.concatenate([angles, angles], axis=-1)).astype(np.float32)
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for i in range(layers):
        p = f"blk.{i}."
        h = rms_norm(x, tensor(reader, p + "attn_norm.weight"), eps)
        q = h @ unpermute(tensor(reader, p + "attn_q.weight"), heads).T
        k = h @ unpermute(tensor(reader, p + "attn_k.weight"), kv_heads).T
        v = h @ tensor(reader, p + "attn_v.weight").T
        q = q.reshape(n, heads, d).transpose(1, 0, 2)
        k = k.reshape(n, kv_heads, d).transpose(1, 0, 2)
        v = v.reshape(n, kv_heads, d).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, heads // kv_heads, axis=0)
        v = np.repeat(v, heads // kv_heads, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d)) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = x + attn @ tensor(reader, p + "attn_output.weight").T
        h = rms_norm(x, tensor(reader, p + "ffn_norm.weight"), eps)
        g = h @ tensor(reader, p + "ffn_gate.weight").T
        u = h @ tensor(reader, p + "ffn_up.weight").T
        x = x + ((g / (1 + np.exp(-g))) * u) @ tensor(reader, p + "ffn_down.weight").T
    x = rms_norm(x, tensor(reader, "output_norm.weight"), eps)
    names = {t.name for t in reader.tensors}
    head = tensor(reader, "output.weight" if "output.weight" in names else "token_embd.weight")
    return x @ head.T


def main():
    reader = GGUFReader(MODEL)
    from tokenizers import Tokenizer
    # SmolLM2's tokenizer.json, rebuilt from the GGUF vocabulary by tokenizers_fixtures.py.
    tokenizer = Tokenizer.from_file(str(ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures" / "smollm2-tokenizer.json"))
    ids = tokenizer.encode(TEXT, add_special_tokens=False).ids
    logits = forward(reader, ids).astype(np.float64)
    logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    top = np.argsort(-logprobs, axis=-1)[:, :5]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": MODEL.name, "text": TEXT, "ids": [int(i) for i in ids],
        "top_ids": top.tolist(),
        "top_logprobs": [[float(logprobs[p, t]) for t in row] for p, row in enumerate(top)],
    }))
    print(f"{len(ids)} tokens; first top ids {top[:3, 0].tolist()}")


if __name__ == "__main__":
    main()
