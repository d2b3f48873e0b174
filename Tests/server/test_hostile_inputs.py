"""Hostile inputs against the real `tllm.server` (issue 17 item 1, issue 18 items 1 and 4).

Four scenarios, one private server each (none uses the shared `server` fixture):

A. Every numeric field of `/v1/chat/completions` and `/v1/completions` gets the same list of
   hostile values (0, -1, 2**31, 2**63, -2**63, 2**64, 1e308, 1.5, a 400-digit integer written
   raw into the JSON text, "1", null, [], {}, true, ...). Each answer is a 200 where the value is
   legal, else a 4xx in OpenAI's error shape; never a 5xx, never a dropped connection. At the
   end the same process is still alive and serving.
B. `/register_client` and `/init_model` on a cluster master (no --is_local) with hostile ports,
   ranks, layer ranges, host lists and client ids.
C. JSON nested 100 000 deep on every JSON route: 400 (413 past the body limit). Malformed HTTP
   (request lines, lengths, chunk sizes, huge headers) on raw sockets: a 4xx or a closed
   connection within seconds, never silence. Then the A/C server must be the same process.
D. `--api_key`: every spelling of every protected path without the key is refused (401 in
   OpenAI's shape wherever the router matches the spelling); `/`, `/health`, `/version` stay
   open; with the key everything works (WS upgrade included, also with `?api_key=`);
   `TLLM_API_KEY` is the fallback of the flag.

Raw sockets wherever a client library would rewrite the request (paths, upgrades, framing).

A request that kills a server is reported with the server's log; the server is then restarted
so that the remaining tests still say something, and the scenario's last test fails listing
every crash.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import itertools
import json
import os
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tllm_server_helpers import STARTUP_TIMEOUT, Node, TllmServer, check_error_shape, free_port, user

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ROUTES = {"chat": CHAT, "completions": COMPLETIONS}

HTTP_TIMEOUT = 60.0  # one request; a hang is a failure, not a stall of the whole suite
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
DOUBLE_MAX = 1.7976931348623157e308
HUGE = 10**399 + 7  # 400 digits; json.dumps writes Python ints as raw digits

# The default model (SmolLM2-135M-Instruct); read from the GGUF when the `gguf` package is there.
DEFAULT_LAYERS, DEFAULT_VOCAB = 30, 49152

# (label, value): the same list for every numeric field.
HOSTILE = [
    ("0", 0),
    ("-1", -1),
    ("-2**31-1", -(2**31) - 1),
    ("2**31", 2**31),
    ("2**32", 2**32),
    ("2**63-1", INT64_MAX),
    ("2**63", 2**63),
    ("-2**63", INT64_MIN),
    ("2**64", 2**64),
    ("1e308", 1e308),
    ("-1e308", -1e308),
    ("1.5", 1.5),
    ("400 digits", HUGE),
    ('"1"', "1"),
    ("null", None),
    ("[]", []),
    ("{}", {}),
    ("true", True),
]


# --------------------------------------------------------------------------
# Expectations and verdicts

OK, REJECT, EITHER = "HTTP 200", "a 4xx in OpenAI's shape", "HTTP 200 or a 4xx in OpenAI's shape"


@dataclass(frozen=True)
class Expect:
    outcome: str = REJECT
    status: int | None = None  # this exact status
    code: str | None = None  # error.code
    param: str | None = None  # a substring error.param must contain
    on_200: Callable[[httpx.Response], str | None] | None = None  # extra check of a 200 answer

    def __str__(self):
        extra = [f"{k} {v!r}" for k, v in (("status", self.status), ("code", self.code), ("param", self.param)) if v]
        return self.outcome + (f" ({', '.join(extra)})" if extra else "")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def clip(text: str, n: int = 400) -> str:
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def encode(body) -> bytes | None:
    """dict / list: JSON (big ints as raw digits); str / bytes: sent as they are."""
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def describe(method: str, path: str, content: bytes | None, headers: dict | None = None) -> str:
    text = "" if content is None else content.decode("utf-8", "replace")
    head = f" {headers}" if headers else ""
    return f"{method} {path}{head} {clip(text, 300)}".rstrip()


def check_200_body(r: httpx.Response) -> str | None:
    """A 200 is a completion (JSON or an SSE stream that ends with [DONE] and carries no error)."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        payloads = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:")]
        if not payloads or payloads[-1] != "[DONE]":
            return "the stream does not end with data: [DONE]"
        for p in payloads[:-1]:
            try:
                chunk = json.loads(p)
            except ValueError:
                return f"a stream event is not JSON: {p[:200]!r}"
            if "error" in chunk:
                return f"the stream carries an error event: {p[:300]}"
        return None
    try:
        body = r.json()
    except ValueError:
        return "the 200 body is not JSON"
    if not isinstance(body, dict) or not body.get("choices"):
        return "the 200 body has no choices"
    return None


def verdict(r: httpx.Response, expect: Expect) -> str | None:
    """None when `r` meets `expect`, else what is wrong."""
    s = r.status_code
    if s >= 500:
        return f"a server error ({s})"
    if expect.status is not None and s != expect.status:
        return f"status {s}, not {expect.status}"
    if expect.outcome == OK and s != 200:
        return f"status {s}, not 200"
    if expect.outcome == REJECT and not 400 <= s < 500:
        return f"status {s}, not a 4xx"
    if s == 200:
        return (expect.on_200 or check_200_body)(r)
    if not 400 <= s < 500:
        return f"unexpected status {s}"
    try:
        err = check_error_shape(r.json(), s)
    except (ValueError, AssertionError) as e:
        return f"the {s} body is not an OpenAI error ({str(e)[:200]})"
    if expect.code is not None and err.get("code") != expect.code:
        return f"error.code {err.get('code')!r}, not {expect.code!r}"
    if expect.param is not None and expect.param not in (err.get("param") or ""):
        return f"error.param {err.get('param')!r} does not name {expect.param!r}"
    return None


def report(title: str, problems: list[str], limit: int = 30) -> str:
    more = f"\n\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{title}: {len(problems)} problem(s)\n\n" + "\n\n".join(problems[:limit]) + more


# --------------------------------------------------------------------------
# A server under attack


