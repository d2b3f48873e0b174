"""Several clients at once on the shared server: continuous batching must not change greedy
outputs; a client that goes away mid-stream aborts its request; the original project's
benchmark shape (3 concurrent, then 3 sequential chat requests) works.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import time

import aiohttp
import openai
import pytest

from tllm_server_helpers import LONG_PROMPT, REQUEST_TIMEOUT, chat, dumps, user

CONCURRENT_PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Give me a synonym for happy.",
    "Why is the sky blue?",
    "Translate 'good morning' to French.",
    "List two fruits that are red.",
    "What does a bee make?",
    "Describe a cat in one sentence.",
    "What is the opposite of cold?",
    "Tell me a fun fact about octopuses.",
    "How many days are in a week?",
    "Suggest a name for a pet fish.",
    "What do plants need to grow?",
    "Write one line of a poem about rain.",
]
CONCURRENT_MAX_TOKENS = 32


async def _stream_text(aclient: openai.AsyncOpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, str]:
    s = await aclient.chat.completions.create(
        model=model, messages=user(prompt), max_tokens=max_tokens, temperature=0, stream=True
    )
    parts, finish = [], None
    async for c in s:
        if c.choices:
            if c.choices[0].delta.content:
                parts.append(c.choices[0].delta.content)
            if c.choices[0].finish_reason:
                finish = c.choices[0].finish_reason
    return "".join(parts), finish


def test_concurrent_streams_equal_sequential(server, client, model_id):
    assert len(set(CONCURRENT_PROMPTS)) == 16
    alone = {
        p: chat(client, model_id, p, max_tokens=CONCURRENT_MAX_TOKENS).choices[0].message.content
        for p in CONCURRENT_PROMPTS
    }

    async def run_all():
        aclient = server.async_client()
        try:
            return await asyncio.wait_for(
                asyncio.gather(
                    *(_stream_text(aclient, model_id, p, CONCURRENT_MAX_TOKENS) for p in CONCURRENT_PROMPTS)
                ),
                REQUEST_TIMEOUT,
            )
        finally:
            await aclient.close()

    results = asyncio.run(run_all())
    diffs = []
    for p, (text, finish) in zip(CONCURRENT_PROMPTS, results, strict=True):
        assert finish in ("stop", "length"), (p, finish)
        if text != alone[p]:
            diffs.append(f"{p!r}:\n  concurrent {text!r}\n  alone      {alone[p]!r}")
    assert not diffs, f"{len(diffs)} of 16 outputs differ when batched:\n" + "\n".join(diffs)


# --------------------------------------------------------------------------
# Client disconnect


def _open_raw_stream(port: int, body: dict, chunks: int, timeout: float = REQUEST_TIMEOUT):
    """Send a streaming POST over a plain socket and read until `chunks` data lines arrived;
    returns (socket, the response id)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    payload = dumps(body)
    s.sendall(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        + payload
    )
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"data:") < chunks:
        assert time.monotonic() < deadline, f"fewer than {chunks} chunks within {timeout}s: {buf[:2000]!r}"
        got = s.recv(65536)
        assert got, f"server closed the stream early: {buf[:2000]!r}"
        buf += got
    head = buf.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] 200\b", head), f"status line {head!r}"
    m = re.search(rb'"id"\s*:\s*"([^"]+)"', buf)
    assert m, f"no id in the first chunks: {buf[:2000]!r}"
    return s, m.group(1).decode()


def _abort_logged(server, mark, req_id: str, timeout: float = 30.0) -> str | None:
    """The server's log line (after `mark`) for request `req_id` that says it was aborted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log_since(mark).splitlines():
            if req_id in line and "abort" in line.lower():
                return line
        time.sleep(0.2)
    return None


@pytest.mark.parametrize("how", ["close", "reset", "openai-close"])
def test_client_disconnect_aborts_request(server, client, model_id, how):
    mark = server.log_size()
    body = {"model": model_id, "messages": user(LONG_PROMPT), "max_tokens": 2000, "temperature": 0, "stream": True}
    if how == "openai-close":
        c = server.client()
        stream = c.chat.completions.create(
            model=model_id, messages=user(LONG_PROMPT), max_tokens=2000, temperature=0, stream=True
        )
        it = iter(stream)
        first = [next(it) for _ in range(3)]
        req_id = first[0].id
        stream.close()
        c.close()
    else:
        sock, req_id = _open_raw_stream(server.port, body, chunks=3)
        if how == "reset":
            # RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    # The server keeps serving, promptly.
    t0 = time.monotonic()
    r = chat(client, model_id, "Say hi.", max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"a 4-token request took {elapsed:.1f}s after the disconnect"

    line = _abort_logged(server, mark, req_id)
    assert line is not None, (
        f"no log line with request id {req_id!r} and 'abort' within 30s of the client going away; "
        f"log since the request:\n{server.log_since(mark)[-4000:]}"
    )


# --------------------------------------------------------------------------
# The original project's benchmark: 3 concurrent, then 3 sequential chat requests with
# aiohttp, non-streaming, max_tokens 200, model "tt", a random delay before each, 100 s timeout.

BENCH_MESSAGES = [
    [{"role": "user", "content": "Hello, how are you?"}],
    [{"role": "user", "content": "Hello, What's your name?"}],
    [{"role": "system", "content": "You are a helpful AI assistant."}, {"role": "user", "content": "今天天气怎么样"}],
]


def test_original_benchmark_shape(server):
    url = f"{server.base_url}/v1/chat/completions"
    rng = random.Random(8022)

    async def one(messages):
        await asyncio.sleep(rng.random())
        body = {"messages": messages, "model": "tt", "stream": False, "max_tokens": 200}
        async with aiohttp.ClientSession(trust_env=False) as session:
            async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as r:
                text = await r.text()
                if r.status != 200:
                    return r.status, text
                return 200, json.loads(text)["choices"][0]["message"]["content"]

    async def main():
        concurrent = await asyncio.gather(*(one(m) for m in BENCH_MESSAGES))
        sequential = [await one(m) for m in BENCH_MESSAGES]
        return concurrent, sequential

    t0 = time.monotonic()
    concurrent, sequential = asyncio.run(main())
    elapsed = time.monotonic() - t0
    for kind, results in (("concurrent", concurrent), ("sequential", sequential)):
        for msgs, (status, content) in zip(BENCH_MESSAGES, results, strict=True):
            assert status == 200, f"{kind} {msgs[-1]['content']!r}: HTTP {status} {content}"
            assert isinstance(content, str) and content.strip(), f"{kind} {msgs[-1]['content']!r}: empty content"
    # Greedy: the concurrent answers equal the sequential ones.
    assert [c for _, c in concurrent] == [c for _, c in sequential]
    print(f"benchmark shape: 6 requests in {elapsed:.1f}s")
