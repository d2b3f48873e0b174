#!/usr/bin/env python3
"""Makes the GGUF fixtures of Tests/TLLMModelFilesTests/Fixtures with the `gguf` package
(PyPI), the reference reader and dequantiser. Not run in CI; rerun after changing it:

    python Tests/fixture-scripts/gguf_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]

Writes
  smollm2_gguf_summary.json  what gguf.GGUFReader reports for the default model: version,
                             every metadata key with its type and value (arrays: type,
                             length, first/last items), every tensor's name, dimensions (GGUF
                             order), type and absolute data offset.
  dequant_<TYPE>.json        for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K,
                             Q5_K, Q6_K, IQ4_NL, IQ4_XS: random blocks
                             (scales forced finite) and, where the default model has the
                             type, its first blocks; with gguf.quants.dequantize's float32
                             output, base64 encoded.
"""
import base64
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T, GGUFValueType as V
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "Tests" / "TLLMModelFilesTests" / "Fixtures"
MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def field_value(field):
    types = field.types
    if types[0] == V.ARRAY:
        if types[1] == V.STRING:
            items = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        else:
            items = [field.parts[i].tolist()[0] for i in field.data]
        return {"type": "array", "element_type": types[1].name, "length": len(items),
                "head": items[:5], "tail": items[-3:]}
    if types[0] == V.STRING:
        return {"type": "STRING", "value": bytes(field.parts[field.data[0]]).decode("utf-8")}
    value = field.parts[field.data[0]].tolist()[0]
    return {"type": types[0].name, "value": value}


def summary():
    reader = GGUFReader(MODEL)
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        metadata[name] = field_value(field)
    # t.shape is in GGUF order (the contiguous dimension first), like our `dimensions`.
    tensors = [{"name": t.name, "dimensions": [int(x) for x in t.shape.tolist()],
                "type": t.tensor_type.name, "offset": int(t.data_offset), "n_bytes": int(t.n_bytes)} for t in reader.tensors]
    version = int(reader.fields["GGUF.version"].parts[-1][0])
    return reader, {"file": MODEL.name, "version": version, "metadata": metadata, "tensors": tensors}


def random_blocks(qtype, count, rng):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(count, type_size), dtype=np.uint8)
    halves = lambda n: rng.normal(0, 0.05, size=(count, n)).astype(np.float16).view(np.uint8).reshape(count, -1)
    if qtype in (T.Q4_0, T.Q5_0, T.Q8_0, T.IQ4_NL, T.IQ4_XS):
        raw[:, 0:2] = halves(1)
    elif qtype in (T.Q4_1, T.Q5_1):
        raw[:, 0:4] = halves(2)
    elif qtype == T.Q2_K:
        raw[:, type_size - 4:] = halves(2)
    elif qtype == T.Q3_K:
        raw[:, type_size - 2:] = halves(1)
    elif qtype in (T.Q4_K, T.Q5_K):
        raw[:, 0:4] = halves(2)
    elif qtype == T.Q6_K:
        raw[:, type_size - 2:] = halves(1)
    elif qtype == T.F16:
        raw = rng.normal(0, 3, size=(count, 1)).astype(np.float16).view(np.uint8).reshape(count, -1)
    elif qtype == T.BF16:
        f = rng.normal(0, 3, size=(count,)).astype(np.float32).view(np.uint32) >> 16
        raw = f.astype(np.uint16).view(np.uint8).reshape(count, -1)
    return raw


def dequant_fixture(qtype, blocks):
    block_size, _ = GGML_QUANT_SIZES[qtype]
    n = blocks.shape[0] * block_size
    expected = dequantize(blocks.reshape(-1), qtype).astype(np.float32).reshape(-1)
    assert expected.size == n
    return {"blocks": base64.b64encode(blocks.tobytes()).decode(), "count": int(n),
            "expected": base64.b64encode(expected.tobytes()).decode()}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    reader, info = summary()
    (OUT / "smollm2_gguf_summary.json").write_text(json.dumps(info, indent=1, ensure_ascii=False))
    rng = np.random.default_rng(20261127)
    for qtype in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
                  T.IQ4_NL, T.IQ4_XS):
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        count = 64 if block_size > 1 else 2048
        fixture = {"type": qtype.name, "random": dequant_fixture(qtype, random_blocks(qtype, count, rng))}
        real = next((t for t in reader.tensors if t.tensor_type == qtype), None)
        if real is not None:
            blocks = np.asarray(real.data).view(np.uint8).reshape(-1)[: 32 * type_size].reshape(32, type_size)
            fixture["real"] = dequant_fixture(qtype, blocks)
            fixture["real"]["tensor"] = real.name
        (OUT / f"dequant_{qtype.name}.json").write_text(json.dumps(fixture))
    print("wrote", sorted(p.name for p in OUT.glob("*.json")))


if __name__ == "__main__":
    main()
