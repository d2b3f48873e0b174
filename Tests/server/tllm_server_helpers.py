"""Helpers shared by the tests of Tests/server (plain functions; fixtures live in conftest.py).

The module name is unique on purpose: pytest puts both Tests/interop and Tests/server on
sys.path when they run in one invocation.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

# Prompts (single user messages). LONG_PROMPT makes SmolLM2 write a long numbered list: it does
# not stop early, which the max_tokens / timeout / disconnect / queue tests rely on.
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "今天天气怎么样",  # non-ASCII prompt and output: incremental UTF-8 decoding
]
LONG_PROMPT = "Count from 1 to 500, separated by commas."
STORY_PROMPT = "Write a long story about a dragon who learns to paint."
# Short chat prompts the cluster tests compare across deployments.
CLUSTER_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Why do cats purr?",
]

FINISH_REASONS = ("stop", "length")

# A chat template for `--chat_template` that makes SmolLM2 a "thinking" model (test_reasoning.py,
# test_web_page.py): SmolLM2's turn format with a thinking block, opened in the generation prompt unless
# enable_thinking is false (then closed empty, as Qwen3's template does), an assistant turn's
# reasoning_content rendered back before its content, and an error for a string enable_thinking.
THINKING_TEMPLATE = (
    "{%- if enable_thinking is defined and enable_thinking is string %}"
    "{{- raise_exception('enable_thinking must be a boolean') }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.reasoning_content is defined and message.reasoning_content %}"
    "{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{- '<think>\\n' }}{%- endif %}"
    "{%- endif %}"
)

STARTUP_TIMEOUT = 60.0  # seconds for GET /health to answer 200
STOP_TIMEOUT = 10.0  # seconds for a graceful exit (code 0) after SIGTERM
REQUEST_TIMEOUT = 300.0  # one HTTP request (debug builds on a busy 2-core machine are slow)
GENERATE_TIMEOUT = 300.0  # one `tllm-generate` run
THREADS = 2


REPO_ROOT = Path(__file__).resolve().parents[2]


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


# --------------------------------------------------------------------------
# Chat and completions through the openai client


def chat(client: openai.OpenAI, model: str, prompt, **kw):
    """Non-streaming chat completion of one user message; greedy unless told otherwise. Checks
    the response's shape and returns it."""
    kw.setdefault("temperature", 0)
    r = client.chat.completions.create(model=model, messages=user(prompt), **kw)
    check_chat_completion(r, kw.get("max_tokens"))
    return r


def check_chat_completion(r, max_tokens: int | None = None):
    assert r.object == "chat.completion", r
    assert isinstance(r.id, str) and r.id, r
    assert isinstance(r.created, int) and r.created > 0, r
    assert isinstance(r.model, str) and r.model, r
    assert len(r.choices) == 1, r
    ch = r.choices[0]
    assert ch.index == 0, r
    assert ch.message.role == "assistant", r
    assert isinstance(ch.message.content, str), r
    assert ch.finish_reason in FINISH_REASONS, r
    check_usage(r.usage, max_tokens)
    if max_tokens is not None and ch.finish_reason == "length":
        assert r.usage.completion_tokens == max_tokens, f"finish_reason length but usage {r.usage}"


def check_usage(u, max_tokens: int | None = None):
    assert u is not None, "no usage"
    assert u.prompt_tokens > 0, u
    assert u.completion_tokens >= 0, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    if max_tokens is not None:
        assert u.completion_tokens <= max_tokens, f"{u} for max_tokens {max_tokens}"


@dataclass
class Streamed:
    text: str
    deltas: list[str]
    finish_reason: str | None
    usage: object | None
    ids: set = field(default_factory=set)
    chunks: list = field(default_factory=list)


