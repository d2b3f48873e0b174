"""Reasoning (`reasoning_content`), `chat_template_kwargs` and `reasoning_format` of
/v1/chat/completions against the real server (docs/server.md, "Reasoning and template variables").

The default model (SmolLM2) has a plain chat template: its responses must carry no
`reasoning_content` at all, and `chat_template_kwargs` is accepted (its template reads none of
them) or refused with a 400 naming the field. A second server serves the same model with a
thinking template (`--chat_template`) whose generation prompt opens `<think>` unless
`enable_thinking` is false, and which renders an assistant turn's `reasoning_content`: what it
generates must come back as `reasoning_content`, in full responses and in stream deltas, the
template variables must change the prompt, and `reasoning_format: "none"` must give the raw text.

Run:  python -m pytest -q Tests/server/test_reasoning.py   (fixtures from conftest.py)
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tllm_server_helpers import (
    STARTUP_TIMEOUT,
    THINKING_TEMPLATE,
    THREADS,
    TllmServer,
    chat_body,
    check_error_body,
    free_port,
    sse_post,
    user,
)

CHAT = "/v1/chat/completions"
PROMPT = "What is the capital of France?"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def _thinking(request, server_bin, model_path, log_dir, tmp_path_factory):
    template = tmp_path_factory.mktemp("templates") / "thinking.jinja"
    template.write_text(THINKING_TEMPLATE)  # see tllm_server_helpers.py
    server = TllmServer(server_bin, model_path, log_dir, "thinking", chat_template=template)
    yield server
    rc = server.terminate()
    assert rc == 0, f"the thinking-template server: exit code {rc} after SIGTERM; logs:\n{server.log_tail()}"


@pytest.fixture
def thinking(_thinking, request):
    """The server with THINKING_TEMPLATE (its logs go into failure reports)."""
    request.node._tllm_servers = [*getattr(request.node, "_tllm_servers", []), _thinking]
    with _thinking.http() as http:
        yield http


def post(http, body: dict) -> dict:
    r = http.post(CHAT, json=body)
    assert r.status_code == 200, f"{r.status_code} {r.text[:2000]}"
    return r.json()


def stream(http, body: dict) -> list[dict]:
    """The chunks of a streamed chat completion (raw JSON, so that absent keys stay absent)."""
    r, data = sse_post(http, CHAT, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200, f"{r.status_code} {r.text[:2000]}"
    assert data and data[-1] == "[DONE]", data
    return [json.loads(d) for d in data[:-1]]


def deltas(chunks: list[dict]) -> list[dict]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def joined(chunks: list[dict], key: str) -> str:
    return "".join(d.get(key) or "" for d in deltas(chunks))


def counts(usage: dict) -> tuple[int, int, int]:
    """A usage object's token counts (not `cached_tokens`, which the prefix cache changes)."""
    return usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]


def expected_split(raw: str) -> tuple[str, str]:
    """The split of a completion that starts inside a thinking block (the prompt opened it):
    reasoning up to `</think>` without the newlines at its ends, then the answer without the
    newlines that follow the tag."""
    reasoning, closed, content = raw.partition("</think>")
    return reasoning.strip("\r\n"), (content.lstrip("\r\n") if closed else "")


# --------------------------------------------------------------------------
# The default model: a plain template


def test_no_reasoning_key_for_a_plain_template(http, model_id):
    body = chat_body(model_id, PROMPT, max_tokens=MAX_TOKENS)
    for extra in ({}, {"reasoning_format": "auto"}, {"reasoning_format": "none"}, {"reasoning_format": "deepseek"}):
        r = post(http, {**body, **extra})
        message = r["choices"][0]["message"]
        assert set(message) == {"role", "content"}, f"{extra}: {message}"
        chunks = stream(http, {**body, **extra})
        for delta in deltas(chunks):
            assert "reasoning_content" not in delta, f"{extra}: {delta}"
            assert set(delta) <= {"role", "content"}, f"{extra}: {delta}"
        assert joined(chunks, "content") == message["content"], extra
        assert counts(chunks[-1]["usage"]) == counts(r["usage"]), extra


