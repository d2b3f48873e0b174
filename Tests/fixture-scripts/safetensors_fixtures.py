#!/usr/bin/env python3
"""Makes tiny Hugging Face and MLX-quantized model directories for the model-files tests.
Not run in CI; numpy only. Writes into Tests/TLLMModelFilesTests/Fixtures:

  hf-tiny/            config.json (llama), two safetensors shards + model.safetensors.index.json,
                      tensors in F32, F16 and BF16
  mlx-tiny-4bit/      config.json with quantization {group_size: 32, bits: 4}, model.safetensors
  mlx-tiny-8bit/      the same with 8 bits
  safetensors_expected.json   float32 values (base64) the reader must produce for chosen tensors

MLX's affine quantisation (mlx.core.quantize, documented): per group of `group_size`
consecutive weights of a row, scale = (max - min) / (2**bits - 1), bias = min,
q = round((w - bias) / scale) clipped to [0, 2**bits - 1]; packed little-endian into uint32
words, element i of a row at bits [i*bits, (i+1)*bits) of the row's bit stream; scales and
biases stored as float16; dequantised as scale * q + bias.
"""
import base64
import json
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "Tests" / "TLLMModelFilesTests" / "Fixtures"
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 32,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
}


def bf16_bytes(a):
    bits = a.astype(np.float32).view(np.uint32)
    rounded = ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded.tobytes(), (rounded.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, bytes, shape)."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, (dtype, data, shape) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def quantize_mlx(w, group_size, bits):
    rows, cols = w.shape
    groups = w.reshape(rows, cols // group_size, group_size)
    lo, hi = groups.min(axis=-1), groups.max(axis=-1)
    levels = 2**bits - 1
    scale = ((hi - lo) / levels).astype(np.float16)
    bias = lo.astype(np.float16)
    s32, b32 = scale.astype(np.float32)[..., None], bias.astype(np.float32)[..., None]
    q = np.clip(np.round((groups - b32) / np.where(s32 == 0, 1, s32)), 0, levels).astype(np.uint64).reshape(rows, cols)
    packed = np.zeros((rows, cols * bits // 32), dtype=np.uint32)
    for i in range(cols):
        bit = i * bits
        word, shift = bit // 32, bit % 32
        packed[:, word] |= ((q[:, i] << np.uint64(shift)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        if shift + bits > 32:
            packed[:, word + 1] |= (q[:, i] >> np.uint64(32 - shift)).astype(np.uint32)
    dequant = (s32 * q.reshape(rows, cols // group_size, group_size).astype(np.float32) + b32).reshape(rows, cols)
    return packed, scale, bias, dequant.astype(np.float32)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()


def main():
    rng = np.random.default_rng(7)
    expected = {}

    hf = OUT / "hf-tiny"
    hf.mkdir(parents=True, exist_ok=True)
    (hf / "config.json").write_text(json.dumps(CONFIG, indent=1))
    embed = rng.normal(0, 1, (32, 64)).astype(np.float32)
    q_proj = rng.normal(0, 0.1, (64, 64)).astype(np.float16)
    bf_bytes, bf_values = bf16_bytes(rng.normal(0, 0.1, (128, 64)))
    norm = (1 + rng.normal(0, 0.01, 64)).astype(np.float32)
    shard1 = {"model.embed_tokens.weight": ("F32", embed.tobytes(), embed.shape),
              "model.layers.0.self_attn.q_proj.weight": ("F16", q_proj.tobytes(), q_proj.shape)}
    shard2 = {"model.layers.1.mlp.up_proj.weight": ("BF16", bf_bytes, (128, 64)),
              "model.norm.weight": ("F32", norm.tobytes(), norm.shape)}
    write_safetensors(hf / "model-00001-of-00002.safetensors", shard1)
    write_safetensors(hf / "model-00002-of-00002.safetensors", shard2)
    weight_map = {n: "model-00001-of-00002.safetensors" for n in shard1}
    weight_map.update({n: "model-00002-of-00002.safetensors" for n in shard2})
    (hf / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    expected["hf-tiny"] = {"model.embed_tokens.weight": b64(embed),
                           "model.layers.0.self_attn.q_proj.weight": b64(q_proj.astype(np.float32)),
                           "model.layers.1.mlp.up_proj.weight": b64(bf_values), "model.norm.weight": b64(norm)}

    for bits in (4, 8):
        d = OUT / f"mlx-tiny-{bits}bit"
        d.mkdir(parents=True, exist_ok=True)
        config = dict(CONFIG, quantization={"group_size": 32, "bits": bits})
        (d / "config.json").write_text(json.dumps(config, indent=1))
        w = rng.normal(0, 0.1, (128, 64)).astype(np.float32)
        packed, scale, bias, dequant = quantize_mlx(w, 32, bits)
        tensors = {"model.layers.0.mlp.up_proj.weight": ("U32", packed.tobytes(), packed.shape),
                   "model.layers.0.mlp.up_proj.scales": ("F16", scale.tobytes(), scale.shape),
                   "model.layers.0.mlp.up_proj.biases": ("F16", bias.tobytes(), bias.shape),
                   "model.norm.weight": ("F32", norm.tobytes(), norm.shape)}
        write_safetensors(d / "model.safetensors", tensors)
        expected[f"mlx-tiny-{bits}bit"] = {"model.layers.0.mlp.up_proj.weight": b64(dequant),
                                           "original": b64(w)}
    (OUT / "safetensors_expected.json").write_text(json.dumps(expected))
    print("ok")


if __name__ == "__main__":
    main()
