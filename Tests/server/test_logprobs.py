"""Log-probabilities (issue 22, item 3) through the official `openai` client on the default model.

What is checked:
- the shapes: chat's `logprobs.content` entries (`token`, `logprob`, `bytes`, `top_logprobs`) and text
  completions' columns (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), streamed and not;
- the numbers: each generated token's log-probability, and the likeliest token at each position,
  equal a teacher-forced forward pass of our own (`tllm-generate --score_ids`) over prompt plus
  completion, within 1e-3, greedy and when sampling with penalties (log-probabilities are the
  model's, before penalties, temperature and filters);
- reporting them changes nothing in the text.
"""

from __future__ import annotations

import json
import math
import subprocess

import gguf
import pytest
from tokenizers import decoders

from tllm_server_helpers import stream_chat, stream_completion, user

PROMPT_WORDS = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis", "Ġa", "Ġcity", "Ġthat"]
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def vocabulary(model_path) -> list[str]:
    """The default model's tokens as GGUF stores them (byte-level strings)."""
    field = gguf.GGUFReader(str(model_path)).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


@pytest.fixture(scope="module")
def text_to_id(vocabulary) -> dict[str, int]:
    """Token text (as the server writes it) to id, for the texts only one token decodes to."""
    decoder = decoders.ByteLevel()
    seen: dict[str, list[int]] = {}
    for i, token in enumerate(vocabulary):
        seen.setdefault(decoder.decode([token]), []).append(i)
    return {text: ids[0] for text, ids in seen.items() if len(ids) == 1}


def score(generate_bin, model_path, ids: list[int]) -> dict:
    """Teacher-forced scores of `ids`: the first half in one prompt pass, the rest a step at a time."""
    args = [str(generate_bin), "--model_path", str(model_path), "--score_ids", ",".join(map(str, ids)),
            "--threads", "2"]  # fmt: skip
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    assert p.returncode == 0, f"tllm-generate --score_ids exited {p.returncode}:\n{p.stderr.decode()}"
    return json.loads(p.stdout)


def completion_ids(choice, text_to_id) -> list[int]:
    tokens = choice.logprobs.tokens
    missing = [t for t in tokens if t not in text_to_id]
    assert not missing, f"tokens whose text several tokens share (pick another prompt): {missing}"
    return [text_to_id[t] for t in tokens]


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0}, {"temperature": 0.9, "seed": 7, "top_p": 0.9, "frequency_penalty": 1.5,
                          "extra_body": {"ignore_eos": True, "repetition_penalty": 1.3}}],
    ids=["greedy", "sampled-with-penalties"],
)
def test_completion_logprobs_equal_a_teacher_forced_pass(
    client, model_id, vocabulary, text_to_id, generate_bin, model_path, sampling
):
    prompt = [vocabulary.index(w) for w in PROMPT_WORDS]
    # As many tokens as the prompt has: the scorer's prompt pass then covers exactly the prompt,
    # and the completion is scored a step at a time, as the server computed it.
    r = client.completions.create(
        model=model_id, prompt=prompt, max_tokens=len(prompt), logprobs=5,
        **{"extra_body": {"ignore_eos": True}, **sampling},
    )
    choice = r.choices[0]
    lp = choice.logprobs
    assert r.usage.completion_tokens == len(prompt) == len(lp.tokens) == len(lp.token_logprobs)
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    ids = completion_ids(choice, text_to_id)
    ref = score(generate_bin, model_path, prompt + ids)
    positions = range(len(prompt) - 1, len(prompt) - 1 + len(ids))
    errors = [abs(lp.token_logprobs[k] - ref["target_logprobs"][p]) for k, p in enumerate(positions)]
    assert max(errors) < TOLERANCE, f"|Δ logprob| per token: {errors}"
    for k, p in enumerate(positions):
        top = lp.top_logprobs[k]
        assert 1 <= len(top) <= 5, top
        best_text, best = max(top.items(), key=lambda kv: kv[1])
        assert abs(best - ref["top_logprobs"][p]) < TOLERANCE, (k, top, ref["top_logprobs"][p])
        assert text_to_id.get(best_text, ref["top_ids"][p]) == ref["top_ids"][p], (k, best_text, ref["top_ids"][p])
        assert all(v <= 0 for v in top.values())
        if sampling["temperature"] == 0:
            assert lp.tokens[k] == best_text, "greedy takes the likeliest token"


def test_chat_logprobs_shape_and_text(client, model_id):
    kw = {"model": model_id, "messages": user("Name three colours."), "max_tokens": 16, "temperature": 0}
    plain = client.chat.completions.create(**kw)
    r = client.chat.completions.create(logprobs=True, top_logprobs=3, **kw)
    message = r.choices[0].message.content
    assert message == plain.choices[0].message.content, "reporting log-probabilities changes nothing"
    assert plain.choices[0].logprobs is None
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens - (1 if r.choices[0].finish_reason == "stop" else 0)
    assert bytes(b for e in content for b in e.bytes).decode("utf-8") == message
    for e in content:
        assert e.token == bytes(e.bytes).decode("utf-8", "replace")
        assert len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == e.logprob
        assert all(a.logprob >= b.logprob for a, b in zip(e.top_logprobs, e.top_logprobs[1:]))
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-4
    # logprobs without top_logprobs: the chosen token's only.
    r0 = client.chat.completions.create(logprobs=True, **kw)
    assert [e.logprob for e in r0.choices[0].logprobs.content] == [e.logprob for e in content]
    assert all(e.top_logprobs == [] for e in r0.choices[0].logprobs.content)


def test_streamed_logprobs_equal_the_whole_answer(client, model_id):
    kw = {"model": model_id, "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(messages=user("Say hello."), logprobs=True, top_logprobs=2, **kw)
    streamed = stream_chat(client, model_id, "Say hello.", logprobs=True, top_logprobs=2, max_tokens=12)
    entries = [e for c in streamed.chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in entries] == [(e.token, e.logprob) for e in whole.choices[0].logprobs.content]
    for c in streamed.chunks:
        if c.choices and c.choices[0].logprobs:
            # Entries ride with the text they make.
            text = bytes(b for e in c.choices[0].logprobs.content for b in e.bytes).decode("utf-8", "replace")
            assert c.choices[0].delta.content == text or not c.choices[0].delta.content.strip("\ufffd"), c

    text = client.completions.create(prompt="One, two, three,", logprobs=2, **kw)
    s = stream_completion(client, model_id, "One, two, three,", logprobs=2, max_tokens=12)
    tokens = [t for c in s.chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in s.chunks if c.choices and c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert tokens == text.choices[0].logprobs.tokens
    assert offsets == text.choices[0].logprobs.text_offset
    assert s.text == text.choices[0].text


def test_echo_offsets_start_after_the_prompt(client, model_id):
    r = client.completions.create(model=model_id, prompt="Once upon", max_tokens=4, temperature=0, logprobs=0, echo=True)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith("Once upon")
    assert lp.text_offset[0] == len("Once upon")
    assert all(top == {} for top in lp.top_logprobs), "logprobs: 0 reports the chosen token only"