def test_chat_template_kwargs_accepted(http, model_id):
    """SmolLM2's template reads no extra variable: the same prompt and the same greedy text."""
    body = chat_body(model_id, PROMPT, max_tokens=MAX_TOKENS)
    plain = post(http, body)
    kwargs = {"enable_thinking": False, "custom": {"z": [1, 2.5, None, {"b": "x"}], "a": True}, "note": "é 🙂"}
    with_kwargs = post(http, {**body, "chat_template_kwargs": kwargs})
    assert with_kwargs["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    assert with_kwargs["choices"][0]["message"] == plain["choices"][0]["message"]
    assert post(http, {**body, "chat_template_kwargs": {}})["choices"][0]["message"] == plain["choices"][0]["message"]
    assert post(http, {**body, "chat_template_kwargs": None})["choices"][0]["message"] == plain["choices"][0]["message"]


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_KWARGS = [
    ("a string", "enable_thinking", "chat_template_kwargs"),
    ("a list", [{"enable_thinking": False}], "chat_template_kwargs"),
    ("a number", 5, "chat_template_kwargs"),
    ("a boolean", True, "chat_template_kwargs"),
    ("too deep", {"a": _nested(40)}, "chat_template_kwargs.a"),
    ("too many", {f"k{i}": i for i in range(65)}, "chat_template_kwargs"),
] + [
    (f"reserved {name}", {"enable_thinking": True, name: "x"}, f"chat_template_kwargs.{name}")
    for name in ("messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token",
                 "raise_exception", "strftime_now", "namespace")
]  # fmt: skip


@pytest.mark.parametrize("label,kwargs,param", BAD_KWARGS, ids=[b[0] for b in BAD_KWARGS])
def test_bad_chat_template_kwargs_refused(http, client, model_id, label, kwargs, param):
    body = chat_body(model_id, PROMPT, max_tokens=2, chat_template_kwargs=kwargs)
    error = check_error_body(http.post(CHAT, json=body), 400)
    assert error["param"] == param, error
    assert "chat_template_kwargs" in error["message"], error
    if label.startswith("reserved"):
        assert f"'{param.split('.')[1]}'" in error["message"], error
    # The same request streamed is refused before the stream starts.
    r, _ = sse_post(http, CHAT, {**body, "stream": True})
    assert check_error_body(r, 400)["param"] == param
    assert post(http, chat_body(model_id, "Say hi.", max_tokens=2))["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"reasoning_format": "hidden"}, "reasoning_format"),
        ({"reasoning_format": 1}, "reasoning_format"),
        ({"messages": user("hi") + [{"role": "assistant", "content": "x", "reasoning_content": ["no"]}]},
         "messages[1].reasoning_content"),
    ],
)  # fmt: skip
def test_bad_reasoning_fields_refused(http, model_id, extra, param):
    error = check_error_body(http.post(CHAT, json={**chat_body(model_id, PROMPT, max_tokens=2), **extra}), 400)
    assert error["param"] == param, error


def test_history_reasoning_content_accepted(http, model_id):
    """An assistant turn as a thinking model returned it: accepted (null too); SmolLM2's template ignores it."""
    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]
    plain = post(http, {"messages": turns, "max_tokens": 4, "temperature": 0})
    for reasoning in ("Adding two and two.", None, ""):
        turns[1]["reasoning_content"] = reasoning
        r = post(http, {"messages": turns, "max_tokens": 4, "temperature": 0})
        assert r["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"], reasoning
        assert r["choices"][0]["message"] == plain["choices"][0]["message"], reasoning


# --------------------------------------------------------------------------
# A thinking template (--chat_template)


def test_thinking_block_opened_by_the_prompt(thinking):
    """The prompt ends in `<think>`: everything generated up to `</think>` is reasoning; cut by
    max_tokens before it, the answer is empty. Usage is that of the raw completion."""
    body = {"messages": user(PROMPT), "max_tokens": MAX_TOKENS, "temperature": 0}
    raw = post(thinking, {**body, "reasoning_format": "none"})
    raw_message = raw["choices"][0]["message"]
    assert set(raw_message) == {"role", "content"}, raw_message
    reasoning, content = expected_split(raw_message["content"])
    assert reasoning, f"nothing generated: {raw}"
    for fmt in (None, "auto", "deepseek"):
        r = post(thinking, body if fmt is None else {**body, "reasoning_format": fmt})
        message = r["choices"][0]["message"]
        assert message["reasoning_content"] == reasoning, (fmt, message, raw_message)
        assert message["content"] == content, (fmt, message, raw_message)
        assert counts(r["usage"]) == counts(raw["usage"]), fmt
        assert r["choices"][0]["finish_reason"] == raw["choices"][0]["finish_reason"]


def test_thinking_stream_deltas(thinking):
    """Stream deltas carry `reasoning_content` (and `content` once there is an answer); joined they are the
    full response's fields, and the usage is the same."""
    body = {"messages": user(PROMPT), "max_tokens": MAX_TOKENS, "temperature": 0}
    full = post(thinking, body)
    chunks = stream(thinking, body)
    ds = deltas(chunks)
    assert ds[0].get("role") == "assistant", ds[0]
    for d in ds[1:]:
        assert set(d) <= {"reasoning_content", "content"}, d
        assert all(isinstance(v, str) and v for v in d.values()), f"an empty or null part: {d}"
    assert joined(chunks, "reasoning_content") == full["choices"][0]["message"]["reasoning_content"]
    assert joined(chunks, "content") == full["choices"][0]["message"]["content"]
    assert sum(1 for d in ds if d.get("reasoning_content")) > 1, "the reasoning was not streamed"
    assert counts(chunks[-1]["usage"]) == counts(full["usage"])

    raw = stream(thinking, {**body, "reasoning_format": "none"})
    assert all("reasoning_content" not in d for d in deltas(raw))
    assert expected_split(joined(raw, "content")) == (
        joined(chunks, "reasoning_content"),
        joined(chunks, "content"),
    )


