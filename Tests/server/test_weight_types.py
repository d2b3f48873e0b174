"""GGUF weight types beyond the default model's Q4_1, end to end through `tllm-generate`.

The default model is copied with `ffn_down` in Q4_K / Q5_K / Q6_K (by layer) and `attn_q` in
Q5_0 / Q5_1 (requantize_gguf.py); SmolLM2's other matrices have 576 inputs, not whole 256-weight
K blocks. Greedy continuations with float32 activations (exact dequantisation, float dot
products: the reference arithmetic) must equal those of int16 (the default: the integer K-quant
kernels in decode, AMX tiles or sgemm for the prompt). The kernels' own tests compare every
SIMD path with the scalar reference; this checks they are wired into a real model.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from requantize_gguf import parse_rules, requantize
from tllm_server_helpers import GENERATE_TIMEOUT, PROMPTS, REPO_ROOT, THREADS

MAX_TOKENS = 32
RULES = ["blk.*.ffn_down.weight=Q4_K/Q5_K/Q6_K", "blk.*.attn_q.weight=Q5_0/Q5_1"]


@pytest.fixture(scope="module")
def mixed_model(model_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "smollm2-mixed-types.gguf"
    changed = requantize(model_path, path, parse_rules(RULES))
    assert sorted(set(changed.values())) == ["Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K"], changed
    assert len(changed) == 60, changed
    return path


def run_generate(generate_bin, model, prompt: str, activations: str) -> tuple[str, int]:
    args = [
        str(generate_bin), "--model_path", str(model), "--prompt", prompt, "--max_tokens", str(MAX_TOKENS),
        "--threads", str(THREADS), "--activations", activations,
    ]  # fmt: skip
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=GENERATE_TIMEOUT, cwd=REPO_ROOT)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, f"tllm-generate --activations {activations} exited {p.returncode}:\n{err}"
    m = re.search(r"generated (\d+) tokens", err)
    assert m, f"no token count in stderr:\n{err}"
    return p.stdout.decode("utf-8", "replace")[:-1], int(m.group(1))


@pytest.mark.parametrize("prompt", PROMPTS, ids=["ascii-question", "ascii-haiku", "chinese"])
def test_int16_kernels_follow_the_float_path(generate_bin, mixed_model, prompt):
    reference, count = run_generate(generate_bin, mixed_model, prompt, "float32")
    assert reference.strip(), "the float path generated nothing"
    text, int16_count = run_generate(generate_bin, mixed_model, prompt, "int16")
    assert (text, int16_count) == (reference, count), f"int16 {text!r}\n!= float32 {reference!r}"


def test_a_type_we_cannot_read_is_refused_clearly(generate_bin, model_path, tmp_path):
    """A tensor in a type we do not read (IQ2_XXS here, by rewriting one tensor's type id in
    a copy) fails at load with the tensor, its type and the supported types named."""
    import gguf

    reader = gguf.GGUFReader(model_path)
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_k.weight")
    data = bytearray(model_path.read_bytes())
    # The tensor info: name, dimension count, dimensions, type (uint32), offset. Find the name.
    name = tensor.name.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    dims = int.from_bytes(data[at : at + 4], "little")
    type_at = at + 4 + 8 * dims
    assert int.from_bytes(data[type_at : type_at + 4], "little") == int(tensor.tensor_type)
    data[type_at : type_at + 4] = int(gguf.GGMLQuantizationType.IQ2_XXS).to_bytes(4, "little")
    broken = tmp_path / "unreadable-type.gguf"
    broken.write_bytes(data)
    args = [str(generate_bin), "--model_path", str(broken), "--prompt", "Hi", "--max_tokens", "4"]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=GENERATE_TIMEOUT, cwd=REPO_ROOT)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0, "a model with an unreadable tensor type loaded"
    assert "IQ2_XXS" in err and "blk.0.attn_k.weight" in err and "Q4_K" in err, err