class Victim:
    """A server process plus an HTTP client. `check` sends one request and returns the problems
    with its answer; when the server died, the crash is recorded (with the log) and the server
    restarted on the same port, so that later requests still test something."""

    def __init__(self, server):
        self.server = server
        self.first_pid = server.proc.pid
        self.crashes: list[str] = []
        self.http = httpx.Client(base_url=server.base_url, trust_env=False, timeout=HTTP_TIMEOUT)

    @property
    def port(self) -> int:
        return self.server.port

    def close(self):
        self.http.close()

    def check(self, method: str, path: str, body=None, expect: Expect = Expect(), headers: dict | None = None
              ) -> list[str]:
        content = encode(body)
        desc = describe(method, path, content, headers)
        hdrs = dict(headers or {})
        if content is not None:
            hdrs.setdefault("Content-Type", "application/json")
        try:
            r = self.http.request(method, path, content=content, headers=hdrs)
        except httpx.TransportError as e:
            return [f"{desc}\n  expected {expect}\n  got no HTTP answer ({type(e).__name__}: {e})"
                    + self.notice_crash(desc)]
        problem = verdict(r, expect)
        if problem is None:
            return []
        crash = self.notice_crash(desc) if r.status_code >= 500 else ""
        return [f"{desc}\n  expected {expect}: {problem}\n  got HTTP {r.status_code}: {clip(r.text)}" + crash]

    def notice_crash(self, desc: str) -> str:
        """'' when the server is alive; else records the crash, restarts it and says so."""
        time.sleep(0.2)  # a dying process may still be on its way out
        if self.server.alive():
            return ""
        code = self.server.proc.poll()
        tail = self.server.log_tail(3000)
        self.crashes.append(f"{desc}\n  killed the server (exit code {code}):\n{tail}")
        self.server.restart()
        self.http.close()
        self.http = httpx.Client(base_url=self.server.base_url, trust_env=False, timeout=HTTP_TIMEOUT)
        return f"\n  THE SERVER DIED (exit code {code}); restarted. Log:\n{tail}"

    def survived(self) -> list[str]:
        """Problems with 'the same process that started is alive and answers /health'."""
        problems = list(self.crashes)
        if not self.server.alive():
            problems.append(f"the server is not running (exit code {self.server.proc.poll()}):\n"
                            f"{self.server.log_tail(3000)}")
        elif self.server.proc.pid != self.first_pid:
            problems.append(f"the server was restarted after a crash (pid {self.first_pid} -> {self.server.proc.pid})")
        else:
            try:
                h = self.http.get("/health")
                if h.status_code != 200:
                    problems.append(f"GET /health: {h.status_code} {clip(h.text)}")
            except httpx.TransportError as e:
                problems.append(f"GET /health: no answer ({e})")
        return problems


def _stop(server, what: str):
    rc = server.terminate()
    assert rc == 0, f"{what}: exit code {rc} after SIGTERM; logs:\n{server.log_tail()}"


@pytest.fixture(scope="module")
def model_shape(model_path) -> tuple[int, int]:
    """(layers, vocabulary size) of the served model."""
    try:
        import gguf  # noqa: PLC0415 (optional)

        reader = gguf.GGUFReader(str(model_path))
        arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")

        def scalar(key):
            f = reader.fields.get(key)
            return int(f.parts[f.data[0]][0]) if f is not None else None

        layers = scalar(f"{arch}.block_count")
        vocab = scalar(f"{arch}.vocab_size")
        if vocab is None:
            vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
        return layers or DEFAULT_LAYERS, vocab
    except Exception:  # no gguf package, or not a GGUF file: the default model's numbers
        return DEFAULT_LAYERS, DEFAULT_VOCAB


def _victim(request, server_bin, model_path, log_dir, name: str, what: str, **flags):
    """A module's server as a Victim; stopped (and checked) at the end of the module."""
    server = TllmServer(server_bin, model_path, log_dir, name, **flags)
    victim = Victim(server)
    yield victim
    victim.close()
    if server.alive():
        _stop(server, what)


def _reported(victim: Victim, request) -> Victim:
    """`victim`, with its server's logs in the test's failure report."""
    request.node._tllm_servers = [*getattr(request.node, "_tllm_servers", []), victim.server]
    return victim


@pytest.fixture(scope="module")
def _local(request, server_bin, model_path, log_dir):
    yield from _victim(request, server_bin, model_path, log_dir, "hostile", "the hostile-input server")


@pytest.fixture
def local(_local, request) -> Victim:
    """The --is_local server of scenarios A and C (its logs go into failure reports)."""
    return _reported(_local, request)


@pytest.fixture(scope="module")
def limits(_local, model_shape) -> dict:
    r = _local.http.get("/v1/models")
    assert r.status_code == 200, f"GET /v1/models: {r.status_code} {r.text}"
    layers, vocab = model_shape
    return {"context": r.json()["data"][0]["max_model_len"], "vocab": vocab, "layers": layers}


# --------------------------------------------------------------------------
# A. Numeric fields of the completion routes


def plain_body(route: str) -> dict[str, Any]:
    """A small greedy request: 1 token."""
    body: dict[str, Any] = {"messages": user("hi")} if route == "chat" else {"prompt": "hi"}
    body.update(max_tokens=1, temperature=0)
    return body


def sweep_body(route: str, field: str, value) -> dict:
    """plain_body with `field` set to `value`."""
    body = plain_body(route)
    if field in ("max_tokens", "max_completion_tokens"):
        del body["max_tokens"]
        body[field] = value
        if value is None:  # null is "absent": keep the request short with the other name
            body["max_completion_tokens" if field == "max_tokens" else "max_tokens"] = 1
    elif field in ("stop_token_ids", "prompt"):
        body[field] = [value]
    elif field == "include_usage":
        body.update(stream=True, stream_options={"include_usage": value})
    elif field == "stream_options":
        body.update(stream=True, stream_options=value)
    elif field == "seed":
        body.update(temperature=1.0, seed=value)  # a seed matters when sampling
    else:
        body[field] = value
    return body


