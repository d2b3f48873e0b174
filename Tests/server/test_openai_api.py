"""The OpenAI API of tllm.server through the official `openai` client: chat and completions,
streaming, usage, models, version, health, sampling fields, seeds, stop strings, max_tokens.

Contract: shared/spec/tllm-protocol.md section 4, docs/server.md. Fixtures: conftest.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tllm_server_helpers import (
    LONG_PROMPT,
    PROMPTS,
    STORY_PROMPT,
    chat,
    chat_body,
    completion,
    sse_post,
    stream_chat,
    stream_completion,
)

MAX_TOKENS = 16


# --------------------------------------------------------------------------
# Routes without generation


def test_health(http):
    r = http.get("/health")
    assert r.status_code == 200, r.text


def test_version(http):
    r = http.get("/version")
    assert r.status_code == 200, r.text
    assert r.json() == {"version": 0.1}


def test_models_list(http, client, model_path):
    r = http.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list", body
    assert isinstance(body["data"], list) and len(body["data"]) == 1, body
    m = body["data"][0]
    assert m["id"] == Path(model_path).name, m
    assert m["object"] == "model", m
    assert isinstance(m["created"], int) and m["created"] > 0, m
    assert isinstance(m["owned_by"], str) and m["owned_by"], m
    assert isinstance(m["root"], str) and m["root"], m
    assert isinstance(m["permission"], list), m
    assert isinstance(m["max_model_len"], int) and m["max_model_len"] > 0, m
    if Path(model_path).name.startswith("SmolLM2-135M"):
        assert m["max_model_len"] == 8192, m
    # The same through the openai client.
    ids = [x.id for x in client.models.list()]
    assert ids == [m["id"]]


# --------------------------------------------------------------------------
# Chat


def test_chat_non_stream(client, model_id):
    r = chat(client, model_id, PROMPTS[0], max_tokens=MAX_TOKENS)
    assert r.choices[0].message.content.strip(), r
    assert 0 < r.usage.completion_tokens <= MAX_TOKENS


def test_chat_stream_equals_non_stream(client, model_id):
    for prompt in (PROMPTS[0], STORY_PROMPT):
        full = chat(client, model_id, prompt, max_tokens=MAX_TOKENS)
        st = stream_chat(client, model_id, prompt, max_tokens=MAX_TOKENS)
        assert st.text == full.choices[0].message.content, prompt
        assert st.finish_reason == full.choices[0].finish_reason, prompt
        assert st.usage is None, "usage chunk without stream_options.include_usage"


def test_chat_stream_include_usage(client, model_id):
    full = chat(client, model_id, STORY_PROMPT, max_tokens=MAX_TOKENS)
    st = stream_chat(client, model_id, STORY_PROMPT, max_tokens=MAX_TOKENS, stream_options={"include_usage": True})
    assert st.text == full.choices[0].message.content
    assert st.usage is not None, "no usage chunk with stream_options.include_usage"
    assert st.usage.prompt_tokens == full.usage.prompt_tokens
    assert st.usage.completion_tokens == full.usage.completion_tokens
    assert st.usage.total_tokens == full.usage.total_tokens


def test_chat_stream_raw_sse(http, model_id):
    """The wire format the openai client hides: content type, `data:` lines, `[DONE]` last."""
    body = chat_body(model_id, PROMPTS[0], max_tokens=8, stream=True, stream_options={"include_usage": True})
    r, data = sse_post(http, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    assert data and data[-1] == "[DONE]", data
    assert data.count("[DONE]") == 1, data
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
    finals = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(finals) == 1, chunks
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 8, usage


def test_chat_content_parts_equal_string(client, model_id):
    """`content` as a list of {"type": "text"} parts is the same message as the joined string."""
    a = chat(client, model_id, "What is the capital of France?", max_tokens=8)
    b = chat(
        client,
        model_id,
        [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}],
        max_tokens=8,
    )
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.usage.prompt_tokens == a.usage.prompt_tokens


def test_chat_system_and_multi_turn(client, model_id):
    msgs = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ]
    r = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    one = chat(client, model_id, "Another one?", max_tokens=8)
    assert r.usage.prompt_tokens > one.usage.prompt_tokens, "earlier turns are not in the prompt"


def test_greedy_is_deterministic(client, model_id):
    a = chat(client, model_id, STORY_PROMPT, max_tokens=16)
    b = chat(client, model_id, STORY_PROMPT, max_tokens=16)
    assert a.choices[0].message.content == b.choices[0].message.content


# --------------------------------------------------------------------------
# Completions (raw prompt, no chat template)

RAW_PROMPT = "The capital of France is"


def test_completions_non_stream_and_stream(client, model_id):
    r = completion(client, model_id, RAW_PROMPT, max_tokens=12)
    text = r.choices[0].text
    assert text, r
    st = stream_completion(client, model_id, RAW_PROMPT, max_tokens=12, stream_options={"include_usage": True})
    assert st.text == text
    assert st.finish_reason == r.choices[0].finish_reason
    assert st.usage is not None and st.usage.completion_tokens == r.usage.completion_tokens
    # A list of one string is the same prompt.
    one = completion(client, model_id, [RAW_PROMPT], max_tokens=12)
    assert one.choices[0].text == text


def test_completions_do_not_apply_chat_template(client, model_id, generate):
    """/v1/completions feeds the prompt as is: same as `tllm-generate --raw`, and fewer prompt
    tokens than the same text as a chat message."""
    ref = generate(RAW_PROMPT, 12, raw=True)
    r = completion(client, model_id, RAW_PROMPT, max_tokens=12)
    assert r.choices[0].text == ref.text
    if ref.prompt_tokens is not None:
        assert r.usage.prompt_tokens == ref.prompt_tokens
    c = chat(client, model_id, RAW_PROMPT, max_tokens=1)
    assert r.usage.prompt_tokens < c.usage.prompt_tokens


# --------------------------------------------------------------------------
# max_tokens


def test_max_tokens_length(client, model_id):
    r = chat(client, model_id, LONG_PROMPT, max_tokens=5)
    if r.choices[0].finish_reason == "stop":
        pytest.skip(f"the model stopped (EOS) within 5 tokens: {r.choices[0].message.content!r}")
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5, r.usage
    st = stream_chat(client, model_id, LONG_PROMPT, max_tokens=5, stream_options={"include_usage": True})
    assert st.finish_reason == "length"
    assert st.usage.completion_tokens == 5
    assert st.text == r.choices[0].message.content


def test_max_tokens_is_a_prefix(client, model_id):
    """Greedy with a smaller max_tokens is a prefix of the longer run."""
    short = chat(client, model_id, STORY_PROMPT, max_tokens=6).choices[0].message.content
    long = chat(client, model_id, STORY_PROMPT, max_tokens=MAX_TOKENS).choices[0].message.content
    assert long.startswith(short), (short, long)


# --------------------------------------------------------------------------
# Sampling


def test_seed_reproducible(client, model_id):
    kw = dict(max_tokens=8, temperature=0.9)
    a = chat(client, model_id, STORY_PROMPT, seed=42, **kw).choices[0].message.content
    b = chat(client, model_id, STORY_PROMPT, seed=42, **kw).choices[0].message.content
    assert a == b, "same seed, different text"
    others = [chat(client, model_id, STORY_PROMPT, seed=s, **kw).choices[0].message.content for s in (1, 7)]
    assert any(o != a for o in others), f"seeds 42, 1 and 7 all gave {a!r}: is temperature ignored?"


def test_seed_reproducible_stream(client, model_id):
    kw = dict(max_tokens=12, temperature=0.9, seed=7)
    a = chat(client, model_id, STORY_PROMPT, **kw).choices[0].message.content
    b = stream_chat(client, model_id, STORY_PROMPT, **kw).text
    assert a == b


def test_all_sampling_fields_accepted(client, model_id):
    r = chat(
        client,
        model_id,
        STORY_PROMPT,
        max_tokens=8,
        temperature=0.7,
        top_p=0.9,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        stop=["\n\n\n"],
        extra_body={"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "stop_token_ids": []},
    )
    assert r.choices[0].finish_reason in ("stop", "length")


def test_temperature_zero_ignores_seed(client, model_id):
    a = chat(client, model_id, STORY_PROMPT, max_tokens=10, seed=1).choices[0].message.content
    b = chat(client, model_id, STORY_PROMPT, max_tokens=10, seed=2).choices[0].message.content
    assert a == b


# --------------------------------------------------------------------------
# Stop strings


def _pick_stop(text: str, words: int) -> str:
    """A run of `words` words from the middle of `text` (letters only, not at the start)."""
    toks = list(re.finditer(r"[A-Za-z]{3,}", text))
    assert len(toks) >= 4, f"greedy output too short to pick a stop string: {text!r}"
    mid = len(toks) // 2
    for i in list(range(mid, len(toks) - words + 1)) + list(range(1, mid)):
        run = toks[i : i + words]
        if len(run) < words:
            continue
        s = text[run[0].start() : run[-1].end()]
        if text.index(s) > 0:
            return s
    raise AssertionError(f"no stop string candidate in {text!r}")


STOP_MAX_TOKENS = 32


@pytest.fixture(scope="module")
def stop_base(client, model_id):
    """The greedy output the stop strings are picked from."""
    return chat(client, model_id, STORY_PROMPT, max_tokens=STOP_MAX_TOKENS)


@pytest.mark.parametrize("words", [1, 2], ids=["one-word", "two-words"])
def test_stop_string(client, model_id, stop_base, words):
    base = stop_base
    text = base.choices[0].message.content
    stop = _pick_stop(text, words)
    expected = text[: text.index(stop)]

    r = chat(client, model_id, STORY_PROMPT, max_tokens=STOP_MAX_TOKENS, stop=["@@never@@", stop])
    assert r.choices[0].message.content == expected, f"stop={stop!r}"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens <= base.usage.completion_tokens

    # A single string works like a list of one.
    r1 = chat(client, model_id, STORY_PROMPT, max_tokens=STOP_MAX_TOKENS, stop=stop)
    assert r1.choices[0].message.content == expected

    st = stream_chat(client, model_id, STORY_PROMPT, max_tokens=STOP_MAX_TOKENS, stop=[stop])
    assert st.finish_reason == "stop"
    assert st.text == expected, f"stop={stop!r} deltas={st.deltas!r}"
    # No delta carries text past the stop point (a stop string split across tokens is never
    # emitted in part).
    acc = ""
    for d in st.deltas:
        acc += d
        assert expected.startswith(acc), f"delta {d!r} goes past the stop point; stop={stop!r}"


def test_stop_string_not_in_output(client, model_id):
    base = chat(client, model_id, PROMPTS[0], max_tokens=16)
    r = chat(client, model_id, PROMPTS[0], max_tokens=16, stop=["@@@never@@@"])
    assert r.choices[0].message.content == base.choices[0].message.content
    assert r.choices[0].finish_reason == base.choices[0].finish_reason


# --------------------------------------------------------------------------
# Sampling fields that must change (or must not change) greedy output


@pytest.fixture(scope="module")
def greedy(client, model_id):
    """greedy(prompt, max_tokens) -> text, cached."""
    cache: dict = {}

    def run(prompt: str, max_tokens: int) -> str:
        if (prompt, max_tokens) not in cache:
            cache[(prompt, max_tokens)] = (
                chat(client, model_id, prompt, max_tokens=max_tokens).choices[0].message.content
            )
        return cache[(prompt, max_tokens)]

    return run


@pytest.mark.parametrize(
    "extra", [{"top_k": 1}, {"top_p": 0.01}, {"min_p": 1.0}], ids=["top_k-1", "top_p-0.01", "min_p-1"]
)
def test_sampling_cut_to_one_token_is_greedy(client, model_id, greedy, extra):
    """temperature 1 but only the most likely token survives the filter: the greedy text."""
    r = chat(client, model_id, STORY_PROMPT, max_tokens=12, temperature=1.0, seed=11, extra_body=extra)
    assert r.choices[0].message.content == greedy(STORY_PROMPT, 12), extra


@pytest.mark.parametrize(
    "field,value",
    [("presence_penalty", 2.0), ("frequency_penalty", 2.0), ("repetition_penalty", 2.0)],
)
def test_penalty_changes_greedy_output(client, model_id, greedy, field, value):
    """LONG_PROMPT's greedy answer repeats tokens ("1. 1\\n2. 2\\n..."): a strong penalty changes it."""
    base = greedy(LONG_PROMPT, 16)
    r = chat(client, model_id, LONG_PROMPT, max_tokens=16, extra_body={field: value})
    assert r.choices[0].message.content != base, f"{field}={value} did not change {base!r}"