def _check_stream(chunks, kind: str) -> Streamed:
    """Invariants of an OpenAI stream (chunks as the openai client parsed them)."""
    assert chunks, "empty stream"
    deltas: list[str] = []
    finish = None
    usage = None
    ids = set()
    role_seen = False
    after_finish_usage_only = False
    for i, c in enumerate(chunks):
        ids.add(c.id)
        if kind == "chat":
            assert c.object == "chat.completion.chunk", c
        else:
            assert c.object == "text_completion", c
        if not c.choices:
            # The usage chunk (stream_options.include_usage): choices [] and usage set, after
            # the finish chunk, exactly once, last.
            assert c.usage is not None, f"chunk {i} has neither choices nor usage: {c}"
            assert usage is None, "two usage chunks"
            assert finish is not None, "usage chunk before the finish_reason chunk"
            usage = c.usage
            after_finish_usage_only = True
            continue
        assert not after_finish_usage_only, f"chunk {i} after the usage chunk: {c}"
        assert getattr(c, "usage", None) is None, f"chunk {i} with choices carries usage: {c}"
        assert len(c.choices) == 1 and c.choices[0].index == 0, c
        ch = c.choices[0]
        assert finish is None, f"chunk {i} after the finish_reason chunk: {c}"
        if kind == "chat":
            if ch.delta.role is not None:
                assert ch.delta.role == "assistant", c
                role_seen = True
            if i == 0:
                assert ch.delta.role == "assistant", f"first chunk's delta has no role assistant: {c}"
            text = ch.delta.content
        else:
            text = ch.text
        if text:
            deltas.append(text)
        if ch.finish_reason is not None:
            assert ch.finish_reason in FINISH_REASONS, c
            finish = ch.finish_reason
    assert finish is not None, "no chunk with a finish_reason"
    assert len(ids) == 1, f"chunks carry different ids: {ids}"
    if kind == "chat":
        assert role_seen
    return Streamed("".join(deltas), deltas, finish, usage, ids, list(chunks))


def stream_chat(client: openai.OpenAI, model: str, prompt, **kw) -> Streamed:
    kw.setdefault("temperature", 0)
    with client.chat.completions.create(model=model, messages=user(prompt), stream=True, **kw) as s:
        chunks = list(s)
    out = _check_stream(chunks, "chat")
    if out.usage is not None:
        check_usage(out.usage, kw.get("max_tokens"))
    return out


def completion(client: openai.OpenAI, model: str, prompt, **kw):
    kw.setdefault("temperature", 0)
    r = client.completions.create(model=model, prompt=prompt, **kw)
    assert r.object == "text_completion", r
    assert isinstance(r.id, str) and r.id, r
    assert len(r.choices) == 1 and r.choices[0].index == 0, r
    assert isinstance(r.choices[0].text, str), r
    assert r.choices[0].finish_reason in FINISH_REASONS, r
    check_usage(r.usage, kw.get("max_tokens"))
    return r


def stream_completion(client: openai.OpenAI, model: str, prompt, **kw) -> Streamed:
    kw.setdefault("temperature", 0)
    with client.completions.create(model=model, prompt=prompt, stream=True, **kw) as s:
        chunks = list(s)
    out = _check_stream(chunks, "completion")
    if out.usage is not None:
        check_usage(out.usage, kw.get("max_tokens"))
    return out


# --------------------------------------------------------------------------
# Raw HTTP


def check_error_body(r: httpx.Response, status: int) -> dict:
    """`r` is an error in OpenAI's shape with this status; returns the `error` object."""
    assert r.status_code == status, f"expected HTTP {status}, got {r.status_code}: {r.text[:2000]}"
    try:
        body = r.json()
    except ValueError:
        raise AssertionError(f"HTTP {status} body is not JSON: {r.text[:2000]!r}") from None
    return check_error_shape(body, status)


def check_error_shape(body, status: int | None = None) -> dict:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an OpenAI error: {body!r}"
    err = body["error"]
    for key in ("message", "type", "param", "code"):
        assert key in err, f"error object has no {key!r}: {body!r}"
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], (str, int)), body
    return err