def expected(route: str, field: str, v, lim: dict) -> Expect:
    """What the contract says about `field` = `v` (OK where legal, REJECT where not, EITHER where
    a careful server may go either way)."""
    if field == "stop_token_ids":  # list items: a 64-bit integer outside the vocabulary names the field;
        if is_int(v) and INT64_MIN <= v <= INT64_MAX:  # beyond 64 bits the server calls the JSON invalid
            return Expect(OK) if 0 <= v < lim["vocab"] else Expect(REJECT, status=400, param="stop_token_ids")
        return Expect(REJECT, status=400)
    if field == "prompt":  # completions' prompt as a list of token ids
        if (is_int(v) and 0 <= v < lim["vocab"]) or v == "1":  # ["1"] is a list of one text prompt
            return Expect(OK)
        return Expect(REJECT, param="prompt")
    if field == "stream_options":
        return Expect(OK) if v is None or v == {} else Expect(REJECT)
    if field in ("include_usage", "stream"):
        return Expect(OK) if v is None or isinstance(v, bool) else Expect(REJECT)
    if field == "logprobs":  # chat: a flag; completions: how many alternatives, 0 to 20
        if v is None or v is False:
            return Expect(OK)
        if route == "completions":
            return Expect(OK) if is_int(v) and 0 <= v <= 20 else Expect(REJECT)
        return Expect(OK) if v is True else Expect(REJECT)
    if v is None:  # every other field is optional: null means absent
        return Expect(OK)
    if not is_number(v):
        return Expect(REJECT)
    fits = is_int(v) and INT64_MIN <= v <= INT64_MAX
    if field in ("max_tokens", "max_completion_tokens"):
        if not fits or v < 1:
            return Expect(REJECT)
        return Expect(REJECT, status=400, code="context_length_exceeded") if v >= lim["context"] else Expect(OK)
    if field == "temperature":
        return Expect(OK) if 0 <= v <= 2 else Expect(REJECT)
    if field == "top_p":
        return Expect(EITHER) if v == 0 else Expect(OK) if 0 < v <= 1 else Expect(REJECT)
    if field == "min_p":
        return Expect(OK) if 0 <= v <= 1 else Expect(REJECT)
    if field in ("presence_penalty", "frequency_penalty"):
        return Expect(OK) if -2 <= v <= 2 else Expect(REJECT)
    if field == "repetition_penalty":
        if v == 0 or 10 < v <= DOUBLE_MAX:  # an engine may allow any positive penalty
            return Expect(EITHER)
        return Expect(OK) if 0 < v <= 10 else Expect(REJECT)
    if field == "top_k":
        if not fits:
            return Expect(REJECT)
        return Expect(OK) if v == -1 else Expect(EITHER) if v >= 0 else Expect(REJECT)
    if field == "seed":
        if fits:
            return Expect(OK)
        return Expect(EITHER) if is_int(v) and 0 <= v <= UINT64_MAX else Expect(REJECT)
    if field == "n":
        return Expect(OK) if v == 1 else Expect(REJECT)
    raise AssertionError(f"no rule for {field}")


SWEPT_FIELDS = [
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "seed", "n", "stop_token_ids", "logprobs", "include_usage",
    "stream_options", "stream",
]  # fmt: skip
SWEEP = [(route, field) for route in ROUTES for field in SWEPT_FIELDS] + [("completions", "prompt")]


@pytest.mark.parametrize("route,field", SWEEP, ids=[f"{r}-{f}" for r, f in SWEEP])
def test_numeric_field_sweep(local, limits, route, field):
    problems = []
    for _label, value in HOSTILE:
        problems += local.check("POST", ROUTES[route], sweep_body(route, field, value),
                                expected(route, field, value, limits))
    assert not problems, report(f"{ROUTES[route]} '{field}'", problems)


# The two requests issue 17 saw kill a release build, and their chat twins.
KNOWN_CRASHERS = [
    ("completions-stop_token_ids-2**32", COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "stop_token_ids": [4294967296]},
     Expect(REJECT, status=400, param="stop_token_ids")),
    ("completions-max_tokens-2**63-1", COMPLETIONS, {"prompt": "hi", "max_tokens": 9223372036854775807},
     Expect(REJECT, status=400, code="context_length_exceeded")),
    ("chat-stop_token_ids-2**32", CHAT, {"messages": user("hi"), "max_tokens": 2, "stop_token_ids": [4294967296]},
     Expect(REJECT, status=400, param="stop_token_ids")),
    ("chat-max_tokens-2**63-1", CHAT, {"messages": user("hi"), "max_tokens": 9223372036854775807},
     Expect(REJECT, status=400, code="context_length_exceeded")),
]  # fmt: skip


@pytest.mark.parametrize("path,body,expect", [c[1:] for c in KNOWN_CRASHERS], ids=[c[0] for c in KNOWN_CRASHERS])
def test_known_crashers(local, path, body, expect):
    problems = local.check("POST", path, body, expect)
    assert not problems and local.server.alive(), report("known crasher", problems or ["the server died"])


@pytest.mark.parametrize("route", ROUTES)
def test_limits_at_their_edges(local, limits, route):
    """max_tokens past the context: 400 context_length_exceeded; token ids just inside and just
    outside the vocabulary."""
    ctx, vocab = limits["context"], limits["vocab"]
    beyond = Expect(REJECT, status=400, code="context_length_exceeded")
    cases = [({name: v}, beyond) for name in ("max_tokens", "max_completion_tokens")
             for v in (ctx, ctx + 1, 2**31, 2**62, INT64_MAX)]
    cases += [
        ({"stop_token_ids": [vocab - 1]}, Expect(OK)),
        ({"stop_token_ids": [vocab]}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stop_token_ids": [-1]}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stop_token_ids": [0, 1, vocab]}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stop_token_ids": [2**31 - 1]}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stop_token_ids": [-(2**31)]}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stop_token_ids": 5}, Expect(REJECT, status=400, param="stop_token_ids")),
        ({"stream_options": {"include_usage": 1}, "stream": True}, Expect(REJECT, status=400)),
        ({"stream_options": {"include_usage": "true"}, "stream": True}, Expect(REJECT, status=400)),
    ]
    if route == "completions":
        cases += [
            ({"prompt": [vocab - 1]}, Expect(OK)),
            ({"prompt": [vocab]}, Expect(REJECT, status=400, param="prompt")),
            ({"prompt": [-1]}, Expect(REJECT, status=400, param="prompt")),
            ({"prompt": [[vocab - 1, 2**32]]}, Expect(REJECT, status=400, param="prompt")),
            ({"prompt": [1, 2**31]}, Expect(REJECT, status=400, param="prompt")),
        ]
    problems = []
    for extra, expect in cases:
        body = plain_body(route)
        if "max_completion_tokens" in extra:
            del body["max_tokens"]
        body.update(extra)
        problems += local.check("POST", ROUTES[route], body, expect)
    assert not problems, report(f"{ROUTES[route]} at its limits", problems)


# --------------------------------------------------------------------------
# C. Deep nesting on every JSON route

DEPTH = 100_000
JSON_ROUTES = [CHAT, COMPLETIONS, "/register_client", "/init_model"]


def arrays(n: int) -> str:
    return "[" * n + "]" * n


def objects(n: int) -> str:
    return '{"a":' * n + "1" + "}" * n


