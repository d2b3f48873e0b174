"""Tool calling (issue 22, item 1) through the official `openai` client on the default model.

SmolLM2's own chat template knows no tools, so the server offers them in a Hermes-style system
prompt and reads `<tool_call>` blocks back; the Qwen 2.5 template (Hermes, renders `tools`
itself) and the Llama 3.1 template (JSON calls) are served from the fixtures with
`--chat_template`. What is checked:
- `tool_choice` "required" and a named function: every answer, over seeds and temperatures, is a
  list of calls in OpenAI's shape whose arguments parse and validate (jsonschema) against the
  tool's parameters, with `finish_reason` "tool_calls" and `content` null;
- `parallel_tool_calls: false` gives one call; a named choice calls that function;
- a round trip: call → `role: "tool"` result → answer, whole and streamed (the streamed deltas
  add up to the whole answer's calls);
- refusals: a parameter schema the grammar cannot enforce, tools on text completions, a forced
  call together with `response_format`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tllm_server_helpers import TllmServer, check_error_body, dumps, user

FIXTURES = Path(__file__).resolve().parents[1] / "TLLMChatTemplateTests" / "Fixtures"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 14}, "maxItems": 3},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                           "b": {"type": "integer", "minimum": -1000, "maximum": 1000}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = user("What is the weather like in Paris today?")
# Room for the most calls a forced answer may hold (8), each with its longest arguments.
MAX_TOKENS = 700


def check_calls(choice, expect_name: str | None = None) -> list:
    """The calls of a choice, each checked against its tool's schema."""
    assert choice.finish_reason == "tool_calls", choice
    message = choice.message
    assert message.content is None, message
    assert message.tool_calls, message
    ids = set()
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_") and call.id not in ids, call
        ids.add(call.id)
        assert call.function.name in SCHEMAS, call
        if expect_name:
            assert call.function.name == expect_name, call
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return message.tool_calls


def ask(client, model_id, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("messages", QUESTION)
    kw.setdefault("max_tokens", MAX_TOKENS)
    return client.chat.completions.create(model=model_id, tools=TOOLS, **kw)


@pytest.mark.parametrize("temperature,seed", [(0, 0), (0.7, 1), (1.0, 2), (1.3, 3), (1.6, 4)])
def test_required_gives_valid_calls(client, model_id, temperature, seed):
    r = ask(client, model_id, tool_choice="required", temperature=temperature, seed=seed)
    calls = check_calls(r.choices[0])
    assert len(calls) <= 8


@pytest.mark.parametrize("seed", range(3))
def test_named_function_is_called_once(client, model_id, seed):
    choice = {"type": "function", "function": {"name": "add"}}
    r = ask(client, model_id, tool_choice=choice, temperature=1.0, seed=seed,
            messages=user("What is 2 plus 3?"))  # fmt: skip
    assert len(check_calls(r.choices[0], expect_name="add")) == 1


def test_parallel_tool_calls_false_gives_one_call(client, model_id):
    r = ask(client, model_id, tool_choice="required", parallel_tool_calls=False)
    assert len(check_calls(r.choices[0])) == 1


def stream_calls(client, model_id, **kw) -> tuple[dict, str | None, str]:
    """Tool-call deltas added up per index, the finish reason, and the streamed content."""
    kw.setdefault("temperature", 0)
    calls: dict[int, dict] = {}
    finish = None
    content = ""
    with client.chat.completions.create(
        model=model_id, messages=QUESTION, tools=TOOLS, max_tokens=MAX_TOKENS, stream=True, **kw
    ) as s:
        for chunk in s:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            content += choice.delta.content or ""
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                if d.id:
                    assert entry["id"] is None, "an id comes once per call"
                    entry["id"] = d.id
                if d.function and d.function.name:
                    entry["name"] += d.function.name
                if d.function and d.function.arguments:
                    entry["arguments"] += d.function.arguments
            finish = choice.finish_reason or finish
    return calls, finish, content


def test_round_trip_whole_and_streamed(client, model_id):
    whole = ask(client, model_id, tool_choice="required")
    calls = check_calls(whole.choices[0])
    streamed, finish, content = stream_calls(client, model_id, tool_choice="required")
    assert finish == "tool_calls" and content == ""
    assert sorted(streamed) == list(range(len(calls)))
    assert [(c["name"], c["arguments"]) for _, c in sorted(streamed.items())] == [
        (c.function.name, c.function.arguments) for c in calls
    ]
    # The results go back as `role: "tool"` messages; the answer is text.
    history = QUESTION + [whole.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature": 18, "sky": "clear"})}
                for c in calls]  # fmt: skip
    final = ask(client, model_id, messages=history, tool_choice="none", max_tokens=24)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert isinstance(final.choices[0].message.content, str) and final.choices[0].message.content
    assert final.choices[0].message.tool_calls is None
    # The history changes the prompt: the server rendered the calls and the results.
    alone = ask(client, model_id, tool_choice="none", max_tokens=1)
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 20
    auto = ask(client, model_id, messages=history, max_tokens=24)
    assert auto.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_refusals(http, client, model_id):
    bad = json.loads(json.dumps(WEATHER))
    bad["function"]["parameters"]["properties"]["city"]["pattern"] = "^[A-Z]"
    body = {"model": model_id, "messages": QUESTION, "tools": [bad], "tool_choice": "required", "max_tokens": 8}
    err = check_error_body(http.post("/v1/chat/completions", content=dumps(body),
                                     headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    assert err["param"].startswith("tools[0].function.parameters.properties.city"), err
    assert "pattern" in err["message"]

    body = {"model": model_id, "prompt": "Hi", "tools": TOOLS, "max_tokens": 4}
    err = check_error_body(http.post("/v1/completions", content=dumps(body),
                                     headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    assert err["param"] == "tools", err

    body = {"model": model_id, "messages": QUESTION, "tools": TOOLS, "tool_choice": "required", "max_tokens": 4,
            "response_format": {"type": "json_object"}}  # fmt: skip
    err = check_error_body(http.post("/v1/chat/completions", content=dumps(body),
                                     headers={"Content-Type": "application/json"}), 400)  # fmt: skip
    assert err["param"] == "tool_choice", err
    assert client.chat.completions.create(model=model_id, messages=user("Hi"), max_tokens=2).choices


@pytest.fixture(scope="module", params=["qwen-2.5", "llama-3.1"])
def templated(request, server_bin, model_path, log_dir, tmp_path_factory):
    """The default model under another family's chat template (which renders `tools` itself)."""
    name = request.param
    source = json.loads((FIXTURES / "chat_templates.json").read_text())["templates"][name]
    source = source["source"] if isinstance(source, dict) else source
    path = tmp_path_factory.mktemp("templates") / f"{name}.jinja"
    path.write_text(source)
    server = TllmServer(server_bin, model_path, log_dir, f"tools-{name}", chat_template=path)
    yield name, server
    rc = server.terminate()
    assert rc == 0, f"the {name}-template server: exit code {rc} after SIGTERM; logs:\n{server.log_tail()}"


def test_templates_that_render_tools(templated):
    name, server = templated
    client = server.client()
    model_id = client.models.list().data[0].id
    for seed, temperature in [(0, 0), (1, 1.0)]:
        r = ask(client, model_id, tool_choice="required", temperature=temperature, seed=seed)
        calls = check_calls(r.choices[0])
    history = QUESTION + [r.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": "18 C"} for c in calls]
    final = ask(client, model_id, messages=history, tool_choice="none", max_tokens=8)
    assert final.choices[0].finish_reason in ("stop", "length"), (name, final)
