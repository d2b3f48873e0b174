"""Decoder families beyond Llama, against `transformers` (issue 21): for each family a tiny model
with random weights made by transformers (hf_families.py), read by us from its safetensors
directory and from the GGUF llama.cpp's convert_hf_to_gguf.py makes of it.

- Teacher-forced (`tllm-generate --score_ids`: half of the ids in one prompt pass, the rest one
  at a time through the decode kernels): top-1 agreement with transformers float32 >= 99.5% on
  float files, the worst difference of the next token's log-prob reported and bounded; a Q8_0
  GGUF tracks the float reference within a quantisation-sized bound.
- Served: greedy completions from `tllm.server --is_local` equal transformers' greedy tokens, and a
  master with three `tllm.client` workers holding one layer each returns the same text. Only
  prompts whose greedy choices all have a margin above MIN_MARGIN are compared (the float16
  hidden states on the wire and a different summation order may flip a nearer tie).
"""

from __future__ import annotations

import json
import subprocess

import httpx
import numpy as np
import pytest

from hf_families import FAMILIES, IM_END, TOKENIZER_JSON, TinyModel, rewrite_gguf
from tllm_server_helpers import GENERATE_TIMEOUT, REPO_ROOT, REQUEST_TIMEOUT, THREADS, Node, TllmServer, free_port, \
    logs, wait_until_generating

SEQUENCES, LENGTH = 3, 128
MIN_AGREEMENT = 0.995
# Worst |Δ log-prob| of the next token. Float32 files: float32 end to end (seen ~3e-5). F16 and Q8_0
# against the rounded weights: F16 seen ~4e-5; Q8_0 meets int16-quantised activations, seen ~2.5e-3.
MAX_LOGPROB_ERROR = {"safetensors": 1e-3, "gguf-f32": 1e-3, "gguf-f16": 1e-3, "gguf-q8_0": 1e-2}
MIN_MARGIN = 0.05
GREEDY_TOKENS = 12
CANDIDATE_PROMPTS = [
    "The quick brown fox", "Once upon a time", "def fibonacci(n):", "Paris is the capital of",
    "1, 2, 3, 4,", "In the beginning", "Hello, my name is", "The weather today",
]  # fmt: skip

pytest.importorskip("torch", reason="transformers' reference needs torch (Tests/requirements.txt)")


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> TinyModel:
    return FAMILIES[request.param](tmp_path_factory.mktemp("families") / request.param)


def score_ids() -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 49152, LENGTH).tolist() for _ in range(SEQUENCES)]


def our_scores(generate_bin, model, ids: list[int]) -> dict:
    args = [str(generate_bin), "--model_path", str(model), "--score_ids", ",".join(map(str, ids)),
            "--threads", str(THREADS)]
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=GENERATE_TIMEOUT, cwd=REPO_ROOT)
    assert p.returncode == 0, f"tllm-generate --score_ids on {model} exited {p.returncode}:\n{p.stderr.decode()}"
    return json.loads(p.stdout)


def compare(generate_bin, family: TinyModel, model) -> tuple[float, float, float]:
    """(top-1 agreement, worst |Δ log-prob| of the next id, mean |Δ|) over all sequences."""
    agree = total = 0
    errors = []
    for ids in score_ids():
        ref, ours = family.scores(ids), our_scores(generate_bin, model, ids)
        assert len(ours["top_ids"]) == len(ref["top_ids"]) == len(ids) - 1
        agree += sum(a == b for a, b in zip(ours["top_ids"], ref["top_ids"]))
        total += len(ids) - 1
        errors += [abs(a - b) for a, b in zip(ours["target_logprobs"], ref["target_logprobs"])]
    return agree / total, max(errors), sum(errors) / len(errors)


@pytest.mark.parametrize("source", ["safetensors", "gguf-f32", "gguf-f16", "gguf-q8_0"])
def test_teacher_forced_matches_transformers(generate_bin, family, source):
    """On the float files against the model itself; on F16 and Q8_0 against transformers running
    the weights as the file rounds them (the `gguf` package's quantiser)."""
    model = family.directory if source == "safetensors" else family.gguf(source.removeprefix("gguf-"))
    reference = family if source in ("safetensors", "gguf-f32") else family.as_stored_in(model)
    agreement, worst, mean = compare(generate_bin, reference, model)
    print(f"{family.family} {source}: top-1 agreement {agreement:.4f}, next-token log-prob |Δ| worst {worst:.2e} "
          f"mean {mean:.2e}")
    assert agreement >= MIN_AGREEMENT, f"{source}: top-1 agreement {agreement:.4f} < {MIN_AGREEMENT}"
    assert worst <= MAX_LOGPROB_ERROR[source], f"{source}: worst |Δ| {worst} > {MAX_LOGPROB_ERROR[source]}"


def test_early_mixtral_files_with_one_tensor_per_expert(generate_bin, tmp_path):
    mixtral = FAMILIES["mixtral"](tmp_path / "mixtral")
    agreement, worst, _ = compare(generate_bin, mixtral, mixtral.gguf_per_expert())
    assert agreement >= MIN_AGREEMENT and worst <= MAX_LOGPROB_ERROR["gguf-f32"], (agreement, worst)