def nested_bodies(path: str) -> list[tuple[str, str]]:
    """(label, raw JSON text) nested deep at the top level and in the route's own fields."""
    out = [
        ("top-level arrays", arrays(DEPTH)),
        ("top-level objects", objects(DEPTH)),
        ("top-level unclosed", "[" * DEPTH),
        ("top-level unclosed objects", '{"a":' * DEPTH),
    ]
    fields = {
        CHAT: [('{"max_tokens":1,"messages":%s}', "messages"),
               ('{"max_tokens":1,"messages":[{"role":"user","content":%s}]}', "content"),
               ('{"max_tokens":1,"messages":[{"role":"user","content":"hi"}],"stop":%s}', "stop"),
               ('{"max_tokens":1,"messages":[{"role":"user","content":"hi"}],"chat_template_kwargs":%s}',
                "chat_template_kwargs")],
        COMPLETIONS: [('{"max_tokens":1,"prompt":%s}', "prompt"),
                      ('{"max_tokens":1,"prompt":"hi","stop":%s}', "stop"),
                      ('{"max_tokens":1,"prompt":"hi","stop_token_ids":%s}', "stop_token_ids")],
        "/register_client": [('{"client_id":"deep","port":1,"host":%s}', "host"),
                             ('{"client_id":%s,"port":1,"host":["127.0.0.1"]}', "client_id")],
        "/init_model": [('{"client_id":%s,"pp_rank":0,"start_idx":0,"end_idx":1}', "client_id"),
                        ('{"client_id":"deep","pp_rank":0,"start_idx":0,"end_idx":%s}', "end_idx")],
    }[path]  # fmt: skip
    for template, name in fields:
        out += [(f"{name}: arrays {DEPTH}", template % arrays(DEPTH)),
                (f"{name}: objects {DEPTH}", template % objects(DEPTH)),
                (f"{name}: arrays 600", template % arrays(600)),
                (f"{name}: arrays 20", template % arrays(20))]
    return out


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_deep_nesting(local, path):
    problems = []
    for label, text in nested_bodies(path):
        for p in local.check("POST", path, text, Expect(REJECT, status=400)):
            problems.append(f"[{label}] {p}")
    assert not problems, report(f"deeply nested JSON on {path}", problems)


@pytest.mark.parametrize("path", JSON_ROUTES)
def test_nesting_past_the_body_limit(local, path):
    """9 MiB of '[' (the default --max_body_bytes is 8 MiB): 413 in OpenAI's shape, and the
    server goes on. Sent on a raw socket that stops writing once the server has answered."""
    field = {CHAT: "messages", COMPLETIONS: "prompt", "/register_client": "host", "/init_model": "client_id"}[path]
    body = b'{"%s":' % field.encode() + b"[" * (9 << 20)
    desc = f"POST {path} {{\"{field}\": [[[... ({len(body)} bytes)"
    try:
        r = raw_http(local.port, "POST", path, {"Content-Type": "application/json"}, body)
    except NoAnswer as e:
        pytest.fail(f"{desc}\n  expected 413: {e}{local.notice_crash(desc)}")
    problem = raw_verdict(r, 413)
    assert problem is None, f"{desc}\n  expected 413 in OpenAI's shape: {problem}\n  got {r}"
    assert not local.check("GET", "/health", expect=Expect(OK, on_200=lambda r: None)), "GET /health after 413"


# Request lines and framing no client library sends: (label, bytes, success allowed). The
# answer is a 4xx (505 / 501 where HTTP says so) or a closed connection, within a few seconds;
# never silence, never a crash. `success allowed`: a server may also just serve it.
_H = b"Host: 127.0.0.1\r\n"
_JSON = b"Content-Type: application/json\r\n"
_COMPLETION = b'{"prompt": "hi", "max_tokens": 1}'
MALFORMED = [
    ("target without a leading slash", b"GET v1/models HTTP/1.1\r\n" + _H + b"\r\n", False),
    ("target of percent-encoded slashes", b"POST %2Fv1%2Fcompletions HTTP/1.1\r\n" + _H + _JSON
     + b"Content-Length: 33\r\n\r\n" + _COMPLETION, False),
    ("NUL in the target", b"GET /v1/models\x00 HTTP/1.1\r\n" + _H + b"\r\n", False),
    ("space in the target", b"GET /v1/mo dels HTTP/1.1\r\n" + _H + b"\r\n", False),
    ("not HTTP at all", b"HELLO\r\n\r\n", False),
    ("HTTP/9.9", b"GET /health HTTP/9.9\r\n" + _H + b"\r\n", False),
    ("header without a colon", b"GET /health HTTP/1.1\r\n" + _H + b"NoColonHere\r\n\r\n", False),
    ("negative Content-Length", b"POST /v1/completions HTTP/1.1\r\n" + _H + _JSON
     + b"Content-Length: -1\r\n\r\n" + _COMPLETION, False),
    ("Content-Length 2**64", b"POST /v1/completions HTTP/1.1\r\n" + _H + _JSON
     + b"Content-Length: 18446744073709551616\r\n\r\n" + _COMPLETION, False),
    ("two different Content-Lengths", b"POST /v1/completions HTTP/1.1\r\n" + _H + _JSON
     + b"Content-Length: 33\r\nContent-Length: 34\r\n\r\n" + _COMPLETION + b" ", False),
    ("chunk size 2**64", b"POST /v1/completions HTTP/1.1\r\n" + _H + _JSON
     + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n" + _COMPLETION + b"\r\n0\r\n\r\n", False),
    ("Content-Length and chunked", b"POST /v1/completions HTTP/1.1\r\n" + _H + _JSON
     + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n21\r\n" + _COMPLETION + b"\r\n0\r\n\r\n", True),
    ("a 100 kB header", b"GET /health HTTP/1.1\r\n" + _H + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n", True),
    ("10 000 headers", b"GET /health HTTP/1.1\r\n" + _H + b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))
     + b"\r\n", True),
    ("a 100 kB target", b"GET /health?" + b"a" * 100_000 + b" HTTP/1.1\r\n" + _H + b"\r\n", True),
]  # fmt: skip
MALFORMED_TIMEOUT = 5.0


def _malformed_verdict(port: int, data: bytes, success_allowed: bool) -> str | None:
    try:
        r = raw_bytes(port, data, timeout=MALFORMED_TIMEOUT)
    except NoAnswer as e:
        return f"{e} within {MALFORMED_TIMEOUT}s" if e.timed_out else None  # closing is an answer
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    if 400 <= r.status < 500 or r.status in (501, 505) or (success_allowed and r.status < 300):
        return None
    return f"expected a 4xx{' or a 2xx' if success_allowed else ''}\n  got {r}"


def test_malformed_request_lines(local):
    """All at once, each on its own connection (a silent server costs the timeout once)."""
    with concurrent.futures.ThreadPoolExecutor(len(MALFORMED)) as pool:
        verdicts = list(pool.map(lambda case: _malformed_verdict(local.port, case[1], case[2]), MALFORMED))
    problems = [f"[{label}] {clip(data.decode('latin-1'), 200)!r}\n  {v}"
                for (label, data, _), v in zip(MALFORMED, verdicts, strict=True) if v is not None]
    if problems:
        problems[-1] += local.notice_crash("the malformed requests")
    assert not problems, report("malformed HTTP requests", problems)


def test_the_same_process_survived_and_serves(local):
    """After A and C: no crash, the first process is alive and completes a small greedy request."""
    problems = local.survived()
    problems += local.check("POST", COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "temperature": 0}, Expect(OK))
    problems += local.check("POST", CHAT, {"messages": user("hi"), "max_tokens": 2, "temperature": 0}, Expect(OK))
    assert not problems, report("the hostile-input server after the sweep", problems)


