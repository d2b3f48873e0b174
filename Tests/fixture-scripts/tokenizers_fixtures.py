#!/usr/bin/env python3
"""Writes the fixtures of TLLMTokenizerTests (run by hand, not in CI).

Reference: the Hugging Face `tokenizers` library. Needs (PyPI): tokenizers gguf numpy.

    python3 Tests/fixture-scripts/tokenizers_fixtures.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
    python3 Tests/fixture-scripts/tokenizers_fixtures.py --bench FILE   # reference encode throughput

Fixtures (Tests/TLLMTokenizerTests/Fixtures/):
  smollm2-gguf.json           the `tokenizer.ggml.*` fields of the SmolLM2 GGUF, as plain JSON
  smollm2-tokenizer.json      a tokenizer.json rebuilt from those fields with `tokenizers` (transformers'
                              GGUF conversion needs torch): ByteLevel BPE, Digits(individual) + ByteLevel
  llama3-tokenizer.json       small byte-level BPE trained here, Llama 3 split regex, ignore_merges, BOS
  qwen2-tokenizer.json        small byte-level BPE trained here, Qwen2 split regex, NFC normalizer
  spm-tokenizer.json          small SentencePiece-style BPE (byte fallback, Prepend/Replace normalizer)
  spm-gguf.json               the same vocabulary as GGUF fields (tokens, scores, types; no merges)
  expected.json               for every tokenizer and corpus string: ids with and without special tokens,
                              decode with and without skipping special tokens
"""

import argparse
import json
import os
import sys
import time

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "TLLMTokenizerTests", "Fixtures")

GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "",
    " ",
    "  ",
    "\n",
    "Hello world",
    " Hello world",
    "Hello world ",
    "Hello  world",
    "   leading and trailing   ",
    "\t\ttabs\tand\nnewlines\n\n\nend\n",
    "\r\nwindows\r\nline\r\n",
    "a \n b",
    "x\n \n y  \n\n  z",
    "I'm can't won't you'RE THEY'LL he'D we'VE she'S it'll 'tis",
    "DON'T I'M 'S's",
    "12345678901234567890",
    "1 22 333 4444 55555 a1b22c333",
    "3.14159 and 1,000,000 and  42",
    "\u0663\u0664\u0665 \u00bd \u00b2 \u2167",
    "日本語のテキストです。中文测试",
    "한국어 텍스트",
    "Привет, мир!",
    "Ελληνικά γράμματα",
    "مرحبا بالعالم",
    "हिन्दी",
    "café naïve résumé",
    "cafe\u0301 e\u0301\u0301",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️",
    "🤗",
    "\u00a0nbsp\u3000ideo\u2009thin\u200bzw",
    "def f(x):\n    return x**2  # square\n",
    "if (a && b) {\n\treturn a->c[0];\n}",
    "<html><body>hi</body></html>",
    "foo@bar.com https://example.com/path?q=1&r=2",
    "!!!???...,,,",
    "'''quoted''' \"double\"",
    "\x00\x01\x1f control",
    "\x1c\x1d\x1e\x1f sep",
    "\u017f 's 'S '\u017f",
    "a\u0085b\u2028c",
    "tab\u000bvt\u000cff",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "a<|endoftext|>b",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start|><|im_end|>",
    "<|im_start",
    "<s>Hello</s> <s> x",
    "<|begin_of_text|>Hi<|eot_id|>",
    "The quick brown fox jumps over the lazy dog. " * 3,
]

# Training text for the synthetic tokenizers: English and code from the installed Python packages, the corpus.
def training_text():
    import tokenizers as tk
    root = os.path.dirname(os.path.dirname(tk.__file__))
    chunks = []
    for sub in ["transformers/models/llama", "transformers/generation", "numpy/lib", "gguf"]:
        d = os.path.join(root, sub)
        for dirpath, _, files in sorted(os.walk(d)):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(dirpath, f), encoding="utf-8", errors="replace") as fh:
                        chunks.append(fh.read())
    chunks.extend(CORPUS * 3)
    chunks.append("日本語 中文 한국어 Привет мир Ελληνικά café naïve résumé 1234567890 " * 20)
    return chunks


def gguf_fields(path):
    from gguf import GGUFReader
    reader = GGUFReader(path)
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            value = field.contents()
            if hasattr(value, "tolist"):
                value = value.tolist()
            out[key[len("tokenizer.ggml."):]] = value
    return out


def smollm2_from_gguf(fields):
    tokens = fields["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in fields["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    types = fields["token_type"]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i in range(len(tokens)) if types[i] == 3])
    return tok


