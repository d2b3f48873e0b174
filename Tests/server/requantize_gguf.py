#!/usr/bin/env python3
"""Copies a GGUF file with some tensors requantised to other types (the metadata, tokenizer and
every other tensor unchanged), with the `gguf` package and Benchmarks/generate/kquants.py:

    python Tests/server/requantize_gguf.py IN OUT 'blk.*.ffn_down.weight=Q6_K' ...

A tensor takes the first pattern (fnmatch) that matches its name; a type list `A/B/C` cycles
over the layers (layer i takes item i mod 3), so one file can hold several types. Weights are
dequantised to float32 and quantised again, so the copy is a slightly different model.
"""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import numpy as np

import gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "Benchmarks" / "generate"))
from kquants import quantize  # noqa: E402


def target_type(name: str, rules: list[tuple[str, list[str]]]) -> gguf.GGMLQuantizationType | None:
    for pattern, types in rules:
        if fnmatch.fnmatchcase(name, pattern):
            parts = name.split(".")
            layer = int(parts[1]) if len(parts) > 2 and parts[0] == "blk" else 0
            return gguf.GGMLQuantizationType[types[layer % len(types)]]
    return None


def requantize(source: Path, destination: Path, rules: list[tuple[str, list[str]]]) -> dict[str, str]:
    """Writes the copy; returns the new type of each tensor it changed."""
    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(destination, architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type)
    changed = {}
    for tensor in reader.tensors:
        # GGUF dimensions run fastest first; numpy shapes slowest first.
        shape = [int(d) for d in reversed(tensor.shape.tolist())]
        new_type = target_type(tensor.name, rules)
        if new_type is None or new_type == tensor.tensor_type:
            writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
            continue
        weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(shape).astype(np.float32)
        blocks = quantize(weights, new_type)
        writer.add_tensor(tensor.name, blocks, raw_shape=blocks.shape, raw_dtype=new_type)
        changed[tensor.name] = new_type.name
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return changed


def parse_rules(arguments: list[str]) -> list[tuple[str, list[str]]]:
    rules = []
    for argument in arguments:
        pattern, _, types = argument.partition("=")
        rules.append((pattern, types.split("/")))
    return rules


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    for name, kind in requantize(Path(sys.argv[1]), Path(sys.argv[2]), parse_rules(sys.argv[3:])).items():
        print(f"{name}: {kind}")
