#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer targets (docs/fuzzing.md) to Tests/Fuzz/Corpus/<target>/.

One file per seed, named for what it holds (`chat-basic.json`, `forward-2rows.bin`, ...). The
script is deterministic: every random weight and tensor comes from a NumPy generator with a fixed
seed, and nothing depends on the clock or on dict order, so a re-run rewrites the same bytes.
It overwrites the seeds it makes and leaves other files in the directories alone (inputs that
once crashed a target live there too); `--prune` deletes files it does not make, except those
named `crash-*` or `regression-*`.

Formats (FuzzTarget.swift is normative):

  openai-request/  a raw JSON body of POST /v1/chat/completions, /v1/completions or
                   /register_client (the target tries all three decodings on every input).
  grpc-message/    byte 0 % 10 picks the message: 0..4 the request of Status, Forward, Health,
                   SetConfig, ImageForward; 5..9 the response of the same method. The rest is
                   gRPC length-prefixed data as HTTP/2 DATA frames carry it (flag byte, u32 BE
                   length, protobuf of Protos/schemas.proto). Tensors: float16 LE row-major
                   [rows, columns], an LZ4 frame (lz4.frame.compress) iff rows >= 64, as
                   TensorCodec.swift and Tests/interop/conftest.py do; SmolLM2's 576 columns.
  gguf/            a GGUF file: a tiny Llama (or Qwen2) model with tokenizer and chat template.
  safetensors/     u32 LE n, n bytes of config.json, then a .safetensors file.
  tokenizer/       u32 LE n, n bytes of tokenizer.json, then UTF-8 text to encode.
  chat-template/   u32 LE n, n bytes of template source, then a JSON object (the render context).

Every seed is at most 64 KiB (scripts/fuzz.sh runs libFuzzer with -max_len=65536).

Checks made while writing (all on by default; `--no-verify` skips the slow ones, marked *):
  - openai-request: every seed is valid JSON (a few are meant to be refused by validation).
  - grpc-message: each message re-parses with the Python protobuf runtime, and each well-formed
    Forward tensor decodes as conftest.decode_tensor does.
  - gguf: each file reads back with gguf.GGUFReader; * `tllm-generate --model_path FILE --prompt hi
    --max_tokens 2 --threads 1` exits 0.
  - safetensors: the weights part parses with safetensors.deserialize (when the package is
    installed); * the config.json and weights, with a small tokenizer.json made here (ids below
    vocab_size) and a ChatML tokenizer_config.json, load and generate with tllm-generate.
  - tokenizer: each tokenizer.json loads with Hugging Face `tokenizers` (Tokenizer.from_str)
    and encodes its text; * each also loads in tllm-generate (a Hugging Face directory with tiny
    weights of the tokenizer's vocabulary size, --raw prompt).
  - chat-template: each template renders its context with jinja2, configured as transformers
    does (sandbox, trim_blocks, lstrip_blocks, loopcontrols, tojson, raise_exception,
    strftime_now pinned to the target's instant, 2023-11-14T22:13:20Z).

Run:  .venv/bin/python Tests/Fuzz/make_seeds.py [--no-verify] [--prune] [--only TARGET ...]
Needs: numpy, gguf, grpcio-tools, protobuf, lz4, tokenizers, jinja2 (pip install into the venv);
the verification needs .build/debug/tllm-generate (or --generate PATH).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "Tests" / "Fuzz" / "Corpus"
MAX_SEED_BYTES = 64 << 10
TARGETS = ["openai-request", "grpc-message", "gguf", "safetensors", "tokenizer", "chat-template"]
KEEP_PREFIXES = ("crash-", "regression-")


def prefixed(head: bytes, rest: bytes) -> bytes:
    """`[u32 LE len(head)][head][rest]`: the layout of the safetensors, tokenizer and chat-template targets."""
    return struct.pack("<I", len(head)) + head + rest


def dumps(value, **kw) -> bytes:
    return json.dumps(value, ensure_ascii=False, **kw).encode()


class Writer:
    """Collects the seeds of one target, checks their size, writes them."""

    def __init__(self, target: str):
        self.target = target
        self.seeds: dict[str, bytes] = {}

    def add(self, name: str, data: bytes):
        assert name not in self.seeds, f"{self.target}/{name} made twice"
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name), name
        assert len(data) <= MAX_SEED_BYTES, f"{self.target}/{name}: {len(data)} bytes > {MAX_SEED_BYTES}"
        self.seeds[name] = data

    def write(self, prune: bool) -> tuple[int, int]:
        directory = CORPUS / self.target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in self.seeds.items():
            path = directory / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        for path in sorted(directory.iterdir()):
            if path.name in self.seeds or path.name.startswith(KEEP_PREFIXES):
                continue
            if prune:
                path.unlink()
                print(f"  pruned {path.relative_to(ROOT)}")
            else:
                print(f"  note: {path.relative_to(ROOT)} is not made by this script (kept)")
        return len(self.seeds), sum(len(d) for d in self.seeds.values())


# ==============================================================================================
# Small tokenizers, shared by the tokenizer, gguf and safetensors seeds
# ==============================================================================================

CORPUS_TEXT = (
    "Hello world! The quick brown fox jumps over the lazy dog. hi there, how are you today? "
    "I am fine, thank you. What is the capital of France? The capital of France is Paris. "
    "She said: it's the 3rd time they've tried this in 2024, and we'll see. "
    "hello hello hi hi the the then there these those this that with what when where who\n"
    "def main(): return 42  # code\n\tindented line\n"
)

GPT2_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values (ByteLevel)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()


def learn_bpe(words: list[list[str]], count: int) -> list[tuple[str, str]]:
    """Deterministic BPE: the most frequent adjacent pair first, ties broken by the pair itself."""
    table = Counter(tuple(w) for w in words if w)
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter = Counter()
        for word, n in table.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter = Counter()
        for word, n in table.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        table = merged
    return merges


def added_token(id_: int, content: str, special: bool = True, lstrip=False, rstrip=False, single_word=False,
                normalized=None) -> dict:
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


class ByteLevelVocab:
    """Specials first, then byte-level characters (all 256, or those of `alphabet`), then merges."""

    def __init__(self, specials: list[str], merges_count: int, alphabet: str | None = None):
        allowed = sorted(set(alphabet.encode())) if alphabet is not None else list(range(256))
        self.tokens: list[str] = list(specials)
        self.tokens += [BYTE_CHAR[b] for b in allowed]
        words = []
        for piece in GPT2_PATTERN.findall(CORPUS_TEXT):
            raw = piece.encode()
            if all(b in allowed for b in raw):
                words.append([BYTE_CHAR[b] for b in raw])
        self.merges = learn_bpe(words, merges_count)
        for left, right in self.merges:
            if left + right not in self.tokens:
                self.tokens.append(left + right)
        self.specials = specials

    def id(self, token: str) -> int:
        return self.tokens.index(token)

    def vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}


class SentencePieceVocab:
    """`<unk>`, `<s>`, `</s>`, the 256 `<0xXX>` byte tokens, characters, then learned pieces (▁ for spaces)."""

    def __init__(self, merges_count: int, extra_specials: list[str] = ()):
        self.tokens = ["<unk>", "<s>", "</s>", *extra_specials] + [f"<0x{b:02X}>" for b in range(256)]
        self.first_byte = 3 + len(extra_specials)
        text = CORPUS_TEXT.replace("\n", " ").replace("\t", " ")
        words = [list("▁" + w) for w in text.split(" ") if w]
        chars = sorted({c for w in words for c in w})
        self.first_char = len(self.tokens)
        self.tokens += chars
        self.merges = learn_bpe(words, merges_count)
        self.first_piece = len(self.tokens)
        for left, right in self.merges:
            if left + right not in self.tokens:
                self.tokens.append(left + right)

    def scores(self) -> list[float]:
        """SentencePiece-style: pieces score by merge order, characters below them, the rest 0."""
        out = []
        for i, _ in enumerate(self.tokens):
            if i >= self.first_piece:
                out.append(-float(i - self.first_piece))
            elif i >= self.first_char:
                out.append(-1000.0 - (i - self.first_char))
            else:
                out.append(0.0)
        return out

    def types(self) -> list[int]:
        """GGUF token types: 2 unknown, 3 control, 6 byte, 1 normal."""
        out = []
        for i, t in enumerate(self.tokens):
            if i == 0:
                out.append(2)
            elif i < self.first_byte:
                out.append(3)
            elif i < self.first_char:
                out.append(6)
            else:
                out.append(1)
        return out


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
BYTE_LEVEL_NO_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe_model(vocab: dict[str, int], merges: list[tuple[str, str]], *, pairs: bool = False, unk=None,
              byte_fallback=False, fuse_unk=False, ignore_merges=False) -> dict:
    return {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": fuse_unk, "byte_fallback": byte_fallback,
            "ignore_merges": ignore_merges, "vocab": vocab,
            "merges": [[a, b] for a, b in merges] if pairs else [f"{a} {b}" for a, b in merges]}


def template_processing(token: str, id_: int) -> dict:
    special = {"SpecialToken": {"id": token, "type_id": 0}}
    return {"type": "TemplateProcessing", "single": [special, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [special, {"Sequence": {"id": "A", "type_id": 0}}, special, {"Sequence": {"id": "B", "type_id": 0}}],
            "special_tokens": {token: {"id": token, "ids": [id_], "tokens": [token]}}}


def tokenizer_json(model: dict, *, added: list[dict], normalizer=None, pre=None, post=None, decoder=None) -> dict:
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": normalizer,
            "pre_tokenizer": pre, "post_processor": post, "decoder": decoder, "model": model}