def sse_data(r: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response being streamed (until the body ends)."""
    out = []
    for line in r.iter_lines():
        if line.startswith("data:"):
            out.append(line[5:].strip())
    return out


def sse_post(http: httpx.Client, path: str, body: dict, headers: dict | None = None):
    """POST a streaming request; returns (response, [data payloads]) with the body read."""
    with http.stream("POST", path, json=body, headers=headers or {}) as r:
        if r.status_code != 200:
            r.read()
            return r, []
        return r, sse_data(r)


def assert_serving(client: openai.OpenAI, model: str):
    """A good request after a bad one: the server still answers."""
    r = chat(client, model, "Say hi.", max_tokens=2)
    assert r.choices[0].finish_reason in FINISH_REASONS


def wait_until(pred, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def chat_body(model: str, prompt, **kw) -> dict:
    body = {"model": model, "messages": user(prompt), "temperature": 0}
    body.update(kw)
    return body


def dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# --------------------------------------------------------------------------
# Cluster processes (tllm.server without --is_local, tllm.client, the Python peers)


_handed_out: set[int] = set()
_port_random = random.Random(os.urandom(16))  # not the global generator, which tests may seed


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    """Whether a server could listen on `port` now (SO_REUSEADDR, as our servers bind)."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in (97, 99):  # no IPv6 here: EAFNOSUPPORT, EADDRNOTAVAIL
                continue
            return False
    return True


def free_port() -> int:
    """A TCP port nothing listens on, for a process about to bind it.

    Taken below the kernel's ephemeral range: outgoing connections get their source ports from
    that range, so none can take this port between this check and the server's bind (a port
    from bind(0) could be). Never the same port twice in this process, so that two calls
    before the first bind cannot collide."""
    low = _ephemeral_low()
    for _ in range(2000):
        port = _port_random.randint(max(1024, low - 12000), low - 1)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port below the ephemeral range ({low})")


class Node:
    """One process, stdout and stderr to a log file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None):
        """`env`: variables added to the test's environment for this process."""
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.stdout = log_dir / f"{name}.stdout"
        with open(self.log, "wb") as err, open(self.stdout, "wb") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO_ROOT,
                                         env={**os.environ, **env} if env else None)

    def text(self) -> str:
        return self.log.read_text(errors="replace") + self.stdout.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float, nodes=()) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text()):
                return m
            for node in (self, *nodes):
                assert node.alive(), f"{node.name} exited ({node.proc.returncode}):\n{logs([self, *nodes])}"
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s:\n{logs([self, *nodes])}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def logs(nodes) -> str:
    return "\n".join(f"--- {n.name}\n{n.text()[-4000:]}" for n in nodes)