@pytest.fixture(scope="module")
def vocab(model_path) -> dict[str, int]:
    """token string -> id, from the GGUF file (byte-level BPE spells a leading space 'Ġ')."""
    if Path(model_path).suffix != ".gguf":
        pytest.skip("the vocabulary is read from a .gguf model")
    gguf = pytest.importorskip("gguf")
    f = gguf.GGUFReader(str(model_path)).fields["tokenizer.ggml.tokens"]
    return {bytes(f.parts[i]).decode("utf-8", "replace"): n for n, i in enumerate(f.data)}


def test_stop_token_ids(client, model_id, greedy, vocab):
    base = greedy(PROMPTS[0], 16)  # "The capital of France is Paris." for SmolLM2
    words = [m.group(0) for m in re.finditer(r"(?<= )[A-Za-z]+", base)]
    candidates = [w for w in words if "Ġ" + w in vocab][:3]
    if not candidates:
        pytest.skip(f"no word of {base!r} is a single 'Ġword' token of this vocabulary")
    tried = []
    for w in candidates:
        r = chat(client, model_id, PROMPTS[0], max_tokens=16, extra_body={"stop_token_ids": [vocab["Ġ" + w]]})
        text = r.choices[0].message.content
        tried.append((w, text))
        if text != base:
            # The stop token ends the completion and is not part of its text.
            assert text == base[: base.index(" " + w)], tried
            assert r.choices[0].finish_reason == "stop"
            return
    pytest.fail(f"stop_token_ids had no effect: {tried} (base {base!r})")
