#!/usr/bin/env python3
"""llama.cpp perplexity reference on the default model. Not run in CI.

Needs a llama.cpp build with `llama-perplexity` (its shared libraries beside it) and (PyPI)
numpy, tokenizers.

    python Tests/fixture-scripts/llamacpp_perplexity.py [--bin DIR] [--model model.gguf] [--ctx 128]

DIR defaults to $LLAMA_CPP_BIN or /tmp/llamacpp/build/bin. Writes
Tests/TLLMComputeTests/Fixtures/llamacpp_perplexity.json.

How llama-perplexity scores (tools/perplexity/perplexity.cpp, `perplexity()`, no --ppl-stride):
  * The text (from -f; ONE trailing '\\n' is dropped by the argument parser) is tokenized whole
    with add_special = true and parse_special = false: a BOS is prepended only when the model
    says tokenizer.ggml.add_bos_token = true (SmolLM2: false, so no BOS), and special-token
    text such as "<|im_start|>" is NOT parsed as a special token.
  * It needs at least 2 * n_ctx tokens. n_chunk = floor(n_tokens / n_ctx); the tail is unused.
    Chunk c is tokens[c*n_ctx, (c+1)*n_ctx), evaluated from an empty KV cache at positions
    0 .. n_ctx-1. With add_bos the chunk's FIRST TOKEN IS REPLACED by BOS (not inserted) for
    the forward pass; without add_bos (SmolLM2) nothing is replaced.
  * first = n_ctx / 2. The logits at positions first .. n_ctx-2 are scored against the next
    token: position p predicts chunk[p + 1]. So n_ctx - first - 1 tokens per chunk (63 for
    n_ctx = 128), the targets being chunk positions first+1 .. n_ctx-1; the last position's
    logits are unused.
  * Per scored token: nll = -(logit[t] - max - log(sum_i expf(logit[i] - max))), max in float,
    the sum of float expf in double, log in double. Accumulated in double over all chunks:
    PPL = exp(sum nll / count), printed "Final estimate: PPL = %.4f +/- %.5f" where
    +/- = PPL * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)). The running "[c]x" values are
    exp(mean nll) over chunks 1..c.
  * llama.cpp's CPU defaults: KV cache in float16, flash attention "auto" (enabled on CPU), the
    Q4_1 matmuls with activations quantised to 8 bits (ggml's q8_1 vec_dot). Our float path
    therefore differs slightly; the variants below rerun with a float32 KV cache.

Token ids: `tokenizers` with SmolLM2's tokenizer.json rebuilt from the GGUF vocabulary
(Tests/TLLMTokenizerTests/Fixtures/smollm2-tokenizer.json), checked against llama.cpp's own
token count (a run with a context too large for the text prints it) and against the ids
llama.cpp evaluated (its --save-all-logits file starts with them). That file also holds each
scored row's log-softmax quantised to 16 bits (range max-16 .. max), from which the per-token
nll is decoded (error below 2e-4).
"""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_prose import PROSE  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "Tests" / "TLLMComputeTests" / "Fixtures" / "llamacpp_perplexity.json"
TOKENIZER_JSON = ROOT / "Tests" / "TLLMTokenizerTests" / "Fixtures" / "smollm2-tokenizer.json"


