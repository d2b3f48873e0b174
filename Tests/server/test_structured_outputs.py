"""Structured outputs (issue 22, item 2): `response_format` enforced by a token mask at every
sampling step, through the official `openai` client on the default model (SmolLM2-135M, which on
its own rarely writes valid JSON for a schema).

What is checked:
- `client.chat.completions.parse(response_format=<pydantic model>)` over seeds and temperatures:
  every answer parses into the model and validates (jsonschema) against the schema it sent;
- raw `json_schema` requests with nested `$ref`s, arrays with item bounds, enums, consts and
  nullable fields; `json_object`; streamed answers; text completions;
- properties come in the schema's order;
- schemas the server cannot enforce are refused with a 400 naming the keyword and where it is.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Literal, Optional

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from tllm_server_helpers import check_error_body, dumps, stream_chat, user

MAX_TOKENS = 600


class Colour(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


# Strings are bounded: a 135M model sampled at temperature 1.3 may otherwise write one string until
# max_tokens; the grammar enforces maxLength, so every answer ends.
class Address(BaseModel):
    city: str = Field(max_length=32)
    postcode: Optional[str] = Field(max_length=10)


class Person(BaseModel):
    name: str = Field(max_length=32)
    age: int = Field(ge=0, le=130)
    likes: list[Colour] = Field(max_length=3)
    role: Literal["admin", "user"]
    address: Address
    score: float


def chat_json(client, model_id, prompt, response_format, **kw):
    kw.setdefault("temperature", 0)
    r = client.chat.completions.create(
        model=model_id, messages=user(prompt), max_tokens=MAX_TOKENS, response_format=response_format, **kw
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", f"the grammar ends the answer: {choice.finish_reason} {r}"
    return json.loads(choice.message.content), choice.message.content


@pytest.mark.parametrize("temperature,seed", [(0, 0), (0.7, 1), (1.0, 2), (1.3, 3)])
def test_parse_into_a_pydantic_model(client, model_id, temperature, seed):
    r = client.chat.completions.parse(
        model=model_id, messages=user("Describe a person who lives in Paris."), response_format=Person,
        max_tokens=MAX_TOKENS, temperature=temperature, seed=seed,
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "stop", r
    assert isinstance(choice.message.parsed, Person), choice.message
    document = json.loads(choice.message.content)
    jsonschema.validate(document, Person.model_json_schema())
    assert list(document) == list(Person.model_fields), "properties in the schema's order"


# Nested `$ref`s (recursion itself is in the grammar's Swift tests: a small model sampled hot
# nests a recursive schema until max_tokens).
TREE = {
    "$defs": {
        "leaf": {"type": "object", "properties": {"label": {"enum": ["x", "y"]}}, "required": ["label"]},
        "node": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["a", "b", "c"]},
                "children": {"type": "array", "items": {"$ref": "#/$defs/leaf"}, "maxItems": 2},
            },
            "required": ["label", "children"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "properties": {
        "version": {"const": 2},
        "root": {"$ref": "#/$defs/node"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 1, "maxItems": 3},
        "note": {"type": ["string", "null"], "maxLength": 40},
        "ok": {"type": "boolean"},
        "count": {"type": "integer"},
        "ratio": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    "required": ["version", "root", "tags", "note", "ok", "count", "ratio"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("temperature,seed", [(0, 0), (0.8, 11), (1.2, 12)])
def test_raw_json_schema_validates(client, model_id, temperature, seed):
    fmt = {"type": "json_schema", "json_schema": {"name": "tree", "schema": TREE, "strict": True}}
    document, _ = chat_json(client, model_id, "Make a small tree.", fmt, temperature=temperature, seed=seed)
    jsonschema.validate(document, TREE)
    assert list(document) == list(TREE["properties"])


def test_json_object(client, model_id):
    # Greedy, and a prompt that asks for a small object: `json_object` bounds nothing, and the
    # 135M model writes some objects (about Paris, say) until max_tokens.
    document, _ = chat_json(client, model_id, "Give a person's name and age as JSON.", {"type": "json_object"})
    assert isinstance(document, dict)


def test_streamed_answer_validates(client, model_id):
    schema = Person.model_json_schema()
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    s = stream_chat(client, model_id, "Describe a person.", response_format=fmt, max_tokens=MAX_TOKENS)
    assert s.finish_reason == "stop"
    jsonschema.validate(json.loads(s.text), schema)
    whole, _ = chat_json(client, model_id, "Describe a person.", fmt)
    assert json.loads(s.text) == whole, "streamed and whole answers are the same"


def test_text_completion_with_a_schema(client, model_id):
    schema = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 100}},
              "required": ["answer"]}
    r = client.completions.create(
        model=model_id, prompt="2 + 2 =", max_tokens=64, temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}},
    )  # fmt: skip
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].text), schema)


UNSUPPORTED = [
    ({"type": "object", "properties": {"email": {"type": "string", "pattern": "^a"}}}, "pattern", "properties.email"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties", ""),
    ({"type": "string", "format": "uri-reference-template"}, "format", ""),
    ({"type": "string", "maxLength": 10**9}, "maxLength", ""),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref", "properties.a"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 2}, "minItems", ""),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 10**18}, "maxItems", ""),
    ({"type": "teapot"}, "type", ""),
    ({"not": {"type": "string"}}, "not", ""),
]


@pytest.mark.parametrize("schema,keyword,path", UNSUPPORTED, ids=[u[1] for u in UNSUPPORTED])
def test_schemas_we_cannot_enforce_are_refused(http, client, model_id, schema, keyword, path):
    body = {"model": model_id, "messages": user("Hi"), "max_tokens": 4,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip
    r = http.post("/v1/chat/completions", content=dumps(body), headers={"Content-Type": "application/json"})
    err = check_error_body(r, 400)
    assert keyword in err["message"], err
    expected = "response_format.json_schema.schema" + (f".{path}" if path else "")
    assert err["param"].startswith(expected), err
    # The server goes on serving.
    assert client.chat.completions.create(model=model_id, messages=user("Hi"), max_tokens=2).choices


def test_hostile_schemas_do_not_hurt_the_server(http, client, model_id):
    loop = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    wide = {"enum": [f"v{i}" for i in range(200_000)]}
    deep = '{"type": "array", "items": ' * 5000 + '{"type": "string"}' + "}" * 5000  # too deep for json.dumps
    for schema in ("DEEP", loop, wide, {"$ref": "#"}, {"type": []}, {"anyOf": []}):
        body = {"model": model_id, "messages": user("Hi"), "max_tokens": 4,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}  # fmt: skip
        content = dumps(body).replace(b'"DEEP"', deep.encode())
        try:
            r = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"},
                          timeout=60)  # fmt: skip
        except httpx.HTTPError as e:
            pytest.fail(f"the server did not answer a hostile schema: {e}")
        assert r.status_code in (200, 400, 413), r.text
        if r.status_code != 200:
            check_error_body(r, r.status_code)
    assert client.chat.completions.create(model=model_id, messages=user("Hi"), max_tokens=2).choices
