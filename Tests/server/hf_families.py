"""Tiny models of the decoder families we compute, made with random weights by `transformers`
(the reference implementation of each family), saved as Hugging Face safetensors directories and
converted to GGUF by llama.cpp's own `convert_hf_to_gguf.py`; and transformers' float32 scores
and greedy continuations to compare ours with.

The shapes are small but keep what distinguishes a family (a head dimension that is not
hidden / heads, grouped KV heads, per-head q/k norms, a tied or untied head). Weights are drawn
so that the next-token distributions are peaked (embeddings and norms of order one): near-uniform
logits would make top-1 agreement a coin toss between float summation orders.

The vocabulary and tokenizer are SmolLM2's (its tokenizer.json rebuilt from the default GGUF is a
test fixture), with the family's chat template where one is at hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_JSON = REPO_ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures" / "smollm2-tokenizer.json"
VOCABULARY = 49152
IM_START, IM_END = 1, 2  # <|im_start|>, <|im_end|> in SmolLM2's vocabulary


def llama_cpp_source() -> Path:
    """llama.cpp's tree from the llama-cpp-python sdist (scripts/llama-cpp-source.sh)."""
    if path := os.environ.get("TLLM_LLAMA_CPP_SOURCE"):
        return Path(path)
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "llama-cpp-source.sh")], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert out.returncode == 0, f"scripts/llama-cpp-source.sh failed:\n{out.stderr[-3000:]}"
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class TinyModel:
    family: str
    directory: Path  # the Hugging Face directory (safetensors, config.json, tokenizer)
    model: object  # the transformers model, float32, eval mode

    def gguf(self, outtype: str) -> Path:
        """The directory converted by llama.cpp's convert_hf_to_gguf.py (cached per type)."""
        out = self.directory.with_name(f"{self.directory.name}-{outtype}.gguf")
        if not out.exists():
            tree = llama_cpp_source()
            env = {**os.environ, "PYTHONPATH": str(tree / "gguf-py"), "NO_LOCAL_GGUF": ""}
            p = subprocess.run([sys.executable, str(tree / "convert_hf_to_gguf.py"), str(self.directory),
                                "--outtype", outtype, "--outfile", str(out)],
                               capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600)
            assert p.returncode == 0 and out.exists(), f"convert_hf_to_gguf.py failed:\n{p.stderr[-4000:]}"
        return out

    def gguf_per_expert(self) -> Path:
        """The F32 GGUF rewritten as early Mixtral files were (before llama.cpp merged experts):
        `blk.L.ffn_gate.E.weight` for each expert instead of `blk.L.ffn_gate_exps.weight`."""
        source = self.gguf("f32")
        out = source.with_name(source.stem + "-per-expert.gguf")

        def split(name: str, data: np.ndarray) -> list[tuple[str, np.ndarray]]:
            if "_exps." not in name:
                return [(name, data)]
            layer, kind = name.split(".")[1], name.split(".")[2].removesuffix("_exps")
            return [(f"blk.{layer}.{kind}.{e}.weight", data[e]) for e in range(data.shape[0])]

        return out if out.exists() else rewrite_gguf(source, out, tensors=split)

    def as_stored_in(self, gguf_path: Path) -> "TinyModel":
        """This model with each weight rounded as the GGUF file stores it (F16, BF16 or a block
        quantisation, by the `gguf` package's reference quantiser): the float reference for a file
        whose weights are not the float model's. Tensor names are mapped by gguf's own table (the
        one the converter uses); an expert's matrix is a slice of its merged tensor."""
        import copy
        import re

        import gguf
        import torch

        reader = gguf.GGUFReader(gguf_path)
        types = {t.name: t.tensor_type for t in reader.tensors}
        arch_name = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name)
        names = gguf.get_tensor_name_map(arch, self.model.config.num_hidden_layers)
        model = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, p in model.named_parameters():
                # transformers 5 holds experts fused in memory: `experts.gate_up_proj` [E, 2·width,
                # hidden] (each row of gate or up is a row of the file's gate / up tensor) and
                # `experts.down_proj` [E, hidden, width]; rows round independently.
                merged = re.sub(r"\.experts\.\d+\.", ".experts.", name)
                parts = [merged.replace("gate_up_proj", "gate_proj"), merged.replace("gate_up_proj", "up_proj")] \
                    if merged.endswith("experts.gate_up_proj") else [merged]
                parts = [part if part.endswith((".weight", ".bias")) else part + ".weight" for part in parts]
                stored = [names.get_name(part, try_suffixes=(".weight", ".bias")) for part in parts]
                assert all(n in types for n in stored), f"{name} ({stored}) is not in {gguf_path.name}"
                assert len({types[n] for n in stored}) == 1, f"{stored} differ in type"
                kind = types[stored[0]]
                if kind == gguf.GGMLQuantizationType.F32:
                    continue
                values = p.detach().numpy().astype(np.float32)
                if kind == gguf.GGMLQuantizationType.F16:
                    rounded = values.astype(np.float16).astype(np.float32)
                else:
                    rounded = gguf.quants.dequantize(gguf.quants.quantize(values, kind), kind).reshape(values.shape)
                p.copy_(torch.from_numpy(rounded))
        return TinyModel(self.family, self.directory, model)

    def scores(self, ids: list[int]) -> dict:
        """One float32 forward pass over `ids`: for each position but the last, the top-1 id, the
        gap to the runner-up (the margin) and the log-prob (float64 log-softmax) of the next id."""
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, -1)[:-1]
        top2 = torch.topk(logits[:-1], 2, dim=-1).values
        targets = torch.tensor(ids[1:])
        return {
            "top_ids": logprobs.argmax(-1).tolist(),
            "margins": (top2[:, 0] - top2[:, 1]).tolist(),
            "target_logprobs": logprobs[torch.arange(len(ids) - 1), targets].tolist(),
        }

    def greedy(self, ids: list[int], count: int) -> tuple[list[int], list[float]]:
        """`count` greedy tokens after `ids` (no stop), with the margin of each choice."""
        import torch

        ids = list(ids)
        generated, margins = [], []
        with torch.no_grad():
            for _ in range(count):
                logits = self.model(torch.tensor([ids])).logits[0, -1]
                top2 = torch.topk(logits, 2).values
                token = int(logits.argmax())
                generated.append(token)
                margins.append(float(top2[0] - top2[1]))
                ids.append(token)
        return generated, margins


