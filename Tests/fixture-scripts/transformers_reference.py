#!/usr/bin/env python3
"""Hugging Face `transformers` reference (float32, CPU) on the default model's GGUF, loaded by
transformers' own GGUF loader (weights dequantised to float32). Not run in CI.

Needs (PyPI): torch (the CPU wheel), transformers, accelerate, gguf, numpy, tokenizers.

    python Tests/fixture-scripts/transformers_reference.py [model.gguf]

Writes Tests/TLLMComputeTests/Fixtures/transformers_reference.json:
  model, versions {torch, transformers, gguf, tokenizers}
  teacher_forced {text, ids, top_ids, top_logprobs, target_logprobs}
      one forward pass over `ids`; for every position p the top-5 next-token ids and their
      log-probs (log_softmax in float64 of the float32 logits, 6 decimals), and
      target_logprobs[p] = log-prob of ids[p + 1] (one fewer entry than ids)
  greedy [{prompt_text, prompt_ids, generated_ids, eos_positions, margins}]
      48 greedy tokens per prompt, no early stop at `<|im_end|>` (id 2): eos_positions are the
      indices into generated_ids where id 2 was produced; margins[i] is the float32 logit gap
      between the chosen token and the runner-up at step i (near-ties are where a different
      float summation order may legitimately pick another token)
  perplexity {text, ids, n_ctx, n_chunk, ppl, nll}
      llama-perplexity's scoring (see llamacpp_perplexity.py) on the same text and ids, computed
      here in float32: chunks of n_ctx tokens from an empty cache, no BOS, logits at positions
      n_ctx/2 .. n_ctx-2 scored against the next token; nll per scored token, ppl = exp(mean)
  numpy_reference_check: top-1 agreement with reference_logits.json on its 37 ids

Token ids come from `tokenizers` with SmolLM2's tokenizer.json rebuilt from the GGUF vocabulary
(Tests/TLLMTokenizerTests/Fixtures/smollm2-tokenizer.json, as reference_logits.py), special
tokens parsed from the text, no BOS added (the GGUF has tokenizer.ggml.add_bos_token = false).
They are cross-checked against the tokenizer transformers builds from the GGUF.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_prose import ANSWER, PROSE, QUESTION  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURES = ROOT / "Tests" / "TLLMComputeTests" / "Fixtures"
OUT = FIXTURES / "transformers_reference.json"
TOKENIZER_JSON = ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures" / "smollm2-tokenizer.json"

EOS = 2  # <|im_end|>
N_GREEDY = 48
TOP = 5

TEACHER_FORCED = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": ANSWER},
]

GREEDY_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "system", "content": "You are a concise assistant. Answer in one sentence."},
     {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Give me three tips for learning a new language."}],
]

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def render(messages, generation_prompt):
    """SmolLM2's tokenizer.chat_template, written out: a default system message when the first
    message is not a system one; `<|im_start|>assistant\\n` appended for a generation prompt."""
    out = ""
    if messages[0]["role"] != "system":
        out += f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    for m in messages:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    if generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


def logprobs_of(model, ids):
    with torch.no_grad():
        logits = model(torch.tensor([ids]), use_cache=False).logits[0]
    assert logits.dtype == torch.float32
    return logits, torch.log_softmax(logits.double(), dim=-1)


def r6(x):
    return round(float(x), 6)


def main():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(MODEL.parent, gguf_file=MODEL.name, dtype=torch.float32)
    model.eval()
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    # The GGUF has no output.weight (tied embeddings); some transformers versions leave lm_head
    # untied and randomly initialised: give it the embedding.
    if head.data_ptr() != emb.data_ptr() and not torch.equal(head, emb):
        print("lm_head differs from the embedding: copying the embedding into it")
        with torch.no_grad():
            head.copy_(emb)

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(TOKENIZER_JSON))
    hf_tok = AutoTokenizer.from_pretrained(MODEL.parent, gguf_file=MODEL.name)

    def encode(text):
        ids = tok.encode(text, add_special_tokens=False).ids
        hf = hf_tok(text, add_special_tokens=True).input_ids
        if len(hf) == len(ids) + 1 and hf[1:] == ids:
            hf = hf[1:]  # transformers' GGUF conversion may add a BOS that SmolLM2 does not use
        assert hf == ids, f"tokenizers and transformers disagree on {text[:40]!r}"
        return ids

    # The template written out above must equal the GGUF's own chat template.
    for chat in GREEDY_CHATS:
        assert hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == render(chat, True)
    assert hf_tok.apply_chat_template(TEACHER_FORCED, tokenize=False) == render(TEACHER_FORCED, False)

    # Teacher-forced pass.
    text = render(TEACHER_FORCED, False)
    ids = encode(text)
    assert ids[0] == 1 and ids[1] != 1  # <|im_start|> of the system message, no extra BOS before it
    _, lp = logprobs_of(model, ids)
    top = torch.topk(lp, TOP, dim=-1)
    teacher_forced = {
        "text": text, "ids": ids,
        "top_ids": top.indices.tolist(),
        "top_logprobs": [[r6(v) for v in row] for row in top.values.tolist()],
        "target_logprobs": [r6(lp[p, ids[p + 1]]) for p in range(len(ids) - 1)],
    }
    print(f"teacher-forced: {len(ids)} tokens, mean NLL {-np.mean(teacher_forced['target_logprobs']):.4f}")

    # Greedy continuations (full recomputation each step, no KV cache).
    greedy = []
    for chat in GREEDY_CHATS:
        prompt = render(chat, True)
        prompt_ids = encode(prompt)
        seq = list(prompt_ids)
        generated, margins = [], []
        for _ in range(N_GREEDY):
            with torch.no_grad():
                logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
            v, i = torch.topk(logits, 2)
            generated.append(int(i[0]))
            margins.append(r6(v[0] - v[1]))
            seq.append(int(i[0]))
        greedy.append({
            "prompt_text": prompt, "prompt_ids": prompt_ids, "generated_ids": generated,
            "eos_positions": [k for k, t in enumerate(generated) if t == EOS],
            "margins": margins,
        })
        print(f"greedy: {prompt_ids[-8:]} -> {tok.decode(generated, skip_special_tokens=False)!r}")

    # llama-perplexity's protocol on the perplexity text, in float32.
    pids = encode(PROSE)
    n_ctx = 128
    n_chunk = len(pids) // n_ctx
    first = n_ctx // 2
    nll = []
    for c in range(n_chunk):
        chunk = pids[c * n_ctx:(c + 1) * n_ctx]
        _, clp = logprobs_of(model, chunk)
        nll += [-float(clp[p, chunk[p + 1]]) for p in range(first, n_ctx - 1)]
    perplexity = {"text": PROSE, "ids": pids, "n_ctx": n_ctx, "n_chunk": n_chunk,
                  "ppl": r6(np.exp(np.mean(nll))), "nll": [r6(x) for x in nll]}
    print(f"perplexity: {len(pids)} tokens, {n_chunk} chunks of {n_ctx}, PPL {perplexity['ppl']}")

    # Sanity check against the float32 numpy reference (reference_logits.py) on its ids.
    check = None
    ref_path = FIXTURES / "reference_logits.json"
    if ref_path.exists():
        ref = json.loads(ref_path.read_text())
        _, rlp = logprobs_of(model, ref["ids"])
        rtop = torch.topk(rlp, TOP, dim=-1)
        agree = sum(int(a[0] == b[0]) for a, b in zip(rtop.indices.tolist(), ref["top_ids"]))
        diff = max(abs(float(rlp[p, t]) - v)
                   for p, (row, vals) in enumerate(zip(ref["top_ids"], ref["top_logprobs"]))
                   for t, v in zip(row, vals))
        check = {"positions": len(ref["ids"]), "top1_agree": agree, "max_abs_logprob_diff_top5": float(f"{diff:.3g}")}
        print(f"numpy reference: top-1 agreement {agree}/{len(ref['ids'])}, largest top-5 log-prob difference {diff:.3g}")

    import gguf
    import tokenizers
    FIXTURES.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": MODEL.name,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
                     "tokenizers": tokenizers.__version__},
        "teacher_forced": teacher_forced,
        "greedy": greedy,
        "perplexity": perplexity,
        "numpy_reference_check": check,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


def _dist_version(name):
    from importlib.metadata import version
    return version(name)


if __name__ == "__main__":
    main()