def run(bin_dir, args):
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(bin_dir) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    p = subprocess.run([str(bin_dir / "llama-perplexity"), *args], env=env, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def final_ppl(out):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    assert m, out[-2000:]
    running = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", out)]
    return float(m.group(1)), float(m.group(2)), running


def read_logits_file(path, n_vocab_expected):
    """The --save-all-logits file: "_logits_", n_ctx, n_vocab, n_chunk (int32), the evaluated
    tokens (n_chunk*n_ctx int32), then per chunk n_ctx-1-n_ctx/2 rows of nv uint16: two float32
    (scale, min_log_prob) then the quantised log-probs."""
    data = Path(path).read_bytes()
    assert data[:8] == b"_logits_"
    n_ctx, n_vocab, n_chunk = struct.unpack_from("<iii", data, 8)
    assert n_vocab == n_vocab_expected
    off = 20
    tokens = np.frombuffer(data, dtype="<i4", count=n_chunk * n_ctx, offset=off).tolist()
    off += 4 * n_chunk * n_ctx
    first = n_ctx // 2
    n_tok = n_ctx - 1 - first
    nv = 2 * ((n_vocab + 1) // 2) + 4
    nll = []
    for c in range(n_chunk):
        rows = np.frombuffer(data, dtype="<u2", count=n_tok * nv, offset=off).reshape(n_tok, nv)
        off += 2 * n_tok * nv
        for i in range(n_tok):
            scale, min_log_prob = np.frombuffer(rows[i, :4].tobytes(), dtype="<f4")
            t = tokens[c * n_ctx + first + i + 1]
            nll.append(-(float(min_log_prob) + float(scale) * float(rows[i, 4 + t])))
    assert off == len(data)
    return n_ctx, n_chunk, tokens, nll


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", type=Path, default=Path(os.environ.get("LLAMA_CPP_BIN", "/tmp/llamacpp/build/bin")))
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from tokenizers import Tokenizer
    from gguf import GGUFReader
    reader = GGUFReader(a.model)
    add_bos = bool(reader.fields["tokenizer.ggml.add_bos_token"].contents())
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    bos = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
    assert not add_bos, "this script writes the add_bos = false case (SmolLM2)"
    ids = Tokenizer.from_file(str(TOKENIZER_JSON)).encode(PROSE, add_special_tokens=False).ids
    assert ids[0] != bos

    rc, version = run(a.bin, ["--version"])
    version = " ".join(l.strip() for l in version.splitlines() if l.strip())

    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "prose.txt"
        text_file.write_text(PROSE)  # no trailing newline, so nothing is dropped
        common = ["-m", str(a.model), "-f", str(text_file), "-t", str(a.threads)]

        # llama.cpp's token count: with a context of more than half the text it refuses and says.
        big = 1 << (len(ids)).bit_length()
        rc, out = run(a.bin, common + ["-c", str(big), "-b", str(big)])
        m = re.search(r"tokenizes to only (\d+) tokens", out)
        assert m, out[-2000:]
        n_llama = int(m.group(1))
        assert n_llama == len(ids), f"llama.cpp counts {n_llama} tokens, tokenizers {len(ids)}"

        base = common + ["-c", str(a.ctx), "-b", str(a.ctx)]
        rc, out = run(a.bin, base)
        assert rc == 0, out[-2000:]
        ppl, ppl_err, running = final_ppl(out)
        m = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", out)
        n_chunk = int(m.group(1))
        assert int(m.group(2)) == a.ctx and int(m.group(4)) == 1

        logits_file = Path(tmp) / "logits.bin"
        rc, out2 = run(a.bin, base + ["--save-all-logits", str(logits_file)])
        assert rc == 0, out2[-2000:]
        ppl2, _, _ = final_ppl(out2)
        n_ctx, n_chunk2, tokens, nll = read_logits_file(logits_file, n_vocab)
        assert (n_ctx, n_chunk2) == (a.ctx, n_chunk)
        assert tokens == ids[:n_chunk * n_ctx], "llama.cpp evaluated other ids than tokenizers gives"

        variants = []
        for extra in (["-ctk", "f32", "-ctv", "f32"], ["-ctk", "f32", "-ctv", "f32", "-fa", "off"]):
            rc, out3 = run(a.bin, base + extra)
            assert rc == 0, out3[-2000:]
            p, e, r = final_ppl(out3)
            variants.append({"extra_args": extra, "ppl": p, "ppl_err": e, "running_ppl": r})

    first = a.ctx // 2
    per_chunk = a.ctx - first - 1
    decoded_ppl = float(np.exp(np.mean(nll)))
    print(f"{len(ids)} tokens, {n_chunk} chunks of {a.ctx}; PPL = {ppl} +/- {ppl_err} "
          f"(with --save-all-logits {ppl2}; from the decoded nll {decoded_ppl:.4f}); "
          f"variants {[v['ppl'] for v in variants]}")
    assert abs(decoded_ppl - ppl) / ppl < 1e-3

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": a.model.name,
        "llama_cpp_version": version,
        "command": "llama-perplexity -m MODEL -f TEXT " + " ".join(base[4:]),
        "text": PROSE,
        "ids": ids,
        "add_bos": add_bos,
        "n_ctx": a.ctx,
        "n_chunk": n_chunk,
        "first_scored_logit_position": first,
        "scored_per_chunk": per_chunk,
        "scoring": (
            f"ids are the whole text tokenized without BOS (add_bos_token = false). Chunk c = "
            f"ids[c*{a.ctx}:(c+1)*{a.ctx}] for c < n_chunk = floor(len(ids)/{a.ctx}), each from an "
            f"empty KV cache at positions 0..{a.ctx - 1}, no token replaced. The logits at positions "
            f"{first}..{a.ctx - 2} predict chunk[p+1]: {per_chunk} scored tokens per chunk. "
            "nll = logsumexp(logits) - logits[target] (max in float, sum of expf in double); "
            "PPL = exp(mean nll over all scored tokens)."),
        "ppl": ppl,
        "ppl_err": ppl_err,
        "running_ppl": running,
        "nll": [round(x, 6) for x in nll],
        "nll_note": "per scored token in chunk order, decoded from llama.cpp's --save-all-logits "
                    "16-bit log-probs (error below 2e-4)",
        "variants": variants,
    }, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