def _peaked_weights(model, seed: int) -> None:
    """Random weights of order one: norms around 1 (±0.3, so a norm applied twice or not at all
    changes the numbers), embeddings N(0, 1), matrices N(0, 1/inputs)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * noise)
            elif "embed_tokens" in name or name == "lm_head.weight":
                p.copy_(noise)
            elif name.endswith(".bias"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)


def _save_tokenizer(directory: Path, chat_template: str) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), bos_token="<|im_start|>",
                                        eos_token="<|im_end|>", pad_token="<|im_end|>")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)


def make_qwen3(directory: Path, tied: bool, seed: int = 0) -> TinyModel:
    """Qwen3: per-head q/k RMSNorm, no biases, head_dim 32 with hidden 64 and 4 heads (so
    q is 128 wide), 2 KV heads, 3 layers; Qwen3's chat template."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=VOCABULARY, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=1024,
                         rms_norm_eps=1e-6, rope_theta=1_000_000.0, tie_word_embeddings=tied,
                         bos_token_id=IM_START, eos_token_id=IM_END)
    made = _finish(Qwen3ForCausalLM(config), "qwen3", directory, seed, "Qwen-Qwen3-0.6B.jinja")
    assert json.loads((directory / "config.json").read_text())["tie_word_embeddings"] == tied
    if tied:
        assert made.model.lm_head.weight.data_ptr() == made.model.model.embed_tokens.weight.data_ptr()
    return made


def make_qwen3_moe(directory: Path, seed: int = 2) -> TinyModel:
    """Qwen3-MoE: Qwen3's attention, 8 experts of width 48 with 2 chosen per token and their
    probabilities renormalised (norm_topk_prob, as the released models set it)."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    config = Qwen3MoeConfig(vocab_size=VOCABULARY, hidden_size=64, intermediate_size=160, moe_intermediate_size=48,
                            num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                            mlp_only_layers=[], num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=32, max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                            tie_word_embeddings=False, bos_token_id=IM_START, eos_token_id=IM_END)
    return _finish(Qwen3MoeForCausalLM(config), "qwen3_moe", directory, seed, "Qwen-Qwen3-0.6B.jinja")


def make_mixtral(directory: Path, seed: int = 3) -> TinyModel:
    """Mixtral: Llama attention (GGUF permutes its q/k rows), 4 experts, 2 per token. With a
    ChatML template (Qwen2.5's) since SmolLM2's vocabulary has ChatML's tokens, not [INST]."""
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(seed)
    config = MixtralConfig(vocab_size=VOCABULARY, hidden_size=64, intermediate_size=96, num_local_experts=4,
                           num_experts_per_tok=2, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=1_000_000.0,
                           tie_word_embeddings=False, bos_token_id=IM_START, eos_token_id=IM_END)
    return _finish(MixtralForCausalLM(config), "mixtral", directory, seed, "Qwen-Qwen2.5-7B-Instruct.jinja")


def _finish(model, model_type: str, directory: Path, seed: int, template: str) -> TinyModel:
    model = model.float().eval()
    _peaked_weights(model, seed)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    _save_tokenizer(directory, (llama_cpp_source() / "models" / "templates" / template).read_text())
    config_json = json.loads((directory / "config.json").read_text())
    assert config_json["model_type"] == model_type, config_json
    return TinyModel(model_type, directory, model)


FAMILIES = {
    "qwen3-tied": lambda d: make_qwen3(d, tied=True),
    "qwen3-untied": lambda d: make_qwen3(d, tied=False, seed=1),
    "qwen3-moe": make_qwen3_moe,
    "mixtral": make_mixtral,
}


def rewrite_gguf(source: Path, out: Path, fields: dict | None = None, tensors=None) -> Path:
    """A copy of a GGUF file with metadata `fields` replaced or added (name: (value, GGUFValueType);
    value None drops the key) and each tensor passed through `tensors(name, row-major array)`,
    which returns the (name, array) pairs to write instead (none: dropped)."""
    import gguf

    fields = fields or {}
    reader = gguf.GGUFReader(source)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture" or field.name in fields:
            continue
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, field.contents())
        else:
            writer.add_key_value(field.name, field.contents(), field.types[0])
    for name, (value, kind) in fields.items():
        if value is not None:
            writer.add_key_value(name, value, kind)
    for tensor in reader.tensors:
        data = np.asarray(tensor.data).reshape([int(d) for d in reversed(tensor.shape)])
        for name, array in (tensors or (lambda n, a: [(n, a)]))(tensor.name, data):
            writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
