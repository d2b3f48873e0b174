#!/usr/bin/env python3
"""Writes Llama-3.2-1B-shaped GGUF files with random weights for the compute benchmark.

    python Benchmarks/generate/make_random_gguf.py --out models/bench --types Q4_0,Q8_0,F16,Q4_K_M

Each type gives `llama-3.2-1b-random-{TYPE}.gguf` (with `--layers N` other than 16:
`llama-3.2-1b-random-{N}l-{TYPE}.gguf`). Shapes and metadata are those llama.cpp's
`convert_hf_to_gguf.py` writes for meta-llama/Llama-3.2-1B (architecture `llama`): hidden 2048,
feed-forward 8192, 16 blocks, 32 heads / 8 KV heads of 64, vocabulary 128256, tied embeddings
(no `output.weight`), RMS epsilon 1e-5, RoPE theta 500000 with Llama 3 scaling stored as the
`rope_freqs.weight` tensor, context length 131072.

Weights: normal with std 0.02 (norm weights 1.0), drawn per tensor from `--seed` and the tensor's
name, so the files hold the same weights before quantisation. For Q4_0, Q8_0 and F16 every
matrix, the token embedding included, is in the file's type (like `llama-quantize --pure`; a
plain `llama-quantize Q4_0` would store the tied embedding as Q6_K); norms and `rope_freqs` are
F32. Quantisation is `gguf.quants.quantize` (bit-exact with ggml's reference Q4_0 / Q8_0).

Q4_K_M and Q5_K_M mix types as `llama-quantize` does for them: the tied embedding (the output)
is Q6_K; `attn_v` and `ffn_down` are Q6_K in the layers llama.cpp's `use_more_bits` picks (the
first and last eighth, every third between) and Q4_K / Q5_K elsewhere, like every other matrix.
K-quant blocks come from `kquants.py` (a plain rounding quantiser; the gguf package has none).

Tokenizer: a synthetic byte-level BPE in Llama 3's layout (`tokenizer.ggml.model` "gpt2", pre
"llama-bpe"): ids 0-255 are the 256 byte symbols in GPT-2's byte-to-unicode order, 256-127999
are merged letter strings ("ab", then "abc", ...) with one merge rule each, 128000-128255 are
Llama 3's special tokens as control tokens (bos 128000, eos 128001). Text tokenises, but into
nonsense: only for loading and timing.

Files are written to a temporary name and renamed when complete; existing files are kept unless
--force.
"""

import argparse
import math
import os
import string
import sys
import time
import zlib
from pathlib import Path

import numpy as np

import gguf
from kquants import quantize as quantize_k

HIDDEN = 2048
INTERMEDIATE = 8192
LAYERS = 16
HEADS = 32
KV_HEADS = 8
HEAD_DIM = 64
VOCAB = 128256
CONTEXT = 131072
RMS_EPS = 1e-5
ROPE_THETA = 500000.0
ROPE_SCALING = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
BOS, EOS = 128000, 128001
STD = 0.02

Q = gguf.GGMLQuantizationType
# File type name: (the matrices' type, the file type, the type of the tensors given more bits).
TYPES = {
    "F16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "Q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    "Q4_0": (Q.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_0),
    "Q4_K_M": (Q.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_M, Q.Q6_K),
    "Q5_K_M": (Q.Q5_K, gguf.LlamaFileType.MOSTLY_Q5_K_M, Q.Q6_K),
}


def use_more_bits(layer: int, layers: int) -> bool:
    """llama.cpp's choice of the `attn_v` / `ffn_down` layers that get more bits in *_K_M."""
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def matrix_type(type_name: str, name: str, layers: int) -> gguf.GGMLQuantizationType:
    base, _, more = TYPES[type_name]
    if name == "token_embd.weight":
        return more
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(int(name.split(".")[1]), layers):
        return more
    return base