def test_enable_thinking_false_reaches_the_template(thinking):
    """`chat_template_kwargs: {"enable_thinking": false}` makes the template close the block in the prompt:
    a different prompt, and what follows is all answer (`reasoning_content` null)."""
    body = {"messages": user(PROMPT), "max_tokens": MAX_TOKENS, "temperature": 0}
    thinking_on = post(thinking, body)
    off = {**body, "chat_template_kwargs": {"enable_thinking": False}}
    thinking_off = post(thinking, off)
    assert thinking_off["usage"]["prompt_tokens"] > thinking_on["usage"]["prompt_tokens"]
    raw = post(thinking, {**off, "reasoning_format": "none"})["choices"][0]["message"]["content"]
    message = thinking_off["choices"][0]["message"]
    assert message["reasoning_content"] is None, message
    assert message["content"] == raw and raw, message
    chunks = stream(thinking, off)
    assert joined(chunks, "content") == raw
    assert all("reasoning_content" not in d for d in deltas(chunks))
    explicit = post(thinking, {**body, "chat_template_kwargs": {"enable_thinking": True}})
    assert explicit["usage"]["prompt_tokens"] == thinking_on["usage"]["prompt_tokens"]
    assert explicit["choices"][0]["message"] == thinking_on["choices"][0]["message"]


def test_template_error_from_kwargs_names_them(thinking):
    """Variables the template refuses (it raises): a 400 naming `chat_template_kwargs`, with the template's message."""
    body = {"messages": user(PROMPT), "max_tokens": 2, "chat_template_kwargs": {"enable_thinking": "yes"}}
    error = check_error_body(thinking.post(CHAT, json=body), 400)
    assert error["param"] == "chat_template_kwargs", error
    assert "enable_thinking must be a boolean" in error["message"], error
    assert post(thinking, {**body, "chat_template_kwargs": {"enable_thinking": True}})["choices"][0]["message"]


def test_stop_strings_cut_the_reasoning(thinking):
    """A stop string applies to the raw text, reasoning included: the reasoning ends before it."""
    body = {"messages": user(PROMPT), "max_tokens": MAX_TOKENS, "temperature": 0}
    raw = post(thinking, {**body, "reasoning_format": "none"})["choices"][0]["message"]["content"]
    words = raw.split()
    assert len(words) >= 3, raw
    stop = words[2]
    cut = raw[: raw.index(stop)]
    assert expected_split(cut)[0], (raw, stop)
    r = post(thinking, {**body, "stop": [stop]})
    assert r["choices"][0]["finish_reason"] == "stop", r
    assert r["choices"][0]["message"]["reasoning_content"] == expected_split(cut)[0], (r, raw, stop)
    assert r["choices"][0]["message"]["content"] == ""
    chunks = stream(thinking, {**body, "stop": [stop]})
    assert joined(chunks, "reasoning_content") == expected_split(cut)[0]
    assert stop not in joined(chunks, "reasoning_content")


def test_history_reasoning_content_reaches_the_template(thinking):
    """An earlier turn's `reasoning_content` is a message field the template renders: the prompt grows."""
    turns = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]
    plain = post(thinking, {"messages": turns, "max_tokens": 2, "temperature": 0})
    turns[1]["reasoning_content"] = "Two and two make four."
    with_reasoning = post(thinking, {"messages": turns, "max_tokens": 2, "temperature": 0})
    assert with_reasoning["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 5
    turns[1]["reasoning_content"] = None
    null = post(thinking, {"messages": turns, "max_tokens": 2, "temperature": 0})
    assert counts(null["usage"]) == counts(plain["usage"])


@pytest.mark.parametrize("source", [None, "{% for m in messages %}{{ m.content }}", "{{ x | nosuchfilter }}"])
def test_broken_chat_template_file_stops_the_start(server_bin, model_path, tmp_path, source):
    """A missing or unparsable --chat_template file: the server does not start, and says which file."""
    path = tmp_path / "broken.jinja"
    if source is not None:
        path.write_text(source)
    args = [str(server_bin), "--model_path", str(model_path), "--is_local", "--hostname", "127.0.0.1",
            "--http_port", str(free_port()), "--threads", str(THREADS), "--chat_template", str(path)]  # fmt: skip
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=STARTUP_TIMEOUT)
    output = (p.stderr + p.stdout).decode("utf-8", "replace")
    assert p.returncode != 0, output
    assert str(path) in output and "chat template" in output, output
