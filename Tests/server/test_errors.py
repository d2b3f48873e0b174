"""Bad requests get OpenAI-shaped errors with the right status, and the server keeps serving:
every bad request is followed by a good one that must succeed.

Error shape: {"error": {"message", "type", "param", "code"}} (docs/server.md, "Server").
"""

from __future__ import annotations

import json

import openai
import pytest

from tllm_server_helpers import assert_serving, check_error_body, check_error_shape, dumps, user

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _m(**kw):
    """A chat body with a placeholder model (filled in by the test) and one user message."""
    body = {"model": None, "messages": user("Hi"), "max_tokens": 4}
    body.update(kw)
    return body


# (id, path, body, status, param): body is bytes (sent as is) or a dict (JSON; "model": None is
# replaced by the served model id). param: the field the error must name in `param` when the
# request body failed to decode (docs/server.md: "param = the field's coding path"), None when
# the test does not require one.
BAD_REQUESTS = [
    ("malformed-json", CHAT, b'{"model": "m", "messages": [', 400, None),
    ("not-json", CHAT, b"hello", 400, None),
    ("empty-body", CHAT, b"", 400, None),
    ("json-array", CHAT, b"[1, 2, 3]", 400, None),
    ("missing-messages", CHAT, {"model": None, "max_tokens": 4}, 400, None),
    ("messages-string", CHAT, _m(messages="hello"), 400, "messages"),
    ("messages-object", CHAT, _m(messages={"role": "user", "content": "Hi"}), 400, "messages"),
    ("messages-empty", CHAT, _m(messages=[]), 400, None),
    ("bad-role", CHAT, _m(messages=[{"role": "wizard", "content": "Hi"}]), 400, None),
    ("missing-role", CHAT, _m(messages=[{"content": "Hi"}]), 400, None),
    ("missing-content", CHAT, _m(messages=[{"role": "user"}]), 400, None),
    ("content-number", CHAT, _m(messages=[{"role": "user", "content": 5}]), 400, None),
    ("max_tokens-string", CHAT, _m(max_tokens="ten"), 400, "max_tokens"),
    ("temperature-string", CHAT, _m(temperature="hot"), 400, "temperature"),
    ("stream-string", CHAT, _m(stream="yes"), 400, "stream"),
    ("stop-number", CHAT, _m(stop=5), 400, "stop"),
    ("max_tokens-zero", CHAT, _m(max_tokens=0), 400, None),
    ("max_tokens-negative", CHAT, _m(max_tokens=-1), 400, None),
    ("n-2", CHAT, _m(n=2), 400, None),
    ("temperature-negative", CHAT, _m(temperature=-1), 400, None),
    ("top_p-above-1", CHAT, _m(top_p=1.5), 400, None),
    ("completions-missing-prompt", COMPLETIONS, {"model": None, "max_tokens": 4}, 400, None),
    ("completions-prompt-number", COMPLETIONS, {"model": None, "prompt": 5, "max_tokens": 4}, 400, None),
    ("completions-max_tokens-zero", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 0}, 400, None),
    ("completions-n-2", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 4, "n": 2}, 400, None),
    # Fields this server does not honour are a 400 naming them, never silently ignored.
    ("logit_bias", CHAT, _m(logit_bias={"42": 5}), 400, "logit_bias"),
    ("best_of-2", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 4, "best_of": 2}, 400, "best_of"),
    ("suffix", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 4, "suffix": "end"}, 400, "suffix"),
    ("modalities-audio", CHAT, _m(modalities=["text", "audio"]), 400, "modalities"),
    ("guided_json", CHAT, _m(guided_json={"type": "object"}), 400, "guided_json"),
    ("prediction", CHAT, _m(prediction={"type": "content", "content": "x"}), 400, "prediction"),
    # logprobs as each endpoint spells it.
    ("chat-logprobs-int", CHAT, _m(logprobs=3), 400, "logprobs"),
    ("chat-top_logprobs-alone", CHAT, _m(top_logprobs=2), 400, "top_logprobs"),
    ("chat-top_logprobs-21", CHAT, _m(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    ("chat-top_logprobs-negative", CHAT, _m(logprobs=True, top_logprobs=-1), 400, "top_logprobs"),
    ("completions-logprobs-true", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 4, "logprobs": True},
     400, "logprobs"),
    ("completions-logprobs-21", COMPLETIONS, {"model": None, "prompt": "Hi", "max_tokens": 4, "logprobs": 21}, 400,
     "logprobs"),
    # response_format: the type, and the shape of a json_schema.
    ("response_format-unknown", CHAT, _m(response_format={"type": "yaml"}), 400, "response_format"),
    ("response_format-string", CHAT, _m(response_format="json"), 400, "response_format"),
    ("response_format-schema-not-object", CHAT,
     _m(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}), 400, "response_format"),
    ("response_format-json_schema-missing", CHAT, _m(response_format={"type": "json_schema"}), 400,
     "response_format"),
]