def test_broken_family_files_are_load_errors(generate_bin, tmp_path):
    """What the new families read, at its worst: each a load error naming the file and the
    problem (exit code 1, no signal), never a trap or a kernel reading past a tensor."""
    import gguf

    moe = FAMILIES["qwen3-moe"](tmp_path / "qwen3-moe")
    source = moe.gguf("f32")
    U32 = gguf.GGUFValueType.UINT32

    def drop(target):
        return lambda name, data: [] if name == target else [(name, data)]

    def shrink(target, keep):
        return lambda name, data: [(name, data[:keep] if name == target else data)]

    cases = {
        "more-used-than-experts": ({"qwen3moe.expert_used_count": (9, U32)}, None, "experts"),
        "absurd-expert-count": ({"qwen3moe.expert_count": (1 << 20, U32)}, None, "experts"),
        "zero-expert-width": ({"qwen3moe.expert_feed_forward_length": (0, U32)}, None, "experts"),
        "no-k-norm": ({}, drop("blk.2.attn_k_norm.weight"), "blk.2.attn_k_norm.weight"),
        "fewer-experts-in-tensor": ({}, shrink("blk.1.ffn_down_exps.weight", 4), "blk.1.ffn_down_exps.weight"),
        "router-for-fewer-experts": ({}, shrink("blk.0.ffn_gate_inp.weight", 7), "blk.0.ffn_gate_inp.weight"),
        "short-q-norm": ({}, shrink("blk.0.attn_q_norm.weight", 16), "blk.0.attn_q_norm.weight"),
    }
    failures = []
    for case, (fields, tensors, naming) in cases.items():
        path = rewrite_gguf(source, tmp_path / f"{case}.gguf", fields, tensors)
        p = subprocess.run([str(generate_bin), "--model_path", str(path), "--raw", "--prompt", "hi", "--max_tokens",
                            "2"], stdin=subprocess.DEVNULL, capture_output=True, timeout=GENERATE_TIMEOUT)
        err = p.stderr.decode("utf-8", "replace")
        if p.returncode != 1 or path.name not in err or naming not in err:
            failures.append(f"{case}: exit {p.returncode}, expected 1 naming {path.name} and {naming}:\n{err[-1500:]}")
    assert not failures, "\n\n".join(failures)


def greedy_cases(family: TinyModel) -> list[tuple[str, str, int]]:
    """(prompt, transformers' greedy text, prompt token count) for the prompts whose greedy
    choices are all clear (margin >= MIN_MARGIN); the text stops before <|im_end|>."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_JSON))
    cases = []
    for prompt in CANDIDATE_PROMPTS:
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        tokens, margins = family.greedy(ids, GREEDY_TOKENS)
        if IM_END in tokens:
            cut = tokens.index(IM_END)
            tokens, margins = tokens[:cut], margins[: cut + 1]
        if min(margins) >= MIN_MARGIN:
            cases.append((prompt, tokenizer.decode(tokens, skip_special_tokens=True), len(ids)))
    assert len(cases) >= 3, f"only {len(cases)} prompts with clear greedy choices: change the seed or the prompts"
    return cases


def complete(http: httpx.Client, prompt: str) -> tuple[str, int]:
    r = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": GREEDY_TOKENS, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["choices"][0]["text"], body["usage"]["prompt_tokens"]


def test_served_locally_and_split_across_workers(server_bin, client_bin, family, log_dir):
    cases = greedy_cases(family)
    server = TllmServer(server_bin, family.directory, log_dir, f"{family.family}-local")
    try:
        with server.http(timeout=REQUEST_TIMEOUT) as http:
            local = [complete(http, prompt) for prompt, _, _ in cases]
    finally:
        assert server.terminate() == 0, server.log_tail()
    for (prompt, reference, count), (text, prompt_tokens) in zip(cases, local):
        assert prompt_tokens == count, f"{prompt!r}: {prompt_tokens} prompt tokens, transformers has {count}"
        assert text == reference, f"{prompt!r}: --is_local {text!r} != transformers {reference!r}"

    # Three workers, one layer each, on the GGUF of the same model (float32).
    model = family.gguf("f32")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    nodes = [Node(f"{family.family}-master", [
        str(server_bin), "--model_path", str(model), "--http_port", str(port), "--grpc_port", str(free_port()),
        "--hostname", "127.0.0.1", "--client_size", "3", "--threads", "1"], log_dir)]  # fmt: skip
    nodes += [Node(f"{family.family}-worker{i}", [str(client_bin), "--master_addr", url, "--hostname", "127.0.0.1",
                                                  "--threads", "1"], log_dir) for i in range(3)]
    try:
        with httpx.Client(base_url=url, trust_env=False, timeout=REQUEST_TIMEOUT) as http:
            wait_until_generating(http, nodes, 120, family.family)
            nodes[0].wait_for(r"complete route: \S+ \[0, 1\) → \S+ \[1, 2\) → \S+ \[2, 3\)\n", 10, nodes)
            split = [complete(http, prompt) for prompt, _, _ in cases]
    finally:
        codes = [n.stop() for n in reversed(nodes)]
    assert split == local, f"split across workers {split} != --is_local {local}"
    assert codes == [0, 0, 0, 0], f"exit codes {codes}:\n{logs(nodes)}"