def wait_until_generating(http, nodes, timeout: float, tag: str = "cluster") -> None:
    """Until a one-token chat completes through `http` (every layer covered, SetConfig done);
    fails at once if one of `nodes` exits, or after `timeout` s with the last answer and the logs."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for node in nodes:
            assert node.alive(), f"{node.name} exited ({node.proc.returncode}):\n{logs(nodes)}"
        try:
            r = http.post("/v1/chat/completions", json={"messages": user("Hi"), "max_tokens": 1})
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.5)
    raise AssertionError(f"{tag}: not ready in {timeout}s (last answer {last}):\n{logs(nodes)}")


class TllmServer:
    """A running `tllm.server --is_local` on 127.0.0.1:<free port>, ready (GET /health == 200)."""

    def __init__(self, binary: Path, model: Path, log_dir: Path, name: str, env: dict[str, str] | None = None,
                 **flags):
        """`env`: variables added to the test's environment for the process (default: none added)."""
        self.binary = binary
        self.model = model
        self.name = name
        self.env = env
        self.flags = flags
        self.log_dir = log_dir
        self.returncode: int | None = None
        self.proc: subprocess.Popen | None = None
        self.spawns = 0
        self.stopped = False  # by terminate(), not by a crash
        # Log tails of earlier processes of this server that died (see `restart`).
        self.crashes: list[str] = []
        for _ in range(3):
            self.port = free_port()
            self._spawn()
            if self._wait_ready():
                return
        raise AssertionError(f"`{self.cmdline}` never became ready; logs:\n{self.log_tail()}")

    def restart(self):
        """A new process on the same port (clients keep their base URL), after this one died or
        was stopped."""
        assert not self.alive()
        if not self.stopped:
            self.crashes.append(f"`{self.cmdline}` exited with {self.proc.returncode}; logs:\n{self.log_tail()}")
        self.stopped = False
        self._spawn()
        if not self._wait_ready():
            raise AssertionError(f"could not restart `{self.cmdline}`: port {self.port} is taken")

    # -- process

    def _spawn(self):
        args = [
            str(self.binary),
            "--model_path", str(self.model),
            "--is_local",
            "--http_port", str(self.port),
            "--hostname", "127.0.0.1",
            "--threads", str(THREADS),
        ]  # fmt: skip
        for k, v in self.flags.items():
            args += [f"--{k}"] if v is True else [f"--{k}", str(v)]  # True: a flag without a value
        self.args = args
        self.spawns += 1
        stem = f"{self.name}-{os.getpid()}-{self.spawns}"
        self.stderr_path = self.log_dir / f"{stem}.stderr"
        self.stdout_path = self.log_dir / f"{stem}.stdout"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO_ROOT,
                                         env={**os.environ, **self.env} if self.env else None)

    @property
    def cmdline(self) -> str:
        return " ".join(self.args)

    def _wait_ready(self) -> bool:
        """True when ready; False when the port was taken by someone else (retry); raises otherwise."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while time.monotonic() < deadline:
                rc = self.proc.poll()
                if rc is not None:
                    logs = self.log_text()
                    if re.search(r"address already in use|EADDRINUSE|errno: 98", logs, re.I):
                        return False
                    raise AssertionError(
                        f"`{self.cmdline}` exited ({rc}) before it was ready; logs:\n{self.log_tail()}"
                    )
                try:
                    if http.get(f"{self.base_url}/health").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        self.kill()
        raise AssertionError(
            f"`{self.cmdline}`: GET /health not 200 within {STARTUP_TIMEOUT}s; logs:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; the exit code, or None when it did not exit in time (then it is killed)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- logs

    def log_text(self) -> str:
        """stderr then stdout, whole (the request log may go to either)."""
        parts = []
        for p in (self.stderr_path, self.stdout_path):
            try:
                parts.append(p.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    def log_tail(self, n: int = 6000) -> str:
        out = []
        for label, p in (("stderr", self.stderr_path), ("stdout", self.stdout_path)):
            try:
                text = p.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                out.append(f"--- {label} ({p}) ---\n{_excerpt(text, n)}")
        return "\n".join(out) or "(no output)"

    def log_size(self) -> tuple[int, int]:
        return tuple(p.stat().st_size if p.exists() else 0 for p in (self.stderr_path, self.stdout_path))

    def log_since(self, mark: tuple[int, int]) -> str:
        parts = []
        for p, start in zip((self.stderr_path, self.stdout_path), mark, strict=True):
            try:
                with open(p, "rb") as f:
                    f.seek(start)
                    parts.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "\n".join(parts)

    # -- clients

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "sk-tllm-test", **kw) -> openai.OpenAI:
        kw.setdefault("timeout", REQUEST_TIMEOUT)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, max_retries=0, **kw)

    def async_client(self, api_key: str = "sk-tllm-test", **kw) -> openai.AsyncOpenAI:
        kw.setdefault("timeout", REQUEST_TIMEOUT)
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, max_retries=0, **kw)

    def http(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", REQUEST_TIMEOUT)
        return httpx.Client(base_url=self.base_url, trust_env=False, **kw)


def _excerpt(text: str, n: int) -> str:
    """The last n characters, or, after a crash, n characters from just before it (a Swift
    backtrace is long; its first lines say what happened)."""
    m = re.search(r"Fatal error|\*\*\* Program crashed|\*\*\* Signal \d+", text)
    if m:
        start = max(0, m.start() - 2000)
        return text[start : start + n] + ("\n[...]" if len(text) > start + n else "")
    return text[-n:]