def gpt2_tokenizer() -> dict:
    """GPT-2 style: ByteLevel pre-tokenizer with its regex, <|endoftext|>."""
    v = ByteLevelVocab(["<|endoftext|>"], 48)
    return tokenizer_json(bpe_model(v.vocab(), v.merges), added=[added_token(0, "<|endoftext|>")], pre=BYTE_LEVEL,
                          post={**BYTE_LEVEL_DECODER, "trim_offsets": False}, decoder=BYTE_LEVEL_DECODER)


CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def smollm_tokenizer() -> dict:
    """SmolLM2 style: Digits(individual) + ByteLevel, ChatML specials, merges as pairs."""
    v = ByteLevelVocab(CHATML_SPECIALS + ["<repo_name>"], 40)
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]}
    return tokenizer_json(bpe_model(v.vocab(), v.merges, pairs=True),
                          added=[added_token(i, t) for i, t in enumerate(v.specials)], pre=pre,
                          post={**BYTE_LEVEL_DECODER, "trim_offsets": False}, decoder=BYTE_LEVEL_DECODER)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                   "<|reserved_special_token_0|>"]


def llama3_tokenizer() -> dict:
    """Llama 3 style: Split(regex) + ByteLevel(no regex), ignore_merges, BOS by TemplateProcessing."""
    v = ByteLevelVocab(LLAMA3_SPECIALS, 40)
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
        BYTE_LEVEL_NO_REGEX]}
    return tokenizer_json(bpe_model(v.vocab(), v.merges, pairs=True, ignore_merges=True),
                          added=[added_token(i, t) for i, t in enumerate(v.specials)], pre=pre,
                          post=template_processing("<|begin_of_text|>", 0), decoder=BYTE_LEVEL_DECODER)


def qwen2_tokenizer() -> dict:
    """Qwen2 style: NFC, Split(regex, single digits) + ByteLevel, ChatML specials (not in the model vocab)."""
    v = ByteLevelVocab([], 40)
    base = len(v.tokens)
    added = [added_token(base + i, t) for i, t in enumerate(CHATML_SPECIALS)]
    pre = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
        BYTE_LEVEL_NO_REGEX]}
    return tokenizer_json(bpe_model(v.vocab(), v.merges), added=added, normalizer={"type": "NFC"}, pre=pre,
                          post={**BYTE_LEVEL_DECODER, "trim_offsets": False}, decoder=BYTE_LEVEL_DECODER)


def spm_metaspace_tokenizer() -> dict:
    """SentencePiece BPE as recent `tokenizers` write it: Metaspace(prepend first), byte fallback, <s> by template."""
    v = SentencePieceVocab(40)
    added = [added_token(i, t) for i, t in enumerate(["<unk>", "<s>", "</s>"])]
    pre = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return tokenizer_json(bpe_model({t: i for i, t in enumerate(v.tokens)}, v.merges, unk="<unk>", byte_fallback=True,
                                    fuse_unk=True), added=added, pre=pre, post=template_processing("<s>", 1),
                          decoder=decoder)


def spm_legacy_tokenizer() -> dict:
    """SentencePiece BPE as Llama 2 / Mistral ship it: Prepend + Replace normalizers, no pre-tokenizer,
    user-defined added tokens with lstrip/rstrip."""
    v = SentencePieceVocab(32, extra_specials=["[INST]", "[/INST]"])
    added = [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>"),
             added_token(3, "[INST]", special=True, rstrip=True), added_token(4, "[/INST]", special=True, lstrip=True)]
    normalizer = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return tokenizer_json(bpe_model({t: i for i, t in enumerate(v.tokens)}, v.merges, unk="<unk>", byte_fallback=True,
                                    fuse_unk=True), added=added, normalizer=normalizer,
                          post=template_processing("<s>", 1), decoder=decoder)


def gpt2_added_words_tokenizer() -> dict:
    """ByteLevel with add_prefix_space and non-special added words (single_word, lstrip, rstrip)."""
    v = ByteLevelVocab(["<|endoftext|>"], 24)
    n = len(v.tokens)
    added = [added_token(0, "<|endoftext|>"), added_token(n, "<tool_call>", special=False, normalized=False),
             added_token(n + 1, "[MASK]", special=True, lstrip=True, rstrip=True),
             added_token(n + 2, "fox", special=False, single_word=True),
             added_token(n + 3, "  ", special=False)]
    return tokenizer_json(bpe_model(v.vocab(), v.merges), added=added,
                          pre={**BYTE_LEVEL, "add_prefix_space": True}, post=None, decoder=BYTE_LEVEL_DECODER)


def verify_with_hf_tokenizers(tokenizer: dict, text: str) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer))
    ids = tok.encode(text).ids
    tok.decode(ids)
    return tok.get_vocab_size(with_added_tokens=True)


def make_tokenizer(w: Writer, hf_dirs: list):
    tokenizers = {
        "gpt2": gpt2_tokenizer(), "smollm": smollm_tokenizer(), "llama3": llama3_tokenizer(),
        "qwen2": qwen2_tokenizer(), "spm-metaspace": spm_metaspace_tokenizer(), "spm-legacy": spm_legacy_tokenizer(),
        "gpt2-added-words": gpt2_added_words_tokenizer(),
    }
    texts = {
        "ascii": "Hello world! The quick brown fox jumps over the lazy dog.",
        "code": "def main():\n\treturn 42  # it's 1234567 they've\r\n    x = [1, 2, 3]\n",
        "cjk": "日本語のテキスト、中文文本，한국어 텍스트。",
        "emoji": "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 ❤️",
        "combining": "e\u0301 a\u0308 \u00e9 \u212b A\u030a \u1e9b\u0323 ﬁ Å",
        "specials": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<|endoftext|><s></s>[INST] x [/INST]"
                    "<|begin_of_text|><|eot_id|><|im_start|",
        "whitespace": "   leading\t\ttabs\n\n\nnewlines   \u00a0nbsp\u3000ideographic \u2028sep trailing   ",
        "escapes": "\\u0041 \\x00 \\n \\\\ %s {{ x }} <0x41> <0xZZ> \u2581lower\u2581one \x00\x01\x1f\x7f",
        "mixed": "Paris is the capital of France. 東京 is Japan's. 1,234.56€ — «ok» fox fox foxes [MASK] <tool_call>",
        "empty": "",
    }
    plan = [
        ("gpt2", "ascii"), ("gpt2", "emoji"), ("gpt2", "whitespace"),
        ("smollm", "specials"), ("smollm", "code"), ("smollm", "cjk"),
        ("llama3", "specials"), ("llama3", "code"), ("llama3", "mixed"),
        ("qwen2", "combining"), ("qwen2", "specials"), ("qwen2", "code"),
        ("spm-metaspace", "ascii"), ("spm-metaspace", "cjk"), ("spm-metaspace", "escapes"),
        ("spm-legacy", "specials"), ("spm-legacy", "whitespace"), ("spm-legacy", "empty"),
        ("gpt2-added-words", "mixed"), ("gpt2-added-words", "escapes"),
    ]
    encoded = {name: dumps(t, separators=(",", ":")) for name, t in tokenizers.items()}
    sizes = {}
    for tok_name, text_name in plan:
        text = texts[text_name]
        sizes[tok_name] = verify_with_hf_tokenizers(tokenizers[tok_name], text)
        w.add(f"{tok_name}-{text_name}.bin", prefixed(encoded[tok_name], text.encode()))
    hf_dirs.extend((name, tokenizers[name], sizes[name]) for name in tokenizers)
    # The text part may be invalid UTF-8 (the target decodes it with replacement).
    w.add("gpt2-invalid-utf8.bin", prefixed(encoded["gpt2"], b"ok \xff\xfe \xc3( \xed\xa0\x80 \xf0\x9f\x98 end"))


# ==============================================================================================
# openai-request
# ==============================================================================================