# --------------------------------------------------------------------------
# Raw HTTP (request targets and upgrade requests that a client library would rewrite)


class NoAnswer(Exception):
    """The connection closed, or stayed silent until the timeout (`timed_out`), before a complete
    status line and headers."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class Raw:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    frame: bytes | None = None  # the first WebSocket frame's payload after a 101

    def json(self):
        return json.loads(self.body)

    def __str__(self):
        return f"HTTP {self.status} {self.headers.get('content-type', '')} {clip(self.body.decode('utf-8', 'replace'))}"


def _send_watching(s: socket.socket, data: bytes, timeout: float):
    """Send `data`, stopping early when the server answers (or closes) first."""
    view, sent = memoryview(data), 0
    deadline = time.monotonic() + timeout
    while sent < len(view):
        readable, writable, _ = select.select([s], [s], [], max(0.0, deadline - time.monotonic()))
        if readable:
            return
        if not writable:
            raise NoAnswer(f"could not send the request within {timeout}s ({sent} of {len(view)} bytes)", True)
        try:
            sent += s.send(view[sent : sent + 65536])
        except (BrokenPipeError, ConnectionResetError):
            return


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        raise NoAnswer("the server neither answered nor closed the connection", True) from None


def _read_head(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(s)
        if not chunk:
            raise NoAnswer(f"connection closed after {len(buf)} bytes: {buf[:200]!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise NoAnswer(f"not an HTTP status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def _dechunk(data: bytes) -> bytes:
    out, i = b"", 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return out
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            return out
        out += data[j + 2 : j + 2 + size]
        i = j + 2 + size + 2


def _read_body(s: socket.socket, method: str, status: int, headers: dict, buf: bytes) -> bytes:
    """The body after a head; what arrived when the server goes silent before its end."""
    try:
        return _read_body_or_timeout(s, method, status, headers, buf)
    except NoAnswer:
        return buf


def _read_body_or_timeout(s: socket.socket, method: str, status: int, headers: dict, buf: bytes) -> bytes:
    if method == "HEAD" or status in (101, 204, 304):
        return b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n and (chunk := _recv(s)):
            buf += chunk
        return buf[:n]
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    while not (chunked and buf.endswith(b"0\r\n\r\n")) and (chunk := _recv(s)):
        buf += chunk
    return _dechunk(buf) if chunked else buf


def raw_http(port: int, method: str, target: str, headers: dict | None = None, body: bytes = b"",
             timeout: float = HTTP_TIMEOUT) -> Raw:
    """One request with `target` written as is; `Connection: close`."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw_bytes(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, method, timeout)


def raw_bytes(port: int, data: bytes, method: str = "GET", timeout: float = HTTP_TIMEOUT) -> Raw:
    """Send `data` as it is and read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        _send_watching(s, data, timeout)
        status, hdrs, rest = _read_head(s)
        return Raw(status, hdrs, _read_body(s, method, status, hdrs, rest))


WS_KEY = base64.b64encode(b"tllm-hostile-key").decode()
WS_ACCEPT = base64.b64encode(hashlib.sha1((WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def ws_upgrade(port: int, target: str, headers: dict | None = None, timeout: float = HTTP_TIMEOUT) -> Raw:
    """An HTTP/1.1 WebSocket upgrade request; after a 101, the first frame's payload is read."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {WS_KEY}", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, hdrs, rest = _read_head(s)
        if status != 101:
            return Raw(status, hdrs, _read_body(s, "GET", status, hdrs, rest))
        while len(rest) < 2 and (chunk := _recv(s)):
            rest += chunk
        n, offset = (rest[1] & 0x7F if len(rest) >= 2 else 0), 2
        if n == 126:
            while len(rest) < 4 and (chunk := _recv(s)):
                rest += chunk
            n, offset = int.from_bytes(rest[2:4], "big"), 4
        elif n == 127:
            while len(rest) < 10 and (chunk := _recv(s)):
                rest += chunk
            n, offset = int.from_bytes(rest[2:10], "big"), 10
        while len(rest) < offset + n and (chunk := _recv(s)):
            rest += chunk
        return Raw(status, hdrs, b"", frame=rest[offset : offset + n])


def raw_verdict(r: Raw, status: int) -> str | None:
    """None when `r` is `status` with an OpenAI error body."""
    if r.status != status:
        return f"status {r.status}, not {status}"
    if r.headers.get("content-type", "").startswith("text/event-stream") or r.body.lstrip().startswith(b"data:"):
        return "an SSE body"
    try:
        check_error_shape(r.json(), status)
    except (ValueError, AssertionError) as e:
        return f"not an OpenAI error body ({str(e)[:200]})"
    return None


# --------------------------------------------------------------------------
# B. Registration routes on a cluster master