def llama3_rope_factors() -> np.ndarray:
    """`rope_freqs.weight` as convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors computes it
    (float32 like its torch code)."""
    dim = HEAD_DIM
    freqs = np.float32(1.0) / (np.float32(ROPE_THETA) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    factor = ROPE_SCALING["factor"]
    low_freq_factor = ROPE_SCALING["low_freq_factor"]
    high_freq_factor = ROPE_SCALING["high_freq_factor"]
    old_context_len = ROPE_SCALING["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    factors = []
    for freq in freqs:
        wavelen = np.float32(2 * math.pi) / freq
        if wavelen < high_freq_wavelen:
            factors.append(1)
        elif wavelen > low_freq_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in its order (Llama 3's ids 0-255)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def llama3_special_tokens() -> list[str]:
    named = {
        0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
        7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>",
    }
    tokens, reserved = [], 0
    for i in range(VOCAB - BOS):
        if i in named:
            tokens.append(named[i])
        else:
            tokens.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return tokens


def synthetic_vocab() -> tuple[list[str], list[int], list[str]]:
    tokens = bytes_to_unicode()
    merges: list[str] = []
    letters = string.ascii_lowercase + string.ascii_uppercase
    pieces = [a + b for a in letters for b in letters]
    level = pieces
    while len(tokens) < BOS:
        for piece in level:
            if len(tokens) == BOS:
                break
            tokens.append(piece)
            merges.append(f"{piece[:-1]} {piece[-1]}")
        level = [piece + c for piece in level for c in letters]
    types = [int(gguf.TokenType.NORMAL)] * BOS
    special = llama3_special_tokens()
    tokens += special
    types += [int(gguf.TokenType.CONTROL)] * len(special)
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB
    return tokens, types, merges


def tensor_plan(layers: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, kind) in file order; kind: "rope", "norm" or "matrix"."""
    plan = [("rope_freqs.weight", (HEAD_DIM // 2,), "rope"), ("token_embd.weight", (VOCAB, HIDDEN), "matrix")]
    for i in range(layers):
        plan += [
            (f"blk.{i}.attn_norm.weight", (HIDDEN,), "norm"),
            (f"blk.{i}.attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), "matrix"),
            (f"blk.{i}.attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), "matrix"),
            (f"blk.{i}.attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), "matrix"),
            (f"blk.{i}.attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), "matrix"),
            (f"blk.{i}.ffn_norm.weight", (HIDDEN,), "norm"),
            (f"blk.{i}.ffn_gate.weight", (INTERMEDIATE, HIDDEN), "matrix"),
            (f"blk.{i}.ffn_up.weight", (INTERMEDIATE, HIDDEN), "matrix"),
            (f"blk.{i}.ffn_down.weight", (HIDDEN, INTERMEDIATE), "matrix"),
        ]
    plan.append(("output_norm.weight", (HIDDEN,), "norm"))
    return plan


def tensor_data(name: str, shape: tuple[int, ...], kind: str, qtype: gguf.GGMLQuantizationType, seed: int) -> np.ndarray:
    if kind == "rope":
        return llama3_rope_factors()
    if kind == "norm":
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    weights = rng.standard_normal(shape, dtype=np.float32)
    weights *= np.float32(STD)
    return quantize_k(weights, qtype)


def write_file(path: Path, type_name: str, layers: int, seed: int, vocab) -> None:
    _, file_type, _ = TYPES[type_name]
    tokens, token_types, merges = vocab
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(f"Llama 3.2 1B random {type_name}" + ("" if layers == LAYERS else f" ({layers} layers)"))
    writer.add_size_label("1B")
    writer.add_block_count(layers)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_file_type(int(file_type))
    writer.add_vocab_size(VOCAB)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    plan = tensor_plan(layers)
    for name, shape, kind in plan:
        qtype = matrix_type(type_name, name, layers)
        if kind == "matrix" and qtype != gguf.GGMLQuantizationType.F16:
            block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
            byte_shape = (shape[0], shape[1] // block_size * type_size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), raw_dtype=qtype)
        else:
            dtype = np.dtype(np.float16) if kind == "matrix" else np.dtype(np.float32)
            writer.add_tensor_info(name, shape, dtype, math.prod(shape) * dtype.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shape, kind in plan:
        writer.write_tensor_data(tensor_data(name, shape, kind, matrix_type(type_name, name, layers), seed))
    writer.close()
    os.replace(partial, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/bench", help="output directory (default: models/bench)")
    parser.add_argument("--types", default="Q4_0,Q8_0,F16", help="comma-separated, of " + ", ".join(TYPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=LAYERS, help=f"blocks (default {LAYERS}; fewer for quick tests)")
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = parser.parse_args()
    types = [t.strip().upper() for t in args.types.split(",") if t.strip()]
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        parser.error(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(TYPES)}")
    if args.layers < 1:
        parser.error("--layers must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = None
    for type_name in types:
        stem = "llama-3.2-1b-random" + ("" if args.layers == LAYERS else f"-{args.layers}l")
        path = out / f"{stem}-{type_name}.gguf"
        if path.exists() and not args.force:
            print(f"{path} exists, kept", file=sys.stderr)
            print(path)
            continue
        vocab = vocab or synthetic_vocab()
        start = time.monotonic()
        write_file(path, type_name, args.layers, args.seed, vocab)
        print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB in {time.monotonic() - start:.0f} s", file=sys.stderr)
        print(path)


if __name__ == "__main__":
    main()