def byte_level_bpe(pattern, specials, nfc, bos):
    tok = Tokenizer(models.BPE(ignore_merges=bos is not None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def sentencepiece_bpe():
    """A Llama 2-style tokenizer: <unk> <s> </s>, <0xXX> byte tokens, ▁ merges ordered by score."""
    train = Tokenizer(models.BPE())
    train.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=2500, min_frequency=2, limit_alphabet=150, show_progress=False)
    train.train_from_iterator(training_text(), trainer)
    trained = json.loads(train.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for piece, _ in pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    # SentencePiece scores: later pieces lower. Merges as the transformers converter builds them: every split of
    # a piece whose halves are pieces, ordered by the piece's score.
    first_merged = 3 + 256
    merges = []
    for piece, pid in vocab.items():
        if pid < first_merged:
            continue
        local = []
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab and vocab[left] >= first_merged and vocab[right] >= first_merged:
                local.append((left, right))
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((l, r, pid) for l, r in local)
    merges.sort(key=lambda m: m[2])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(l, r) for l, r, _ in merges], unk_token="<unk>",
                               fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<unk>", "<s>", "</s>"]])
    types = [1] * len(vocab)
    types[0] = 2
    types[1] = types[2] = 3
    for b in range(256):
        types[3 + b] = 6
    tokens = [p for p, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    gguf = {"model": "llama", "tokens": tokens, "scores": [float(-i) for i in range(len(tokens))],
            "token_type": types, "bos_token_id": 1, "eos_token_id": 2, "unknown_token_id": 0,
            "add_bos_token": True, "add_eos_token": False, "add_space_prefix": True}
    return tok, gguf


def expectations(tok):
    out = []
    for text in CORPUS:
        with_special = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        out.append({
            "text": text,
            "ids": plain,
            "idsWithSpecial": with_special,
            "decoded": tok.decode(with_special, skip_special_tokens=False),
            "decodedSkippingSpecial": tok.decode(with_special, skip_special_tokens=True),
        })
    return out


def write_json(name, value, compact=True):
    path = os.path.join(FIXTURES, name)
    with open(path, "w", encoding="utf-8") as fh:
        if compact:
            json.dump(value, fh, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(value, fh, ensure_ascii=False, indent=1)
    print(f"{name}: {os.path.getsize(path)} bytes")


def write_tokenizer(name, tok, tokenizer_config=None):
    # Re-serialise compactly; merges become "a b" strings where no half contains a space (the older format).
    data = json.loads(tok.to_str())
    merges = data["model"].get("merges")
    if merges and all(" " not in a and " " not in b for a, b in merges):
        data["model"]["merges"] = [f"{a} {b}" for a, b in merges] if name.startswith("smollm2") else merges
    write_json(name, data)
    check = Tokenizer.from_file(os.path.join(FIXTURES, name))
    for text in CORPUS:
        assert check.encode(text).ids == tok.encode(text).ids, (name, text)
    if tokenizer_config is not None:
        write_json(name.replace("tokenizer.json", "tokenizer_config.json"), tokenizer_config)


def bench(path):
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    for name in ["smollm2-tokenizer.json", "llama3-tokenizer.json", "spm-tokenizer.json"]:
        tok = Tokenizer.from_file(os.path.join(FIXTURES, name))
        tok.encode(text[:1000])
        start = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        elapsed = time.perf_counter() - start
        print(f"{name}: {len(text.encode())} bytes, {len(ids)} tokens, {elapsed * 1000:.1f} ms, "
              f"{len(ids) / elapsed:,.0f} tokens/s (tokenizers, one call)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", default=os.path.join(HERE, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--bench")
    args = parser.parse_args()
    if args.bench:
        bench(args.bench)
        return
    os.makedirs(FIXTURES, exist_ok=True)
    expected = {"corpus": CORPUS, "tokenizers": {}}

    fields = gguf_fields(args.gguf)
    gguf = {k: fields[k] for k in ["model", "pre", "tokens", "token_type", "merges", "bos_token_id", "eos_token_id",
                                   "unknown_token_id", "padding_token_id", "add_bos_token", "add_space_prefix"]
            if k in fields}
    write_json("smollm2-gguf.json", gguf)
    smol = smollm2_from_gguf(fields)
    write_tokenizer("smollm2-tokenizer.json", smol)
    expected["tokenizers"]["smollm2"] = expectations(smol)

    llama3 = byte_level_bpe(LLAMA3_PATTERN, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], False,
                            "<|begin_of_text|>")
    write_tokenizer("llama3-tokenizer.json", llama3,
                    {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True})
    expected["tokenizers"]["llama3"] = expectations(llama3)

    qwen2 = byte_level_bpe(QWEN2_PATTERN, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], True, None)
    write_tokenizer("qwen2-tokenizer.json", qwen2,
                    {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                     "add_bos_token": False})
    expected["tokenizers"]["qwen2"] = expectations(qwen2)

    spm, spm_gguf = sentencepiece_bpe()
    write_tokenizer("spm-tokenizer.json", spm,
                    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                     "add_eos_token": False})
    write_json("spm-gguf.json", spm_gguf)
    expected["tokenizers"]["spm"] = expectations(spm)

    write_json("expected.json", expected, compact=False)


if __name__ == "__main__":
    sys.exit(main())