class Master:
    """`tllm.server` without --is_local (a cluster master, no workers), as test_web_page.py's
    start_master runs it; the same interface as TllmServer for Victim and the log reports."""

    def __init__(self, server_bin: Path, model: Path, log_dir: Path, name: str, client_size: int = 1):
        self.name = name
        self.port = free_port()
        self.log_dir = log_dir
        self.args = [str(server_bin), "--model_path", str(model), "--http_port", str(self.port),
                     "--grpc_port", str(free_port()), "--hostname", "127.0.0.1", "--client_size", str(client_size),
                     "--threads", "1"]  # fmt: skip
        self.spawns = 0
        self._spawn()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proc(self):
        return self.node.proc

    def _spawn(self):
        self.spawns += 1
        self.node = Node(f"{self.name}-{os.getpid()}-{self.spawns}", self.args, self.log_dir)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(trust_env=False, timeout=2) as http:
            while True:
                assert self.node.alive(), f"the master exited ({self.proc.returncode}):\n{self.log_tail()}"
                try:
                    if http.get(f"{self.base_url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"the master is not up in {STARTUP_TIMEOUT}s:\n{self.log_tail()}"
                time.sleep(0.1)

    def alive(self) -> bool:
        return self.node.alive()

    def restart(self):
        self._spawn()

    def log_tail(self, n: int = 6000) -> str:
        return self.node.text()[-n:]

    def terminate(self) -> int | None:
        return self.node.stop()


class Listener:
    """A TCP port that accepts and closes: a 'worker' every reachability probe reaches."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def _master(server_bin, model_path, log_dir):
    master = Master(server_bin, model_path, log_dir, "hostile-master")
    victim = Victim(master)
    yield victim
    victim.close()
    if master.alive():
        rc = master.terminate()
        assert rc == 0, f"the cluster master: exit code {rc} after SIGTERM:\n{master.log_tail()}"


@pytest.fixture
def master(_master, request) -> Victim:
    request.node._tllm_servers = [*getattr(request.node, "_tllm_servers", []), _master.server]
    return _master


@pytest.fixture(scope="module")
def listener():
    sock = Listener()
    yield sock
    sock.close()


_ids = itertools.count()


def reg_body(listener: Listener, **fields) -> dict:
    body = {"client_id": f"hostile-{next(_ids)}", "host": ["127.0.0.1"], "port": listener.port}
    body.update(fields)
    return body


def registration_answer(layers: int):
    """A 200 to /register_client: the original's shape; on success a range inside the model."""

    def check(r: httpx.Response) -> str | None:
        try:
            a = r.json()
        except ValueError:
            return "the 200 body is not JSON"
        if not isinstance(a, dict) or not isinstance(a.get("msg"), str):
            return "the 200 body has no 'msg'"
        if a["msg"] == "success":
            s, e, rank = a.get("start_idx"), a.get("end_idx"), a.get("pp_rank")
            if not (is_int(s) and is_int(e) and is_int(rank) and 0 <= s < e <= layers and rank >= 0):
                return f"'success' with a range outside the model's {layers} layers"
        return None

    return check


def reg_expect(outcome: str, layers: int) -> Expect:
    return Expect(outcome, on_200=registration_answer(layers))


def registration_cases(listener: Listener, layers: int) -> list[tuple[dict, Expect]]:
    reject = Expect(REJECT)
    either = reg_expect(EITHER, layers)
    cases: list[tuple[dict, Expect]] = []
    # memory (ours, optional) first: the layer plan is weighted by memory only while no worker
    # without one has registered. No crash whatever it is.
    for _label, v in [("2**63-1 first", INT64_MAX), *HOSTILE]:
        expect = either if v is None or (is_int(v) and INT64_MIN <= v <= INT64_MAX) else reject
        cases.append((reg_body(listener, memory=v), expect))
    # Ports: anything that is not 1...65535 is a 400, including values that truncate to a real port.
    for _label, v in HOSTILE + [("65536", 65536), ("65536+port", 65536 + listener.port),
                                ("2**32+port", 2**32 + listener.port), ("-port", -listener.port)]:
        cases.append((reg_body(listener, port=v), Expect(REJECT, status=400)))
    # Ranks and layer ranges: huge or negative beyond -1 (the 'unset' value) are refused.
    for field in ("pp_rank", "start_idx", "end_idx"):
        for _label, v in HOSTILE:
            if v is None or (is_int(v) and -1 <= v <= layers):
                expect = either
            else:
                expect = reject
            cases.append((reg_body(listener, **{field: v}), expect))
    cases += [
        # A stated range past the model's layers is not taken as stated.
        (reg_body(listener, pp_rank=0, start_idx=0, end_idx=layers + 1), either),
        (reg_body(listener, pp_rank=0, start_idx=layers, end_idx=layers + 1), either),
        (reg_body(listener, pp_rank=0, start_idx=0, end_idx=INT64_MAX), reject),
        (reg_body(listener, pp_rank=INT64_MAX, start_idx=0, end_idx=layers), reject),
        (reg_body(listener, pp_rank=0, start_idx=INT64_MIN, end_idx=layers), reject),
        (reg_body(listener, pp_rank=2**31, start_idx=2**31, end_idx=2**31 + 1), reject),
        # Hosts: too many, or not strings.
        (reg_body(listener, host=["127.0.0.1"] * 10_000), reject),
        (reg_body(listener, host=[f"10.0.{i // 256}.{i % 256}" for i in range(10_000)]), reject),
        *[(reg_body(listener, host=h), Expect(REJECT, status=400))
          for h in ([1], [None], [[]], [{}], [True], ["127.0.0.1", 5], 5, True, {}, None)],
        # Odd but well-formed hosts: refused, or the original's 'ping failed'.
        *[(reg_body(listener, host=h), either)
          for h in ([], [""], ["a" * 100_000], ["127.0.0.1\r\nX-Injected: 1"], ["[::1"], ["::::::"],
                    ["127.0.0.1:1"], ["%00"])],
        # Client ids: 1 MB, or not a string.
        (reg_body(listener, client_id="x" * (1 << 20)), reject),
        *[(reg_body(listener, client_id=c), Expect(REJECT, status=400)) for c in (5, None, [], {}, True)],
        (reg_body(listener, client_id=""), either),
    ]  # fmt: skip
    return cases


def test_register_client_hostile_numbers(master, listener, model_shape):
    layers = model_shape[0]
    problems = []
    for body, expect in registration_cases(listener, layers):
        problems += master.check("POST", "/register_client", body, expect)
    assert not problems, report("POST /register_client", problems)


def init_cases(client_id: str, layers: int) -> list[tuple[dict, Expect]]:
    def body(**kw):
        b = {"client_id": client_id, "pp_rank": 0, "start_idx": 0, "end_idx": layers}
        b.update(kw)
        return b

    bad = Expect(REJECT, status=400)
    cases = [(body(end_idx=v), bad) for v in (layers + 1, 2**31, 2**32, INT64_MAX, 2**63, 2**64, HUGE, 1e308, 1.5,
                                              "1", None, [], {}, True, 0, -1, INT64_MIN)]
    cases += [(body(start_idx=v), bad) for v in (-1, -2, INT64_MIN, layers, layers + 1, 2**31, INT64_MAX, 2**63,
                                                 HUGE, 1.5, "1", None, [], {}, True)]
    cases += [
        (body(start_idx=INT64_MIN, end_idx=INT64_MAX), bad),
        (body(start_idx=INT64_MAX - 1, end_idx=INT64_MAX), bad),
        (body(start_idx=layers - 1, end_idx=layers + 1), bad),
    ]
    # pp_rank: 200 (the original's body) or 4xx, no crash; non-integers are 400.
    for _label, v in HOSTILE:
        fits = is_int(v) and INT64_MIN <= v <= INT64_MAX
        cases.append((body(pp_rank=v), Expect(EITHER, on_200=init_answer) if fits or v is None else bad))
    return cases


def init_answer(r: httpx.Response) -> str | None:
    try:
        a = r.json()
    except ValueError:
        return "the 200 body is not JSON"
    return None if isinstance(a, dict) and isinstance(a.get("msg"), str) else "the 200 body has no 'msg'"


def test_init_model_hostile_ranges(master, listener, model_shape):
    """For an unknown client and for a registered one: ranges past the model's layers, negative or
    huge starts are 400 (not 'client not found', not a rewritten range)."""
    layers = model_shape[0]
    problems = []
    problems += master.check("POST", "/init_model", {"client_id": "x" * (1 << 20), "pp_rank": 0, "start_idx": 0,
                                                     "end_idx": 1}, Expect(EITHER, on_200=init_answer))
    for body, expect in init_cases("nobody-registered-this", layers):
        problems += master.check("POST", "/init_model", body, expect)
    r = master.http.post("/register_client", json=reg_body(listener, client_id="init-target"))
    assert r.status_code == 200 and r.json().get("msg") == "success", \
        f"registering init-target: {r.status_code} {r.text}"
    for body, expect in init_cases("init-target", layers):
        problems += master.check("POST", "/init_model", body, expect)
    assert not problems, report("POST /init_model", problems)


def test_master_survived_and_registers(master, model_shape):
    """The cluster master after B: same process, /health, and a well-formed registration answered
    in the original's shape ('ping failed' for a closed port)."""
    problems = master.survived()
    closed = free_port()
    problems += master.check("POST", "/register_client", {"client_id": "late", "host": ["127.0.0.1"], "port": closed},
                             Expect(OK, on_200=registration_answer(model_shape[0])))
    assert not problems, report("the cluster master after the hostile registrations", problems)


# --------------------------------------------------------------------------
# D. The API key on every route however it is spelled

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}
WRONG_AUTH = [
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {KEY}2"},
    {"Authorization": f"Bearer {KEY.upper()}"},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": KEY},
    {"Authorization": f"Basic {KEY}"},
    {"Authorization": f"Token {KEY}"},
    {"X-API-Key": KEY},
]