def make_openai(w: Writer):
    def add(name: str, body):
        data = body.encode() if isinstance(body, str) else dumps(body, indent=None)
        json.loads(data)  # every seed is JSON
        w.add(name, data)

    user = {"role": "user", "content": "Hello!"}
    add("chat-basic.json", {"model": "SmolLM2-135M-Instruct", "messages": [user]})
    add("chat-system-user.json", {"model": "tllm", "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"}], "max_tokens": 32})
    add("chat-all-roles.json", {"messages": [
        {"role": "system", "content": "sys"}, {"role": "developer", "content": "dev rules"},
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "tool", "content": "{\"result\": 4}", "tool_call_id": "call_0"},
        {"role": "user", "content": "And 3+3?"}]})
    add("chat-content-parts.json", {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "Part one, "}, {"type": "text", "text": "part two."}]},
        {"role": "assistant", "content": []}, {"role": "user", "content": [{"type": "text", "text": ""}]}]})
    add("chat-content-image-part.json", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]})
    add("chat-stream-usage.json", {"model": "tllm", "messages": [user], "stream": True,
                                   "stream_options": {"include_usage": True}, "max_tokens": 8})
    add("chat-stream-no-usage.json", {"messages": [user], "stream": True, "stream_options": {"include_usage": False}})
    add("chat-all-sampling.json", {
        "model": "tllm", "messages": [user], "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
        "max_tokens": 64, "max_completion_tokens": 48, "seed": 1234, "stop": ["\n\n", "User:"],
        "stop_token_ids": [0, 2, 49151], "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "repetition_penalty": 1.1, "ignore_eos": False, "n": 1, "logprobs": False, "user": "user-42",
        "stream": False})
    add("chat-stop-string.json", {"messages": [user], "stop": "</s>", "temperature": 0})
    add("chat-stop-list-16.json", {"messages": [user], "stop": [f"stop{i}" for i in range(15)] + ["x" * 1024]})
    add("chat-stop-list-17.json", {"messages": [user], "stop": [str(i) for i in range(17)]})
    add("chat-stop-empty.json", {"messages": [user], "stop": ["", "\u0000"]})
    add("chat-stop-token-ids.json", {"messages": [user], "stop_token_ids": [2, 49152, -1], "ignore_eos": True})
    add("chat-max-completion-tokens.json", {"messages": [user], "max_completion_tokens": 1, "seed": -1})
    add("chat-n-logprobs.json", {"messages": [user], "n": 2, "logprobs": True, "top_logprobs": 5, "user": ""})
    add("chat-edge-zero.json", {"messages": [user], "temperature": 0, "top_p": 0, "top_k": 0, "min_p": 0,
                                "max_tokens": 0, "seed": 0, "presence_penalty": 0, "frequency_penalty": 0,
                                "repetition_penalty": 0, "n": 0})
    add("chat-edge-negative.json", {"messages": [user], "temperature": -1, "top_p": -0.5, "top_k": -2, "min_p": -0.0,
                                    "max_tokens": -5, "max_completion_tokens": -1, "seed": -9223372036854775808,
                                    "presence_penalty": -2.0001, "frequency_penalty": -3, "repetition_penalty": -1})
    add("chat-edge-huge.json",  # decodes; refused by validation
        '{"messages":[{"role":"user","content":"x"}],"temperature":1e308,"top_p":1.7976931348623157e308,'
        '"top_k":9223372036854775807,"max_tokens":9223372036854775807,"seed":9223372036854775807,'
        '"presence_penalty":2.0000000000000004,"frequency_penalty":-1e308,"repetition_penalty":4.9e-324,"n":1,'
        '"stop_token_ids":[2147483647,2147483648,9223372036854775807]}')
    add("chat-edge-overflow.json",  # does not fit Int / Int64 / Double
        '{"messages":[{"role":"user","content":"x"}],"seed":18446744073709551615,"presence_penalty":1e309,'
        '"max_tokens":99999999999999999999,"stop_token_ids":[-9223372036854775809]}')
    add("chat-edge-integral-floats.json",
        '{"messages":[{"role":"user","content":"x"}],"max_tokens":16.0,"top_k":2E0,"seed":1e3,"n":1.0,'
        '"stop_token_ids":[2.0,-0],"temperature":1,"top_p":1,"min_p":1,"max_completion_tokens":1.0e1}')
    add("chat-edge-fractional-ints.json",
        '{"messages":[{"role":"user","content":"x"}],"max_tokens":16.5,"top_k":2.5,"seed":0.1,"n":1.000001,'
        '"stop_token_ids":[1.5]}')
    add("chat-edge-nulls.json", {"model": None, "messages": [{"role": "user", "content": None}], "temperature": None,
                                 "top_p": None, "top_k": None, "min_p": None, "max_tokens": None,
                                 "max_completion_tokens": None, "seed": None, "stop": None, "stop_token_ids": None,
                                 "presence_penalty": None, "frequency_penalty": None, "repetition_penalty": None,
                                 "ignore_eos": None, "n": None, "logprobs": None, "user": None, "stream": None,
                                 "stream_options": None})
    # Structured outputs, tool calls and log-probabilities (docs/server.md).
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                         "unit": {"enum": ["celsius", "fahrenheit"]},
                                         "days": {"type": "array", "items": {"type": "integer", "minimum": 1,
                                                                              "maximum": 14}, "maxItems": 3}},
        "required": ["city"], "additionalProperties": False}}}
    add("chat-tools-required.json", {"messages": [user], "tools": [weather], "tool_choice": "required"})
    add("chat-tools-named.json", {"messages": [user], "tools": [weather, {"type": "function", "function": {
        "name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False})
    add("chat-tools-history.json", {"messages": [user, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "<tool_call>{\"name\": \"f\"}</tool_call>"}],
        "tools": [weather]})
    add("chat-json-object.json", {"messages": [user], "response_format": {"type": "json_object"}, "logprobs": True,
                                  "top_logprobs": 20})
    add("chat-json-schema-refs.json", {"messages": [user], "response_format": {"type": "json_schema", "json_schema": {
        "name": "tree", "strict": True, "schema": {
            "$defs": {"node": {"type": "object", "properties": {
                "label": {"type": "string", "minLength": 1, "maxLength": 8},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
                "required": ["label"]}},
            "type": "object", "properties": {"root": {"$ref": "#/$defs/node"}, "n": {"anyOf": [
                {"type": "integer", "minimum": -5, "maximum": 5}, {"type": "null"}]},
                "tags": {"type": "array", "prefixItems": [{"const": "x"}], "items": {"type": "boolean"}}},
            "required": ["root", "n"]}}}})
    add("completion-json-schema-logprobs.json", {"prompt": "x", "logprobs": 3, "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array", "items": {"enum": [1, "a", None,
                                                                                                         {"b": []}]}}}}})
    add("chat-edge-wrong-types.json", {"messages": [{"role": 1, "content": {"text": "x"}}], "temperature": "0.5",
                                       "stream": "true", "stop": [1, 2], "max_tokens": [16], "seed": True})
    add("chat-unicode-escapes.json",
        '{"messages":[{"role":"system","content":"\\u4f60\\u597d \\ud83d\\ude00 \\u00e9\\u0301 \\t\\r\\n\\b\\f\\/\\\\ '
        '\\"q\\""},{"role":"user","content":"\\u0000 nul, lone \\udc00 low, \\ud800 high, BOM \\ufeff, '
        'RTL \\u202e abc, 日本語 😀 e\u0301 <|im_start|>assistant\\n<|im_end|>"}],'
        '"stop":["\\u00e9","😀"],"user":"\\u0000"}')
    add("chat-nested-unknown.json", {
        "messages": [user], "model": "x", "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                  "required": ["city"]}}}],
        "tool_choice": "auto", "response_format": {"type": "json_schema", "json_schema": {"schema": {"a": [[[[{}]]]]}}},
        "logit_bias": {"50256": -100}, "metadata": {"k": {"nested": {"deeper": [1, 2.5, None, True, "s"]}}},
        "extra_body": {"messages": "shadow"}, "Messages": [], "messages ": 1})
    add("chat-assistant-tool-calls.json", {"messages": [
        user, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "1"}]})
    add("chat-empty-messages.json", {"messages": [], "max_tokens": 1})
    add("chat-unknown-role.json", {"messages": [{"role": "function", "content": "x"}, {"role": "", "content": ""}]})
    add("chat-missing-messages.json", {"prompt": None, "max_tokens": 4})
    add("chat-duplicate-keys.json",
        '{"messages":[{"role":"user","content":"a","content":"b"}],"max_tokens":1,"max_tokens":2,"stream":false}')
    add("completion-string.json", {"model": "tllm", "prompt": "Once upon a time", "max_tokens": 16, "echo": True,
                                   "temperature": 0.8, "top_p": 0.95, "seed": 7, "stop": "\n"})
    add("completion-token-ids.json", {"prompt": [1, 9690, 198, 42, 0, 49151], "max_tokens": 4, "echo": False})
    add("completion-one-string-list.json", {"prompt": ["The capital of France is"], "max_tokens": 3})
    add("completion-two-string-list.json", {"prompt": ["a", "b"]})
    add("completion-nested-ids.json", {"prompt": [[1, 2, 3]], "stream": True,
                                       "stream_options": {"include_usage": True}})
    add("completion-ids-out-of-range.json", '{"prompt":[-1,49152,2147483647,2147483648,-2147483649],"max_tokens":1}')
    add("completion-all-sampling.json", {
        "prompt": "x", "echo": True, "temperature": 2, "top_p": 0.000001, "top_k": -1, "min_p": 1,
        "max_tokens": 1, "seed": 9223372036854775807, "stop": ["a"] * 16, "stop_token_ids": list(range(40)),
        "presence_penalty": 2, "frequency_penalty": -2, "repetition_penalty": 10, "ignore_eos": True, "n": 1,
        "logprobs": False, "user": "u", "best_of": 1, "suffix": None})
    add("completion-empty-prompt.json", {"prompt": "", "echo": None})
    add("completion-mixed-prompt.json", {"prompt": [1, "two", 3.0, None]})
    add("register-client.json", {"client_id": "worker-0-9f2c", "host": ["192.168.1.20", "10.0.0.5", "fe80::1%eth0"],
                                 "port": 25001, "pp_rank": 0, "start_idx": 0, "end_idx": 15, "memory": 8589934592})
    add("register-client-single-host.json", {"client_id": "w", "host": "localhost", "port": 65535})
    add("register-client-edge.json", {"client_id": "", "host": [], "port": 0, "pp_rank": -2, "start_idx": 31,
                                      "end_idx": 30, "memory": -1})
    add("not-an-object.json", '[{"messages":[]}, 1, "x", null]')
    add("deeply-nested.json", '{"messages":[{"role":"user","content":"x"}],"extra":' + "[" * 200 + "]" * 200 + "}")


# ==============================================================================================
# grpc-message
# ==============================================================================================

HIDDEN = 576  # SmolLM2-135M
METHODS = ["Status", "Forward", "Health", "SetConfig", "ImageForward"]


def load_schemas(tmp: Path):
    from grpc_tools import protoc

    out = tmp / "proto"
    out.mkdir()
    status = protoc.main(["grpc_tools.protoc", f"-I{ROOT / 'Protos'}", f"--python_out={out}", "schemas.proto"])
    assert status == 0, "protoc failed on Protos/schemas.proto"
    sys.path.insert(0, str(out))
    import schemas_pb2  # noqa: E402

    return schemas_pb2


CHAT_ID = "chatcmpl-3f1d2c4b5a6978e0f1a2b3c4d5e6f708"
CMPL_ID = "cmpl-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
PY_ID = "6f1c2b0e-9d7a-4c3b-8e2f-1a0b9c8d7e6f"


def grpc_frame(message: bytes, compressed: int = 0, length: int | None = None) -> bytes:
    return struct.pack(">BI", compressed, len(message) if length is None else length) + message


def selector(method: str, response: bool = False) -> bytes:
    return bytes([METHODS.index(method) + (5 if response else 0)])


def f16_rows(rows: int, columns: int, seed: int, tiled: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if tiled:
        # Compressible like real activations are not, but small: one random row repeated with a
        # row number, so that 64 rows of 576 fit a seed as an LZ4 frame.
        base = (rng.standard_normal(columns) * 3).astype(np.float32)
        x = np.tile(base, (rows, 1))
        x[:, 0] = np.arange(rows, dtype=np.float32)
    else:
        x = (rng.standard_normal((rows, columns)) * 3).astype(np.float32)
    return x.astype("<f2")


def encode_tensor(x: np.ndarray) -> tuple[bytes, list[int]]:
    """As Tests/interop/conftest.py: f16 LE row-major, LZ4 frame iff rows >= 64."""
    import lz4.frame

    raw = x.astype("<f2").tobytes()
    rows = int(x.shape[0])
    return (lz4.frame.compress(raw) if rows >= 64 else raw), [rows, int(x.shape[1])]


def decode_tensor(data: bytes, shape) -> np.ndarray:
    import lz4.frame

    raw = lz4.frame.decompress(data) if shape[0] >= 64 else bytes(data)
    assert len(raw) == shape[0] * shape[1] * 2
    return np.frombuffer(raw, dtype="<f2").reshape(shape)


def unknown_fields() -> bytes:
    """Fields 15..18 of every wire type a proto3 parser must skip: varint, fixed64, length-delimited, fixed32."""
    return (bytes([15 << 3 | 0]) + b"\x96\x01" + bytes([(16 << 3 | 1) & 0x7F | 0x80, 16 >> 4]) + b"\x01" * 8
            + bytes([(17 << 3 | 2) & 0x7F | 0x80, 17 >> 4]) + b"\x03abc" + bytes([(18 << 3 | 5) & 0x7F | 0x80, 18 >> 4])
            + b"\xff" * 4)


def make_grpc(w: Writer, pb):
    def forward(uuids, ids, x=None, data=None, shape=None):
        req = pb.ForwardRequest(uuid_list=uuids, input_ids_list=[pb.InputIds(input_ids=i) for i in ids])
        if x is not None:
            data, shape = encode_tensor(x)
        if data is not None:
            req.hidden_states.CopyFrom(pb.BFloat16Tensor(data=data, shape=shape))
        return req

    def add(name: str, method: str, message, response: bool = False, raw_tail: bytes = b""):
        body = message.SerializeToString() + raw_tail
        type(message).FromString(body)  # parses back, unknown fields included
        w.add(name, selector(method, response) + grpc_frame(body))

    def add_forward(name: str, req, expect_ok: bool):
        if expect_ok:  # what WorkerService.sequences and TensorCodec.decode accept
            rows = sum(len(i.input_ids) for i in req.input_ids_list)
            assert len(req.uuid_list) == len(req.input_ids_list) == len(set(req.uuid_list)) and rows > 0
            assert list(req.hidden_states.shape) == [rows, HIDDEN]
            assert np.isfinite(decode_tensor(req.hidden_states.data, list(req.hidden_states.shape))).all()
        add(name, "Forward", req)

    # Status: a worker reports the step's uuid_list, its pp rank and the compute time (negative: failed).
    # Sequence ids are the API's request ids (OpenAIService: "chatcmpl-" / "cmpl-" + 32 hex digits); the
    # original Python master uses uuid4 strings.
    add("status-request.bin", "Status", pb.StatusRequest(uuid=[CHAT_ID], pp_idx=1, cost_time=0.0123))
    add("status-request-batch.bin", "Status",
        pb.StatusRequest(uuid=[CHAT_ID, CMPL_ID, PY_ID], pp_idx=0, cost_time=1.5e-4))
    add("status-request-failure.bin", "Status", pb.StatusRequest(uuid=[CHAT_ID], pp_idx=2, cost_time=-1))
    add("status-request-negative.bin", "Status",
        pb.StatusRequest(uuid=["", "x" * 300], pp_idx=-1, cost_time=float("nan")))
    w.add("status-request-empty.bin", selector("Status") + grpc_frame(b""))
    # Forward: uuid_list and input_ids_list pair up; the tensor has one row per input id.
    add_forward("forward-1row.bin", forward([CHAT_ID], [[1000]], f16_rows(1, HIDDEN, 1)), True)
    add_forward("forward-2rows.bin", forward([CHAT_ID], [[1, 9690]], f16_rows(2, HIDDEN, 2)), True)
    add_forward("forward-4rows-3requests.bin",
                forward([CHAT_ID, CMPL_ID, PY_ID], [[1000, 1001], [1002], [1003]], f16_rows(4, HIDDEN, 3)),
                True)
    add_forward("forward-last-stage-result.bin",  # what the last worker sends the master: a row per request
                forward([CHAT_ID, CMPL_ID], [[1, 2, 3], [4]], f16_rows(2, HIDDEN, 16)), False)
    x64 = f16_rows(64, HIDDEN, 4, tiled=True)
    add_forward("forward-64rows-lz4.bin", forward([PY_ID], [list(range(1000, 1064))], x64), True)
    data, shape = encode_tensor(x64)
    add_forward("forward-64rows-lz4-truncated.bin",
                forward(["req-0-64"], [list(range(64))], data=data[: len(data) // 2], shape=shape), False)
    add_forward("forward-3rows-lz4-frame.bin",  # a frame where raw float16 is due
                forward(["a"], [[1, 2, 3]], data=encode_tensor(f16_rows(64, HIDDEN, 5, tiled=True))[0],
                        shape=[3, HIDDEN]), False)
    add_forward("forward-64cols.bin", forward(["req-0-2"], [[5, 6]], f16_rows(2, 64, 6)), False)
    add_forward("forward-64cols-64rows-lz4.bin", forward(["r"], [list(range(64))], f16_rows(64, 64, 7, tiled=True)),
                False)
    half = f16_rows(2, HIDDEN, 8).tobytes()
    add_forward("forward-shape-data-mismatch.bin", forward(["a"], [[1, 2]], data=half[: len(half) // 2],
                                                            shape=[2, HIDDEN]), False)
    add_forward("forward-rows-ids-mismatch.bin", forward(["a"], [[1, 2, 3]], f16_rows(2, HIDDEN, 9)), False)
    add_forward("forward-shape-3d.bin", forward(["a"], [[1]], data=half[:HIDDEN * 2], shape=[1, 1, HIDDEN]), False)
    add_forward("forward-shape-negative.bin", forward(["a"], [[1]], data=b"", shape=[-1, HIDDEN]), False)
    add_forward("forward-shape-huge.bin", forward(["a"], [[1]], data=b"\0\0", shape=[2147483647, 2147483647]), False)
    nonfinite = f16_rows(1, HIDDEN, 10)
    nonfinite[0, :3] = [np.inf, -np.inf, np.nan]
    add_forward("forward-nonfinite.bin", forward(["a"], [[1]], data=nonfinite.tobytes(), shape=[1, HIDDEN]), False)
    add_forward("forward-no-tensor.bin", forward(["a", "b"], [[1], [2]]), False)
    add_forward("forward-uuid-count-mismatch.bin", forward(["a", "b"], [[1]], f16_rows(1, HIDDEN, 11)), False)
    add_forward("forward-duplicate-uuid.bin", forward(["a", "a"], [[1], [2]], f16_rows(2, HIDDEN, 12)), False)
    add_forward("forward-empty-ids.bin", forward(["a", "b"], [[1], []], f16_rows(1, HIDDEN, 13)), False)
    w.add("forward-unknown-fields.bin", selector("Forward") + grpc_frame(
        forward(["req-0-1"], [[7]], f16_rows(1, HIDDEN, 14)).SerializeToString() + unknown_fields()))
    w.add("forward-empty.bin", selector("Forward") + grpc_frame(b""))
    # Health takes Empty.
    w.add("health-request.bin", selector("Health") + grpc_frame(b""))
    add("health-request-unknown-fields.bin", "Health", pb.Empty(), raw_tail=unknown_fields())
    # SetConfig: the addresses a worker is told to use, in every form GRPCTarget parses.
    add("setconfig-request.bin", "SetConfig",
        pb.SetConfigRequest(forward_url="192.168.1.21:25002", master_url="192.168.1.10:25001", pp_rank=1))
    add("setconfig-ipv6-unix.bin", "SetConfig",
        pb.SetConfigRequest(forward_url="[::1]:25003", master_url="unix:///tmp/tllm-master.sock", pp_rank=0))
    add("setconfig-prefixes.bin", "SetConfig",
        pb.SetConfigRequest(forward_url="dns:///localhost:50051", master_url="ipv6:[fe80::1%eth0]:1", pp_rank=2))
    add("setconfig-bad-urls.bin", "SetConfig",
        pb.SetConfigRequest(forward_url=" host:0 ", master_url="unix:", pp_rank=-1))
    add("setconfig-bad-urls-2.bin", "SetConfig",
        pb.SetConfigRequest(forward_url="[::1", master_url="http://h:99999/x", pp_rank=2147483647))
    # ImageForward (unimplemented by the Swift worker, but parsed).
    img = pb.ImageForwardRequest(uuid=["img-0"], seq_len=2, height=64, width=64)
    for field_name, seed in [("hidden_states", 20), ("encoder_hidden_states", 21), ("text_embeddings", 22)]:
        d, s = encode_tensor(f16_rows(2, 64, seed))
        getattr(img, field_name).CopyFrom(pb.BFloat16Tensor(data=d, shape=s))
    add("imageforward-request.bin", "ImageForward", img)
    # Responses, with the texts the original sends.
    add("status-response.bin", "Status", pb.StatusResponse(msg="Successful", status=200), response=True)
    add("forward-response.bin", "Forward", pb.ForwardResponse(msg="Forward Completed", status=200), response=True)
    add("health-response.bin", "Health", pb.HealthResponse(msg="Healthy", status=200), response=True)
    add("setconfig-response.bin", "SetConfig", pb.SetConfigResponse(msg="SetConfig Completed", status=200),
        response=True)
    add("imageforward-response.bin", "ImageForward", pb.ForwardResponse(msg="unsupported", status=501),
        response=True)
    add("forward-response-error.bin", "Forward",
        pb.ForwardResponse(msg="step a-b: \u00e9\U0001f600 failed", status=-500), response=True, raw_tail=unknown_fields())
    # Framing.
    status = pb.StatusRequest(uuid=["a"], pp_idx=0, cost_time=0.5).SerializeToString()
    w.add("framing-two-messages.bin", selector("Status") + grpc_frame(status) + grpc_frame(status))
    w.add("framing-compressed-flag.bin", selector("Status") + grpc_frame(status, compressed=1))
    w.add("framing-truncated-body.bin", selector("Status") + grpc_frame(status, length=len(status) + 10))
    w.add("framing-truncated-prefix.bin", selector("Health") + b"\x00\x00\x00")
    w.add("framing-huge-length.bin", selector("Forward") + grpc_frame(b"\x0a\x01a", length=0xFFFFFFFF))
    w.add("framing-selector-251.bin", bytes([251]) + grpc_frame(  # 251 % 10 = 1: Forward request
        forward(["s"], [[3]], f16_rows(1, HIDDEN, 15)).SerializeToString()))
    w.add("framing-selector-only.bin", selector("SetConfig", response=True))


# ==============================================================================================
# Tiny models
# ==============================================================================================

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)


class ModelShape:
    def __init__(self, hidden=32, ffn=64, layers=1, heads=2, kv_heads=1, vocab=100, head_dim=None):
        self.hidden, self.ffn, self.layers, self.heads, self.kv_heads, self.vocab = hidden, ffn, layers, heads, kv_heads, vocab
        self.head_dim = head_dim or hidden // heads
        self.q = heads * self.head_dim
        self.kv = kv_heads * self.head_dim


def random_weights(shape: ModelShape, seed: int, *, biases=False, untied=False, rope_freqs=False) -> dict:
    """float32 weights with llama.cpp's GGUF names, as numpy arrays of PyTorch shape ([out, in])."""
    rng = np.random.default_rng(seed)
    h, f = shape.hidden, shape.ffn

    def normal(*dims, scale=0.08):
        return (rng.standard_normal(dims) * scale).astype(np.float32)

    def norm():
        return (1 + rng.standard_normal(h) * 0.05).astype(np.float32)

    out = {"token_embd.weight": normal(shape.vocab, h, scale=0.5)}
    if rope_freqs:
        out["rope_freqs.weight"] = np.linspace(1, 8, shape.head_dim // 2).astype(np.float32)
    for i in range(shape.layers):
        p = f"blk.{i}."
        out[p + "attn_norm.weight"] = norm()
        out[p + "attn_q.weight"] = normal(shape.q, h)
        out[p + "attn_k.weight"] = normal(shape.kv, h)
        out[p + "attn_v.weight"] = normal(shape.kv, h)
        if biases:
            out[p + "attn_q.bias"] = normal(shape.q, scale=0.02)
            out[p + "attn_k.bias"] = normal(shape.kv, scale=0.02)
            out[p + "attn_v.bias"] = normal(shape.kv, scale=0.02)
        out[p + "attn_output.weight"] = normal(h, shape.q)
        out[p + "ffn_norm.weight"] = norm()
        out[p + "ffn_gate.weight"] = normal(f, h)
        out[p + "ffn_up.weight"] = normal(f, h)
        out[p + "ffn_down.weight"] = normal(h, f)
    out["output_norm.weight"] = norm()
    if untied:
        out["output.weight"] = normal(shape.vocab, h, scale=0.3)
    return out


HF_NAMES = [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"), ("attn_norm.weight", "input_layernorm.weight"),
            ("attn_q.weight", "self_attn.q_proj.weight"), ("attn_k.weight", "self_attn.k_proj.weight"),
            ("attn_v.weight", "self_attn.v_proj.weight"), ("attn_q.bias", "self_attn.q_proj.bias"),
            ("attn_k.bias", "self_attn.k_proj.bias"), ("attn_v.bias", "self_attn.v_proj.bias"),
            ("attn_output.weight", "self_attn.o_proj.weight"), ("ffn_norm.weight", "post_attention_layernorm.weight"),
            ("ffn_gate.weight", "mlp.gate_proj.weight"), ("ffn_up.weight", "mlp.up_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight")]


def hf_name(gguf_name: str) -> str:
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    suffix = m.group(2) if m else gguf_name
    for g, h in HF_NAMES:
        if suffix == g:
            return f"model.layers.{m.group(1)}.{h}" if m else h
    raise KeyError(gguf_name)


# ---------------------------------------------------------------------------------------------- gguf


def gguf_bytes(arch: str, shape: ModelShape, weights: dict, types: dict, tokenizer: dict, *, extra_kv=None,
               alignment: int | None = None, version: int | None = None, context=128, rope_base=10000.0,
               eps=1e-5) -> bytes:
    """A GGUF file made with GGUFWriter. `types` maps a tensor-name predicate's key to a GGML type name."""
    import gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.gguf"
        writer = gguf.GGUFWriter(str(path), arch)
        writer.add_name(f"tiny-{arch}")
        writer.add_block_count(shape.layers)
        writer.add_context_length(context)
        writer.add_embedding_length(shape.hidden)
        writer.add_feed_forward_length(shape.ffn)
        writer.add_head_count(shape.heads)
        writer.add_head_count_kv(shape.kv_heads)
        writer.add_rope_freq_base(rope_base)
        writer.add_layer_norm_rms_eps(eps)
        if alignment is not None:
            writer.add_custom_alignment(alignment)
        for key, (kind, value) in (extra_kv or {}).items():
            getattr(writer, f"add_{kind}")(key, value)  # add_uint32, add_string, ...
        writer.add_tokenizer_model(tokenizer["model"])
        if "pre" in tokenizer:
            writer.add_tokenizer_pre(tokenizer["pre"])
        writer.add_token_list(tokenizer["tokens"])
        writer.add_token_types(tokenizer["types"])
        if "scores" in tokenizer:
            writer.add_token_scores(tokenizer["scores"])
        if "merges" in tokenizer:
            writer.add_token_merges(tokenizer["merges"])
        writer.add_bos_token_id(tokenizer["bos"])
        writer.add_eos_token_id(tokenizer["eos"])
        for key in ("unk", "pad", "eot"):
            if key in tokenizer:
                getattr(writer, f"add_{key}_token_id")(tokenizer[key])
        if "add_bos" in tokenizer:
            writer.add_add_bos_token(tokenizer["add_bos"])
        writer.add_chat_template(tokenizer["template"])
        for name, array in weights.items():
            add_gguf_tensor(writer, name, array, pick_type(types, name, array))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        data = bytearray(path.read_bytes())
    if version is not None:
        data[4:8] = struct.pack("<I", version)
    return bytes(data)


def pick_type(types: dict, name: str, array: np.ndarray) -> str:
    """The type of a tensor: the first rule whose key is part of its name; else, for a vector, the
    "1d" rule or F32 (norms and biases stay float, as llama.cpp keeps them); else the "*" rule."""
    for key, type_name in types.items():
        if key not in ("*", "1d") and key in name:
            return type_name
    if array.ndim == 1:
        return types.get("1d", "F32")
    return types.get("*", "F32")


def add_gguf_tensor(writer, name: str, array: np.ndarray, type_name: str):
    import gguf

    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    if type_name == "F32":
        writer.add_tensor(name, array.astype(np.float32))
    elif type_name == "F16":
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)


def gpt2_gguf_tokenizer(specials: list[str], pre: str, template: str, bos: str, eos: str, eot: str | None = None,
                        merges=24) -> dict:
    alphabet = " \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()<>|_/"
    v = ByteLevelVocab(specials, merges, alphabet=alphabet)
    tok = {"model": "gpt2", "pre": pre, "tokens": v.tokens,
           "types": [3 if t in specials else 1 for t in v.tokens], "merges": [f"{a} {b}" for a, b in v.merges],
           "bos": v.id(bos), "eos": v.id(eos), "template": template}
    if eot:
        tok["eot"] = v.id(eot)
    return tok


def spm_gguf_tokenizer() -> dict:
    v = SentencePieceVocab(24)
    return {"model": "llama", "tokens": v.tokens, "types": v.types(), "scores": v.scores(), "bos": 1, "eos": 2,
            "unk": 0, "add_bos": True, "template": MISTRAL_TEMPLATE}


def make_gguf(w: Writer, verify) -> None:
    import gguf

    chatml = gpt2_gguf_tokenizer(CHATML_SPECIALS, "smollm", CHATML_TEMPLATE, "<|im_start|>", "<|im_end|>")
    qwen = gpt2_gguf_tokenizer(CHATML_SPECIALS, "qwen2", CHATML_TEMPLATE, "<|endoftext|>", "<|im_end|>")
    llama3 = gpt2_gguf_tokenizer(LLAMA3_SPECIALS, "llama-bpe", LLAMA3_TEMPLATE, "<|begin_of_text|>",
                                 "<|end_of_text|>", eot="<|eot_id|>")
    gpt2 = gpt2_gguf_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "gpt-2", CHATML_TEMPLATE,
                               "<|endoftext|>", "<|endoftext|>", merges=16)
    spm = spm_gguf_tokenizer()

    def shape(tok, **kw):
        return ModelShape(vocab=len(tok["tokens"]), **kw)

    seeds = []

    def add(name, arch, tok, model_shape, seed, types, weights_kw=None, **kw):
        weights = random_weights(model_shape, seed, **(weights_kw or {}))
        data = gguf_bytes(arch, model_shape, weights, types, tok, **kw)
        with tempfile.TemporaryDirectory() as tmp:  # the reference parser reads it
            (Path(tmp) / "m.gguf").write_bytes(data)
            assert len(gguf.GGUFReader(Path(tmp) / "m.gguf").tensors) == len(weights), name
        w.add(name, data)
        seeds.append(name)

    s = shape(chatml, layers=1, heads=2, kv_heads=1)
    add("llama-f32-1layer-tied.gguf", "llama", chatml, s, 1, {"*": "F32"})
    add("llama-f16-2layers-untied.gguf", "llama", chatml, shape(chatml, layers=2, heads=4, kv_heads=2), 2,
        {"*": "F16"}, {"untied": True})
    add("llama-q8_0-2layers.gguf", "llama", chatml, shape(chatml, layers=2, heads=4, kv_heads=1), 3, {"*": "Q8_0"})
    add("llama-q4_0-h64-2layers.gguf", "llama", chatml, shape(chatml, hidden=64, layers=2, heads=4, kv_heads=2), 4,
        {"*": "Q4_0"})
    add("llama-q4_1-1layer-untied.gguf", "llama", gpt2, shape(gpt2, layers=1, heads=2, kv_heads=2), 5,
        {"*": "Q4_1"}, {"untied": True})
    add("llama-q5_0-q5_1-mixed.gguf", "llama", chatml, shape(chatml, layers=2, heads=4, kv_heads=2), 6,
        {"token_embd": "Q8_0", "attn_q": "Q5_0", "attn_k": "Q5_1", "attn_v": "BF16", "attn_output": "Q4_0",
         "ffn_gate": "Q4_1", "ffn_up": "F16", "ffn_down": "Q8_0", "output.weight": "F16", "norm": "F16"},
        {"untied": True})
    add("llama-spm-q8_0.gguf", "llama", spm, shape(spm, layers=1, heads=2, kv_heads=1), 7,
        {"token_embd": "Q4_0", "*": "Q8_0"})
    add("llama3-bpe-rope-freqs-q8_0.gguf", "llama", llama3, shape(llama3, layers=1, heads=4, kv_heads=1), 8,
        {"*": "Q8_0"}, {"rope_freqs": True}, rope_base=500000.0,
        extra_kv={"llama.vocab_size": ("uint32", len(llama3["tokens"])), "llama.rope.dimension_count": ("uint32", 8),
                  "llama.attention.key_length": ("uint32", 8), "llama.attention.value_length": ("uint32", 8)})
    add("qwen2-biases-f16.gguf", "qwen2", qwen, shape(qwen, layers=1, heads=2, kv_heads=1), 9,
        {"*": "F16"}, {"biases": True}, rope_base=1000000.0, eps=1e-6)
    add("qwen2-biases-q8_0-untied.gguf", "qwen2", qwen, shape(qwen, layers=2, heads=4, kv_heads=2), 10,
        {"*": "Q8_0"}, {"biases": True, "untied": True})
    add("llama-q4_0-v2-align64.gguf", "llama", chatml, shape(chatml, layers=1, heads=2, kv_heads=1), 11,
        {"*": "Q4_0"}, alignment=64, version=2)
    add("llama-bf16-head-dim-16.gguf", "llama", chatml,
        shape(chatml, hidden=32, layers=1, heads=4, kv_heads=2, head_dim=16), 12, {"*": "BF16"},
        extra_kv={"llama.attention.key_length": ("uint32", 16), "llama.attention.value_length": ("uint32", 16)})
    for name in seeds:
        verify("gguf", name, w.seeds[name])


# ---------------------------------------------------------------------------------------------- safetensors


def bf16_bytes(x: np.ndarray) -> bytes:
    bits = x.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype("<u2").tobytes()


def safetensors_bytes(tensors: dict, dtypes: dict, metadata: dict | None = None, sort_header: bool = False) -> bytes:
    """8-byte LE header length, the JSON header (space-padded to 8 bytes), the data in the given order.
    `sort_header`: header keys sorted by name (as the `safetensors` package writes them), data not."""
    header: dict = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    blobs, offset = [], 0
    for name, array in tensors.items():
        dtype = pick_type(dtypes, name, array) if not isinstance(array, tuple) else array[0]
        if isinstance(array, tuple):  # (dtype, shape, raw bytes)
            _, shape_, data = array
        else:
            shape_ = list(array.shape)
            data = {"F32": lambda a: a.astype("<f4").tobytes(), "F16": lambda a: a.astype("<f2").tobytes(),
                    "BF16": bf16_bytes}[dtype](array)
        header[name] = {"dtype": dtype, "shape": shape_, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header, separators=(",", ":"), sort_keys=sort_header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs)


def mlx_quantize(w_: np.ndarray, group: int, bits: int):
    """MLX affine quantisation: packed uint32 words (little-endian bit stream per row), scales, biases."""
    rows, cols = w_.shape
    g = w_.reshape(rows, cols // group, group)
    lo, hi = g.min(axis=2), g.max(axis=2)
    levels = (1 << bits) - 1
    scale = np.where(hi > lo, (hi - lo) / levels, 1.0).astype(np.float32)
    q = np.clip(np.round((g - lo[..., None]) / scale[..., None]), 0, levels).astype(np.uint64).reshape(rows, cols)
    words = np.zeros((rows, cols * bits // 32), dtype=np.uint64)
    for c in range(cols):
        bit = c * bits
        words[:, bit // 32] |= (q[:, c] << np.uint64(bit % 32)) & np.uint64(0xFFFFFFFF)
    return words.astype("<u4"), scale.astype(np.float16), lo.astype(np.float16)


def make_safetensors(w: Writer, verify) -> None:
    tok_vocab = ByteLevelVocab(CHATML_SPECIALS, 24,
                               alphabet=" \nabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()<>|_/")
    vocab = len(tok_vocab.tokens)
    seeds = []

    def config(arch: str, model_type: str, s: ModelShape, **kw) -> dict:
        c = {"architectures": [arch], "model_type": model_type, "hidden_size": s.hidden, "intermediate_size": s.ffn,
             "num_hidden_layers": s.layers, "num_attention_heads": s.heads, "num_key_value_heads": s.kv_heads,
             "vocab_size": s.vocab, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
             "tie_word_embeddings": True, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
        c.update(kw)
        return c

    def add(name: str, cfg: dict, s: ModelShape, seed: int, dtypes: dict, weights_kw=None, transform=None,
            metadata=None, sort_header=False):
        weights = {hf_name(k): v for k, v in random_weights(s, seed, **(weights_kw or {})).items()}
        if transform:
            weights = transform(weights)
        weights_file = safetensors_bytes(weights, dtypes, metadata, sort_header=sort_header)
        try:
            import safetensors
        except ImportError:
            pass
        else:  # the reference parser reads the hand-written file
            assert len(safetensors.deserialize(weights_file)) == len(weights), name
        data = prefixed(dumps(cfg, separators=(",", ":")), weights_file)
        w.add(name, data)
        seeds.append(name)

    s = ModelShape(vocab=vocab, layers=1, heads=2, kv_heads=1)
    add("llama-f32-1layer-tied.bin", config("LlamaForCausalLM", "llama", s), s, 21, {"*": "F32"})
    s = ModelShape(vocab=vocab, layers=2, heads=4, kv_heads=2)
    add("llama-f16-2layers-untied.bin", config("LlamaForCausalLM", "llama", s, tie_word_embeddings=False,
                                               torch_dtype="float16"), s, 22, {"*": "F16", "1d": "F16"},
        {"untied": True})
    add("llama-bf16-2layers.bin", config("LlamaForCausalLM", "llama", s, torch_dtype="bfloat16"), s, 23,
        {"*": "BF16", "1d": "BF16"})
    s = ModelShape(vocab=vocab, layers=1, heads=2, kv_heads=1)
    add("qwen2-f16-biases.bin", config("Qwen2ForCausalLM", "qwen2", s, rope_theta=1000000.0, rms_norm_eps=1e-6,
                                       use_sliding_window=False, sliding_window=None, max_window_layers=1), s, 24,
        {"*": "F16", "bias": "F32", "1d": "F16"}, {"biases": True})
    s = ModelShape(vocab=vocab, layers=1, heads=4, kv_heads=2, head_dim=16)
    add("mistral-bf16-head-dim.bin", config("MistralForCausalLM", "mistral", s, head_dim=16, sliding_window=4096,
                                            tie_word_embeddings=False), s, 25, {"*": "BF16", "1d": "BF16"},
        {"untied": True})
    s = ModelShape(vocab=vocab, layers=1, heads=4, kv_heads=1)
    add("llama3-rope-scaling-f16.bin", config(
        "LlamaForCausalLM", "llama", s, rope_theta=500000.0, max_position_embeddings=131072, rope_scaling={
            "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}), s, 26, {"*": "F16"})
    s = ModelShape(vocab=vocab, layers=2, heads=2, kv_heads=1)
    add("llama-mixed-dtypes.bin", config("LlamaForCausalLM", "llama", s, tie_word_embeddings=False,
                                         attention_bias=True, unknown_field={"nested": [1, 2, {"x": None}]}), s, 27,
        {"norm": "F32", "q_proj": "BF16", "k_proj": "F16", "v_proj": "F32", "o_proj": "F16", "mlp": "BF16",
         "bias": "F16", "*": "F16"}, {"untied": True, "biases": True},
        metadata={"format": "pt", "note": "mixed dtypes, attention_bias", "empty": ""})

    def reverse(weights):  # data from the last layer's tensors to the embedding
        return dict(reversed(list(weights.items())))

    s = ModelShape(vocab=vocab, layers=1, heads=2, kv_heads=1)
    add("llama-bf16-sorted-header.bin", config("LlamaForCausalLM", "llama", s), s, 28, {"*": "BF16"},
        transform=reverse, metadata={}, sort_header=True)

    def mlx(weights):
        out = {}
        for name, array in weights.items():
            if array.ndim == 2:
                packed, scales, biases = mlx_quantize(array, 32, 4)
                stem = name[: -len(".weight")]
                out[name] = ("U32", list(packed.shape), packed.tobytes())
                out[stem + ".scales"] = ("F16", list(scales.shape), scales.tobytes())
                out[stem + ".biases"] = ("F16", list(biases.shape), biases.tobytes())
            else:
                out[name] = array
        return out

    s = ModelShape(vocab=vocab, layers=2, heads=2, kv_heads=1)
    add("llama-mlx-4bit.bin", config("LlamaForCausalLM", "llama", s, quantization={"group_size": 32, "bits": 4}), s,
        29, {"*": "F16"}, transform=mlx)
    tokenizer = tokenizer_json(bpe_model(tok_vocab.vocab(), tok_vocab.merges),
                               added=[added_token(i, t) for i, t in enumerate(CHATML_SPECIALS)], pre=BYTE_LEVEL,
                               decoder=BYTE_LEVEL_DECODER)
    verify_with_hf_tokenizers(tokenizer, "hi")
    for name in seeds:
        verify("safetensors", name, w.seeds[name], tokenizer=tokenizer)


# ==============================================================================================
# chat-template
# ==============================================================================================

TARGET_NOW = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)  # FuzzTarget.chatTemplate's `now`


def jinja_render(source: str, context: dict) -> str:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: TARGET_NOW.strftime(fmt)
    return env.from_string(source).render(**context)


SMALL_TEMPLATES = {
    "loops-loopvars": (
        "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ m.role|upper }}"
        "{% if loop.first %} (first){% elif loop.last %} (last){% endif %}: {{ m['content'] }}"
        "{% if not loop.last %}\n{% endif %}{% endfor %}"
        "{% for x in range(3) if x != 1 %}[{{ x }}{{ loop.cycle('a', 'b') }}]{% else %}none{% endfor %}"
        "{% for k, v in {'b': 2, 'a': 1}|dictsort %}{{ k }}={{ v }};{% endfor %}",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                      {"role": "user", "content": "bye"}]}),
    "macros-call": (
        "{% macro render(m, prefix='> ', upper=false) -%}{{ prefix }}{{ m.content|upper if upper else m.content }}"
        "{%- endmacro %}{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}"
        "{% for m in messages %}{{ render(m) }}\n{{ render(m, prefix='# ', upper=true) }}\n{% endfor %}"
        "{% call wrap('b') %}{{ messages|length }} messages{% endcall %}",
        {"messages": [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]}),
    "filters": (
        "{{ text|trim|lower|replace('world', 'there')|title }}|{{ words|sort|join(',') }}|{{ words|unique|list|length }}"
        "|{{ nums|sum }}/{{ nums|max }}/{{ nums|min }}|{{ nums|sort(reverse=true)|first }}|{{ missing|default('dflt') }}"
        "|{{ messages|map(attribute='role')|join('+') }}|{{ messages|selectattr('role', 'equalto', 'user')|list|length }}"
        "|{{ messages|rejectattr('role', 'in', ['user'])|map(attribute='content')|first }}|{{ d|tojson }}"
        "|{{ '%s-%03d'|format('x', 7) }}|{{ 3.14159|round(2) }}|{{ '42'|int + 1 }}|{{ -5|abs }}|{{ 'ab'|center(6) }}"
        "|{{ text|wordcount }}|{{ d|items|list|length }}|{{ nums|batch(2)|list }}|{{ 'x\ny'|indent(2, true) }}",
        {"text": "  Hello, World  ", "words": ["b", "A", "a", "b"], "nums": [3, 1, 2],
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
         "d": {"a": 1, "b": [2, None, True, "é"]}}),
    "raise-exception-guard": (
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if loop.first and system %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content']|trim + ' [/INST]' }}"
        "{% else %}{{ ' ' + message['content']|trim + ' ' + eos_token }}{% endif %}{% endfor %}",
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi "},
                      {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
         "bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True}),
    "namespace-slicing": (
        "{% set ns = namespace(count=0, last_user=none, found=false) %}"
        "{% for m in messages[::-1] %}{% if m.role == 'user' and not ns.found %}"
        "{% set ns.last_user = m.content %}{% set ns.found = true %}{% endif %}{% set ns.count = ns.count + 1 %}"
        "{% endfor %}{{ ns.count }} {{ ns.last_user }} {{ messages[1:]|length }} {{ messages[-1].content[:3] }}"
        " {{ messages[0].content[::-1] }} {{ messages[:1][0].role }} {{ 'abcdef'[1:5:2] }} {{ [1, 2, 3][-2:] }}",
        {"messages": [{"role": "system", "content": "rules"}, {"role": "user", "content": "first question"},
                      {"role": "assistant", "content": "answer"}, {"role": "user", "content": "second question"}]}),
    "tests-and-operators": (
        "{% if tools is defined and tools is not none %}tools:{{ tools|length }}{% endif %}"
        "{% if x is undefined %}|undef{% endif %}{% if 4 is even and 3 is odd and 6 is divisibleby 3 %}|num{% endif %}"
        "{% if 'a' in 'cat' and 'k' not in {'j': 1} %}|in{% endif %}{% if messages is iterable "
        "and messages[0] is mapping and 'x' is string and 1 is number %}|types{% endif %}"
        "|{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 'a' ~ 1 ~ none }} {{ [1] + [2] }} {{ 'ab' * 2 }}"
        "|{{ 1 if true else 2 }} {{ (1 < 2) and (2 >= 2) or false }} {{ not none }}",
        {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}),
    "string-methods": (
        "{% for m in messages %}{{ m.content.strip().split(' ')|join('_') }} {{ m.content.startswith(' A') }} "
        "{{ m.content.upper().endswith('. ') }} {{ m.content.lstrip().rstrip('. ') }} "
        "{{ m.content.replace('a', 'A', 1) }} {{ m.content.title() }} {{ m.content.count('a') }} "
        "{{ m.content.find('b') }} {{ m.content.splitlines()|length }}{% endfor %}"
        "{{ {'k': 'v'}.get('k') }}{{ {'k': 'v'}.get('z', 'none') }}{% for k in {'a': 1}.keys() %}{{ k }}{% endfor %}"
        "{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}",
        {"messages": [{"role": "user", "content": " A banana bread. "}]}),
    "whitespace-control-raw": (
        "{#- comment -#}\n  {%- for m in messages -%}\n    {{- m.content -}}\n  {%+ if true %} kept{% endif %}\n"
        "{%- endfor %}\n{% raw %}{{ not rendered }}{% endraw %}\n{%- with a = 1, b = 2 %}{{ a + b }}{% endwith -%}\n"
        "{% filter upper %}shout {{ messages|length }}{% endfilter %}\n"
        "{% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}"
        "{% endfor %}\n{% set block %}captured {{ 1 + 1 }}{% endset %}{{ block|trim }}",
        {"messages": [{"role": "user", "content": "  a  "}, {"role": "assistant", "content": "b\n"}]}),
    "strftime-tojson-tools": (
        "{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %d %j') }}\n{% for t in tools %}{{ t|tojson(indent=2) }}\n"
        "{{ t.function.parameters|tojson(sort_keys=true) }}{% endfor %}{{ messages|tojson }}",
        {"messages": [{"role": "user", "content": "\"quoted\" \\ 😀 </script>"}],
         "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                      "parameters": {"type": "object", "required": ["city"],
                                                                     "properties": {"city": {"type": "string"}}}}}]}),
    "joiner-cycler-dict": (
        "{% set sep = joiner(', ') %}{% for m in messages %}{{ sep() }}{{ m.role }}{% endfor %}|"
        "{% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}|"
        "{% set d = dict(a=1, b='two') %}{{ d.a }}{{ d['b'] }}{{ d|length }}|{{ (messages|last)['role'] }}|"
        "{{ messages|reverse|map(attribute='content')|list }}|{{ messages|selectattr('content')|list|count }}",
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""},
                      {"role": "user", "content": "c"}]}),
}


def make_chat_template(w: Writer):
    fixtures = json.loads((ROOT / "Tests" / "TLLMChatTemplateTests" / "Fixtures" / "chat_templates.json").read_text())
    templates, conversations = fixtures["templates"], fixtures["conversations"]
    wanted = {  # one rendered case per real template, each a different conversation where possible
        "smollm2": "multi_turn", "llama-3.1": "tools_user", "llama-3.2": "system_user",
        "qwen-2.5": "tools_call_and_result", "tinyllama": "ten_messages", "mistral-v0.1": "whitespace_unicode",
        "mistral-v0.2": "system_multi_turn_ending_assistant", "mistral-v0.3": "tools_call_and_result",
        "gemma": "empty_content",
    }
    chosen = {}
    for case in fixtures["cases"]:
        name = case["template"]
        if "expected" not in case or name not in wanted:
            continue
        better = case["conversation"] == wanted[name] and case["add_generation_prompt"]
        if name not in chosen or (better and not chosen[name][1]):
            chosen[name] = (case, better)
    assert set(chosen) == set(templates), set(templates) - set(chosen)
    for name in sorted(chosen):
        case = chosen[name][0]
        conversation = conversations[case["conversation"]]
        context = {"messages": conversation["messages"], "tools": conversation.get("tools"), "documents": None,
                   "add_generation_prompt": case["add_generation_prompt"], **templates[name]["special_tokens"],
                   **case.get("extra", {})}
        source = templates[name]["source"]
        rendered = jinja_render(source, context)
        if "strftime_now" not in source:
            assert rendered == case["expected"], name
        w.add(f"{name}-{case['conversation'].replace('_', '-')}.bin",
              prefixed(source.encode(), dumps(context, separators=(",", ":"))))
    # A second context for a few real templates: other branches.
    for name, conv, generation in [("llama-3.1", "system_user", False), ("qwen-2.5", "single_user", True),
                                   ("smollm2", "whitespace_unicode", True)]:
        conversation = conversations[conv]
        context = {"messages": conversation["messages"], "tools": conversation.get("tools"),
                   "add_generation_prompt": generation, **templates[name]["special_tokens"]}
        jinja_render(templates[name]["source"], context)
        w.add(f"{name}-{conv.replace('_', '-')}.bin",
              prefixed(templates[name]["source"].encode(), dumps(context, separators=(",", ":"))))
    for name, (source, context) in SMALL_TEMPLATES.items():
        jinja_render(source, context)
        w.add(f"{name}.bin", prefixed(source.encode(), dumps(context, separators=(",", ":"))))
    # The fixture's snippets (each renders under its snippet context), a handful.
    snippet_context = fixtures["snippet_context"]
    picked = [s for s in fixtures["snippets"] if "expected" in s and len(s["source"]) > 40][:4]
    for i, snippet in enumerate(picked):
        assert jinja_render(snippet["source"], snippet_context) == snippet["expected"]
        w.add(f"snippet-{i}.bin", prefixed(snippet["source"].encode(), dumps(snippet_context, separators=(",", ":"))))
    # Edge contexts: empty object, non-object JSON (the target then renders with no variables).
    w.add("chatml-empty-context.bin", prefixed(CHATML_TEMPLATE.encode(), b'{"messages":[]}'))
    jinja_render(CHATML_TEMPLATE, {"messages": []})
    w.add("chatml-non-object-context.bin", prefixed(b"{{ 'no context' }}{{ messages is defined }}", b"[1,2,3]"))


# ==============================================================================================
# Verification with the real loader
# ==============================================================================================


class Verifier:
    def __init__(self, binary: Path | None, work: Path):
        self.binary = binary
        self.work = work
        self.count = 0
        self.failures: list[str] = []

    def run(self, what: str, model: Path, raw: bool = False):
        if self.binary is None:
            return
        args = [str(self.binary), "--model_path", str(model), "--prompt", "hi", "--max_tokens", "2", "--threads", "1"]
        if raw:
            args.append("--raw")
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, cwd=ROOT)
        self.count += 1
        if proc.returncode != 0:
            self.failures.append(f"{what}: exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-800:]}")
            print(f"  FAIL {what}: exit {proc.returncode}")
        else:
            print(f"  ok   {what}")

    def __call__(self, target: str, name: str, data: bytes, tokenizer: dict | None = None):
        if self.binary is None:
            return
        case = self.work / f"{target}-{name}"
        if target == "gguf":
            case.mkdir()
            path = case / "model.gguf"
            path.write_bytes(data)
            self.run(f"gguf/{name}", path)
        else:
            (n,) = struct.unpack_from("<I", data)
            case.mkdir()
            (case / "config.json").write_bytes(data[4:4 + n])
            (case / "model.safetensors").write_bytes(data[4 + n:])
            (case / "tokenizer.json").write_text(json.dumps(tokenizer))
            (case / "tokenizer_config.json").write_text(json.dumps(
                {"bos_token": None, "eos_token": "<|im_end|>", "chat_template": CHATML_TEMPLATE}))
            self.run(f"safetensors/{name}", case)

    def tokenizer_in_loader(self, name: str, tokenizer: dict, vocab_size: int):
        """The tokenizer.json in a Hugging Face directory with tiny weights of its vocabulary size."""
        if self.binary is None:
            return
        case = self.work / f"tokenizer-{name}"
        case.mkdir()
        s = ModelShape(vocab=vocab_size, layers=1, heads=2, kv_heads=1)
        weights = {hf_name(k): v for k, v in random_weights(s, 99).items()}
        cfg = {"model_type": "llama", "hidden_size": s.hidden, "intermediate_size": s.ffn, "num_hidden_layers": 1,
               "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": vocab_size,
               "tie_word_embeddings": True}
        (case / "config.json").write_text(json.dumps(cfg))
        (case / "model.safetensors").write_bytes(safetensors_bytes(weights, {"*": "F16"}))
        (case / "tokenizer.json").write_text(json.dumps(tokenizer))
        self.run(f"tokenizer/{name} (tokenizer.json in tllm-generate)", case, raw=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-verify", action="store_true", help="skip the tllm-generate checks")
    parser.add_argument("--prune", action="store_true", help="delete files this script does not make")
    parser.add_argument("--only", nargs="*", choices=TARGETS, help="targets to make (default: all)")
    parser.add_argument("--generate", type=Path, default=ROOT / ".build" / "debug" / "tllm-generate",
                        help="the tllm-generate binary used for verification")
    args = parser.parse_args()
    targets = args.only or TARGETS
    binary = None
    if not args.no_verify:
        if not args.generate.exists():
            print(f"{args.generate} is missing: build it, pass --generate, or use --no-verify", file=sys.stderr)
            return 2
        binary = args.generate
    total_files = total_bytes = 0
    with tempfile.TemporaryDirectory(prefix="tllm-seeds-") as tmp_name:
        tmp = Path(tmp_name)
        verify = Verifier(binary, tmp)
        for target in targets:
            print(f"{target}:")
            w = Writer(target)
            if target == "openai-request":
                make_openai(w)
            elif target == "grpc-message":
                make_grpc(w, load_schemas(tmp))
            elif target == "gguf":
                make_gguf(w, verify)
            elif target == "safetensors":
                make_safetensors(w, verify)
            elif target == "tokenizer":
                hf_dirs: list = []
                make_tokenizer(w, hf_dirs)
                for name, tokenizer, size in hf_dirs:
                    verify.tokenizer_in_loader(name, tokenizer, size)
            elif target == "chat-template":
                make_chat_template(w)
            files, size = w.write(args.prune)
            total_files += files
            total_bytes += size
            largest = max(w.seeds.items(), key=lambda kv: len(kv[1]))
            print(f"  {files} seeds, {size} bytes (largest {largest[0]}, {len(largest[1])} bytes)")
        print(f"total: {total_files} seeds, {total_bytes} bytes; {verify.count} loads checked with tllm-generate")
        if verify.failures:
            print("verification failures:\n" + "\n".join(verify.failures), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