# Values of those fields that ask for nothing are accepted, as OpenAI's API accepts them.
NO_OP_FIELDS = [
    ("tools-empty", {"tools": []}),
    ("tool_choice-none", {"tool_choice": "none"}),
    ("logit_bias-empty", {"logit_bias": {}}),
    ("modalities-text", {"modalities": ["text"]}),
    ("response_format-text", {"response_format": {"type": "text"}}),
    ("logprobs-false", {"logprobs": False}),
    ("nulls", {"tools": None, "logit_bias": None, "suffix": None, "response_format": None}),
]


@pytest.mark.parametrize("fields", [c[1] for c in NO_OP_FIELDS], ids=[c[0] for c in NO_OP_FIELDS])
def test_fields_that_ask_for_nothing_are_accepted(http, model_id, fields):
    body = {"model": model_id, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}
    r = http.post(CHAT, content=dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("path,body,status,param", [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request(http, client, model_id, path, body, status, param):
    if isinstance(body, dict):
        body = dumps({k: (model_id if k == "model" and v is None else v) for k, v in body.items()})
    r = http.post(path, content=body, headers={"Content-Type": "application/json"})
    err = check_error_body(r, status)
    if status == 400:
        assert err["type"] == "invalid_request_error", err
    if param is not None:
        assert err["param"] is not None and param in err["param"], f"param should name {param!r}: {err}"
    assert_serving(client, model_id)


def test_prompt_longer_than_context(http, client, model_id, model_info):
    n = model_info["max_model_len"]
    long_prompt = "hello " * (n + 1000)
    for path, body in (
        (CHAT, {"model": model_id, "messages": user(long_prompt), "max_tokens": 4}),
        (COMPLETIONS, {"model": model_id, "prompt": long_prompt, "max_tokens": 4}),
    ):
        r = http.post(path, json=body)
        err = check_error_body(r, 400)
        assert err["type"] == "invalid_request_error", err
        assert_serving(client, model_id)


def test_prompt_plus_max_tokens_beyond_context(http, client, model_id, model_info):
    """A short prompt but max_tokens = the whole context: prompt + max_tokens > context -> 400."""
    r = http.post(CHAT, json={"model": model_id, "messages": user("Hi"), "max_tokens": model_info["max_model_len"]})
    check_error_body(r, 400)
    assert_serving(client, model_id)


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/v1/nope"), ("POST", "/v1/chat/completion"), ("POST", "/v2/chat/completions"), ("GET", "/nope")],
)
def test_unknown_route(http, client, model_id, method, path):
    r = http.request(method, path, json={"model": model_id, "messages": user("Hi")} if method == "POST" else None)
    check_error_body(r, 404)
    assert_serving(client, model_id)


def test_openai_client_sees_openai_errors(client, model_id):
    """The openai client maps our errors to its exception types with the parsed body."""
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id, messages=user("Hi"), max_tokens=4, n=2)
    assert e.value.status_code == 400
    check_error_shape({"error": e.value.body} if "error" not in (e.value.body or {}) else e.value.body)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id, messages=[], max_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model_id, messages=user("Hi"), max_tokens=0)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=model_id, prompt="Hi", max_tokens=-5)
    assert_serving(client, model_id)


def test_bad_stream_request_is_a_plain_error(http, client, model_id):
    """A streaming request that fails validation gets a JSON error status, not a 200 stream."""
    r = http.post(CHAT, json={"model": model_id, "messages": [], "stream": True})
    check_error_body(r, 400)
    assert not r.headers.get("content-type", "").startswith("text/event-stream"), r.headers
    assert_serving(client, model_id)


def test_error_bodies_are_json_objects(http):
    r = http.post(CHAT, content=b"{", headers={"Content-Type": "application/json"})
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    json.loads(r.text)