@pytest.fixture(scope="module")
def _keyed(request, server_bin, model_path, log_dir):
    yield from _victim(request, server_bin, model_path, log_dir, "hostile-keyed", "the keyed server", api_key=KEY)


@pytest.fixture
def keyed(_keyed, request) -> Victim:
    return _reported(_keyed, request)


@pytest.fixture(scope="module")
def keyed_model(_keyed) -> str:
    r = _keyed.http.get("/v1/models", headers=AUTH)
    assert r.status_code == 200, f"GET /v1/models with the key: {r.status_code} {r.text}"
    return r.json()["data"][0]["id"]


def protected_routes(model: str) -> list[tuple[str, str, bytes]]:
    completion = encode({"prompt": "hi", "max_tokens": 1, "temperature": 0})
    chat = encode({"messages": user("hi"), "max_tokens": 1, "temperature": 0})
    return [
        ("POST", COMPLETIONS, completion),
        ("POST", CHAT, chat),
        ("GET", "/v1/models", b""),
        ("GET", f"/v1/models/{model}", b""),
        ("GET", "/metrics", b""),
    ]


PROTECTED_IDS = ["completions", "chat", "models", "model", "metrics"]


def spellings(path: str) -> tuple[list[str], list[str]]:
    """(strict, loose) spellings of `path`. Strict ones reach the route: without the key they get
    401. Loose ones may not match any route: without the key they get 401 when they do (with the
    key they answer 200), else anything but a 2xx or a 5xx."""
    first, _, rest = path[1:].partition("/")
    strict = [path, "/" + path, path + "/", path + "?x=1"]
    loose = ["/./" + path[1:], path.upper(), "/" + path[1:].replace("/", "%2F"), f"/%{ord(first[0]):02X}{path[2:]}",
             f"/%{ord(first[0]):02x}{path[2:]}", path + "%2F", path + "/.", path + "%00", path + "#x",
             "http://127.0.0.1" + path, "http://elsewhere.example" + path]
    if rest:
        strict += [f"/{first}//{rest}", f"/{first}/./{rest}"]
        loose += [f"/{first.upper()}/{rest}", f"/{first}/x/../{rest}", f"/{first}/{rest}//", f"/{first}%2F{rest}"]
    return strict, [s for s in dict.fromkeys(loose) if s not in strict]


RAW_TIMEOUT = 10.0  # a raw request the server neither answers nor closes within this is a problem


def _refusal(r: Raw | NoAnswer) -> str | None:
    """None when `r` is a 401 in OpenAI's shape (nothing of the route's answer)."""
    if isinstance(r, NoAnswer):
        return f"no HTTP answer ({r})"
    return raw_verdict(r, 401)


def _raw(port, method, target, headers, body) -> Raw | NoAnswer:
    try:
        return raw_http(port, method, target, headers, body, timeout=RAW_TIMEOUT)
    except NoAnswer as e:
        return e


def _ws(port, target, headers=None) -> Raw | NoAnswer:
    try:
        return ws_upgrade(port, target, headers, timeout=RAW_TIMEOUT)
    except NoAnswer as e:
        return e


def judge_spelling(label: str, strict: bool, without_key: Raw | NoAnswer, with_key: Raw | NoAnswer, works: int
                   ) -> list[str]:
    """The answers to one spelling of a protected route without a valid key (`label` says how it
    was sent) and with the key. `works`: the
    status of a served request (200, or 101 for the WebSocket). Strict spellings (and loose ones
    the router matched: with the key they work) need a 401 without the key; the others may answer
    anything but a success or a server error, or close the connection, but not stay silent."""
    problems = []
    if isinstance(with_key, Raw) and with_key.status >= 500:
        problems.append(f"{label} with the key\n  a server error: {with_key}")
    if isinstance(with_key, NoAnswer) and with_key.timed_out:
        problems.append(f"{label} with the key\n  {with_key}")
    if strict or (isinstance(with_key, Raw) and with_key.status == works):
        if (p := _refusal(without_key)) is not None:
            why = "" if strict else f" (with the key: {works})"
            problems.append(f"{label}{why}\n  expected 401 in OpenAI's shape: {p}\n  got {without_key}")
    elif isinstance(without_key, NoAnswer):
        if without_key.timed_out:
            problems.append(f"{label}\n  {without_key}")
    elif without_key.status < 300 or without_key.status >= 500:
        problems.append(f"{label}\n  expected no 1xx/2xx and no 5xx\n  got {without_key}")
    return problems


@pytest.mark.parametrize("index", range(len(PROTECTED_IDS)), ids=PROTECTED_IDS)
def test_every_spelling_needs_the_key(keyed, keyed_model, index):
    method, path, body = protected_routes(keyed_model)[index]
    headers = {"Content-Type": "application/json"} if body else {}
    strict, loose = spellings(path)

    def send(target, extra=None, verb=method):
        return _raw(keyed.port, verb, target, {**headers, **(extra or {})}, body if verb == method else b"")

    problems = []
    r = send(path, AUTH)
    if isinstance(r, NoAnswer) or r.status != 200:
        problems.append(f"{method} {path} with the key\n  expected 200\n  got {r}")
    for target in strict + loose:
        problems += judge_spelling(f"{method} {target} without a key", target in strict, send(target),
                                   send(target, AUTH), 200)
    for wrong in WRONG_AUTH:
        problems += judge_spelling(f"{method} {path} with {wrong}", True, send(path, wrong), r, 200)
    problems += judge_spelling(f"{method} {path}?api_key={KEY} (no header)", True, send(f"{path}?api_key={KEY}"),
                               r, 200)
    if method == "GET":
        for target in (path, "/" + path):
            problems += judge_spelling(f"HEAD {target} without a key", False, send(target, verb="HEAD"),
                                       send(target, AUTH, verb="HEAD"), 200)
    problems += keyed.survived()
    assert not problems, report(f"{method} {path} on a server with --api_key", problems)


def test_open_routes_stay_open(keyed):
    problems = []
    for path in ("/", "/health", "/version"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            problems += keyed.check("GET", path, headers=headers, expect=Expect(OK, on_200=lambda r: None))
    assert not problems, report("open routes on a server with --api_key", problems)


WS = "/ws/monitor"


def test_monitor_websocket_needs_the_key(keyed):
    """The upgrade with the key: 101 and the monitor's snapshot; without it (or with a wrong one),
    however the path is spelled: refused with 401, never upgraded."""
    problems = []
    r = _ws(keyed.port, WS, AUTH)
    if isinstance(r, NoAnswer) or r.status != 101:
        problems.append(f"WS {WS} with the key\n  expected 101\n  got {r}")
    else:
        if r.headers.get("sec-websocket-accept") != WS_ACCEPT:
            problems.append(f"WS {WS}: Sec-WebSocket-Accept {r.headers.get('sec-websocket-accept')!r}")
        try:
            assert "model_name" in json.loads(r.frame or b"")
        except (ValueError, AssertionError):
            problems.append(f"WS {WS}: the first frame is not the monitor's snapshot: {(r.frame or b'')[:300]!r}")
    with_key = r
    # Browsers cannot set headers on a WebSocket: the key may come as ?api_key= (docs/server.md).
    r = _ws(keyed.port, f"{WS}?api_key={KEY}")
    if isinstance(r, NoAnswer) or r.status != 101:
        problems.append(f"WS {WS}?api_key={KEY}\n  expected 101\n  got {r}")
    for wrong in ("wrong", f"{KEY}2", ""):
        problems += judge_spelling(f"WS {WS}?api_key={wrong}", True, _ws(keyed.port, f"{WS}?api_key={wrong}"),
                                   with_key, 101)
    for wrong in WRONG_AUTH:
        problems += judge_spelling(f"WS {WS} with {wrong}", True, _ws(keyed.port, WS, wrong), with_key, 101)
    strict, loose = spellings(WS)
    for target in strict + loose:
        # Only the exact path is strict here: the upgrade is decided before routing.
        problems += judge_spelling(f"WS {target} without a key", target == WS, _ws(keyed.port, target),
                                   _ws(keyed.port, target, AUTH), 101)
    problems += keyed.survived()
    assert not problems, report(f"WS {WS} on a server with --api_key", problems)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS, "/" + CHAT])
def test_stream_without_the_key_is_refused_before_any_event(keyed, path):
    body = {"stream": True, "max_tokens": 4, "temperature": 0, "stream_options": {"include_usage": True}}
    body.update({"messages": user("hi")} if path.endswith("chat/completions") else {"prompt": "hi"})
    problems = []
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = _raw(keyed.port, "POST", path, {"Content-Type": "application/json", **headers}, encode(body))
        if (p := _refusal(r)) is not None:
            problems.append(f"POST {path} {headers} {body}\n  expected 401 before any SSE byte: {p}\n  got {r}")
    # With the key the same request streams.
    r = _raw(keyed.port, "POST", path, {"Content-Type": "application/json", **AUTH}, encode(body))
    if isinstance(r, NoAnswer) or r.status != 200 or not r.body.rstrip().endswith(b"data: [DONE]"):
        problems.append(f"POST {path} with the key {body}\n  expected a 200 stream ending with [DONE]\n  got {r}")
    assert not problems, report("streaming on a server with --api_key", problems)


def test_keyed_server_survived(keyed):
    problems = keyed.survived()
    problems += keyed.check("POST", COMPLETIONS, {"prompt": "hi", "max_tokens": 2, "temperature": 0}, Expect(OK),
                            headers=AUTH)
    assert not problems, report("the keyed server after the attempts", problems)


def test_api_key_from_the_environment(start_server):
    """ServerOptions falls back to $TLLM_API_KEY when --api_key is absent."""
    s = start_server("hostile-envkey", env={"TLLM_API_KEY": "k2"})
    problems = []
    for method, path in (("GET", "/v1/models"), ("GET", "/metrics")):
        for headers, status in (({}, 401), ({"Authorization": "Bearer k"}, 401), ({"Authorization": "Bearer k2"}, 200)):
            r = _raw(s.port, method, path, headers, b"")
            problem = (_refusal(r) if status == 401 else
                       None if not isinstance(r, NoAnswer) and r.status == 200 else "not 200")
            if problem is not None:
                problems.append(
                    f"{method} {path} {headers} (TLLM_API_KEY=k2)\n  expected {status}: {problem}\n  got {r}")
    r = _raw(s.port, "GET", "/health", {}, b"")
    if isinstance(r, NoAnswer) or r.status != 200:
        problems.append(f"GET /health without a key (TLLM_API_KEY=k2)\n  expected 200\n  got {r}")
    assert not problems, report("TLLM_API_KEY", problems)

