"""Flags that change the server's behaviour, each on its own short-lived server: --api_key,
--max_queue / --max_batch_size (429), --max_body_bytes (413), --request_timeout, and a clean
exit on SIGTERM while a stream is in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time

import aiohttp
import openai
import pytest

from tllm_server_helpers import (
    LONG_PROMPT,
    REQUEST_TIMEOUT,
    STOP_TIMEOUT,
    assert_serving,
    chat,
    check_error_body,
    check_error_shape,
    dumps,
    user,
    wait_until,
)

CHAT = "/v1/chat/completions"


def _served_model(s) -> str:
    with s.http() as http:
        r = http.get("/v1/models", headers={"Authorization": f"Bearer {s.flags.get('api_key', 'none')}"})
        assert r.status_code == 200, r.text
        return r.json()["data"][0]["id"]


# --------------------------------------------------------------------------
# --api_key

API_KEY = "sk-tllm-e2e-secret"


def test_api_key(start_server):
    s = start_server("api-key", api_key=API_KEY)
    model = _served_model(s)
    body = {"model": model, "messages": user("Hi"), "max_tokens": 2, "temperature": 0}
    with s.http() as http:
        # Readiness and liveness stay open.
        assert http.get("/health").status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": API_KEY},
            {"Authorization": "Basic x"},
        ):
            err = check_error_body(http.post(CHAT, json=body, headers=headers), 401)
            assert err["code"] == "invalid_api_key" or err["type"] == "invalid_api_key", err
            # The next request with the key succeeds.
            ok = http.post(CHAT, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
            assert ok.status_code == 200, ok.text
        check_error_body(http.get("/v1/models"), 401)
        check_error_body(http.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 2}), 401)

    with pytest.raises(openai.AuthenticationError) as e:
        chat(s.client(api_key="sk-wrong"), model, "Hi", max_tokens=2)
    assert e.value.status_code == 401
    good = s.client(api_key=API_KEY)
    assert_serving(good, model)
    assert [m.id for m in good.models.list()] == [model]


# --------------------------------------------------------------------------
# --max_queue / --max_batch_size: a full queue answers 429 with Retry-After


def test_queue_full_429(start_server):
    s = start_server("queue", max_queue=1, max_batch_size=1)
    model = _served_model(s)
    url = f"{s.base_url}{CHAT}"
    # ignore_eos and 2000 tokens: no stream ends by itself while the others arrive (each is held open until all
    # have answered, then closed, which aborts it).
    body = {"model": model, "messages": user(LONG_PROMPT), "max_tokens": 2000, "temperature": 0, "stream": True,
            "ignore_eos": True}
    # --max_batch_size 1 --max_queue 1: one request runs and one waits; while both stay, the scheduler refuses
    # every other (Scheduler.submit), in whichever order they arrive. So exactly 2 of 5 stream and 3 are refused.
    n = 5

    async def main():
        release = asyncio.Event()
        answered = asyncio.Event()  # every request has its status (and a 200 its first chunk)
        results: list = []

        def note(result):
            results.append(result)
            if len(results) == n:
                answered.set()

        async def one(session):
            async with session.post(url, json=body) as r:
                if r.status == 200:
                    await r.content.readline()  # the stream started
                    note((200, dict(r.headers), None))
                    try:
                        await asyncio.wait_for(release.wait(), REQUEST_TIMEOUT)
                    finally:
                        r.close()  # client goes away: the request is aborted
                    return
                note((r.status, dict(r.headers), await r.text()))

        async with aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        ) as session:
            tasks = [asyncio.create_task(one(session)) for _ in range(n)]
            try:
                await asyncio.wait_for(answered.wait(), 60)
            except asyncio.TimeoutError:
                pass  # the assertion below shows what came
            release.set()
            for t in tasks:
                if not t.done():
                    t.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)]
        return results, errors

    results, errors = asyncio.run(main())
    assert not errors, errors
    statuses = [st for st, _, _ in results]
    refused = [(h, t) for st, h, t in results if st == 429]
    assert sorted(statuses) == [200, 200, 429, 429, 429], (
        f"{n} concurrent requests with --max_queue 1 --max_batch_size 1 (1 running + 1 waiting): {statuses}")
    for headers, text in refused:
        retry = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        assert retry is not None, f"429 without Retry-After: {headers}"
        assert re.fullmatch(r"\d+", retry.strip()), f"Retry-After {retry!r} is not delta-seconds"
        err = check_error_shape(json.loads(text), 429)
        assert "rate_limit_exceeded" in (err["type"], err["code"]), err

    # Afterwards (the refused ones honour Retry-After) a good request succeeds.
    client = s.client()
    deadline = time.monotonic() + 60
    while True:
        try:
            assert_serving(client, model)
            break
        except openai.RateLimitError as e:
            assert time.monotonic() < deadline, f"still 429 a minute after the clients went away: {e}"
            time.sleep(min(float(e.response.headers.get("retry-after", "1") or 1), 5))


# --------------------------------------------------------------------------
# --max_body_bytes: 413


def test_body_limit_413(start_server):
    limit = 2048
    s = start_server("body-limit", max_body_bytes=limit)
    model = _served_model(s)
    with s.http() as http:
        # Small enough to sit in the socket buffers: the server may answer before reading it all.
        for size in (limit + 1, 4 * limit):
            body = dumps({"model": model, "messages": user("x" * size), "max_tokens": 2})
            assert len(body) > limit
            r = http.post(CHAT, content=body, headers={"Content-Type": "application/json"})
            check_error_body(r, 413)
            ok = http.post(CHAT, json={"model": model, "messages": user("Hi"), "max_tokens": 2, "temperature": 0})
            assert ok.status_code == 200, ok.text
    client = s.client()
    with pytest.raises(openai.APIStatusError) as e:
        chat(client, model, "y" * (2 * limit), max_tokens=2)
    assert e.value.status_code == 413
    assert_serving(client, model)


# --------------------------------------------------------------------------
# --request_timeout


def test_request_timeout(start_server):
    """--request_timeout 1: a request for 4000 tokens ends within seconds, with the text so far and
    finish_reason "length" (docs/server.md), fewer than 4000 tokens, streamed or not; the server stays
    up and serves the next request."""
    s = start_server("timeout", request_timeout=1)
    model = _served_model(s)
    bound = 30.0  # >> 1 s; 4000 tokens take minutes in a debug build
    max_tokens = 4000
    # ignore_eos: the answer cannot end on its own before the timeout (fast builds finished it in 1 s).
    body = {"model": model, "messages": user(LONG_PROMPT), "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True}
    with s.http(timeout=bound + 30) as http:
        t0 = time.monotonic()
        r = http.post(CHAT, json=body)
        elapsed = time.monotonic() - t0
        assert elapsed < bound, f"took {elapsed:.1f}s with --request_timeout 1"
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["choices"][0]["finish_reason"] == "length", b
        # ...and says it was the time limit, not max_tokens (vLLM's stop_reason field).
        assert b["choices"][0]["stop_reason"] == "request_timeout", b
        assert b["usage"]["completion_tokens"] < max_tokens, b["usage"]

        # Streaming: a finish chunk ("length"), the usage chunk (fewer tokens than asked), then [DONE], within
        # the bound.
        t0 = time.monotonic()
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with http.stream("POST", CHAT, json=streamed) as resp:
            assert resp.status_code == 200, resp.read()
            payloads = [line[5:].strip() for line in resp.iter_lines() if line.startswith("data:")]
        elapsed = time.monotonic() - t0
        assert elapsed < bound, f"stream took {elapsed:.1f}s with --request_timeout 1"
        assert payloads and payloads[-1] == "[DONE]", payloads[-3:]
        chunks = [json.loads(payload) for payload in payloads[:-1]]
        finals = [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")]
        finals = [f for f in finals if f is not None]
        assert finals == ["length"], chunks[-3:]
        closing = [c["choices"][0] for c in chunks if c.get("choices") and c["choices"][0]["finish_reason"]]
        assert closing[0]["stop_reason"] == "request_timeout", closing
        usage = [c["usage"] for c in chunks if not c.get("choices") and c.get("usage")]
        assert len(usage) == 1 and usage[0]["completion_tokens"] < max_tokens, chunks[-3:]

        assert s.alive(), "server died"
        # A tiny request fits in the 1 s budget: a raw 1-token completion.
        ok = http.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 1, "temperature": 0})
        assert ok.status_code == 200, ok.text
        # A completion ended by max_tokens says "length" with no stop_reason.
        assert ok.json()["choices"][0]["finish_reason"] == "length", ok.text
        assert ok.json()["choices"][0]["stop_reason"] is None, ok.text


# --------------------------------------------------------------------------
# SIGTERM with a stream in flight


def test_sigterm_during_stream_exits_zero(start_server):
    s = start_server("sigterm")
    model = _served_model(s)
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=REQUEST_TIMEOUT)
    payload = dumps({"model": model, "messages": user(LONG_PROMPT), "max_tokens": 2000, "stream": True})
    sock.sendall(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    buf = b""
    while b"data:" not in buf:
        got = sock.recv(65536)
        assert got, f"closed before the first chunk: {buf!r}"
        buf += got
    t0 = time.monotonic()
    rc = s.terminate()
    elapsed = time.monotonic() - t0
    sock.close()
    assert rc == 0, f"exit code {rc} after SIGTERM with a stream in flight (None: not within {STOP_TIMEOUT}s)"
    assert elapsed < STOP_TIMEOUT


def _raw_post(port: int, body: dict) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT)
    payload = dumps(body)
    sock.sendall(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        f"Connection: close\r\n\r\n".encode() + payload
    )
    return sock


def _read_all(sock: socket.socket) -> bytes:
    buf = b""
    while got := sock.recv(65536):
        buf += got
    sock.close()
    return buf


def test_sigterm_tells_requests_in_flight_that_they_were_cut(start_server):
    """SIGTERM with a plain request and a stream generating: the plain one gets a 503 in OpenAI's
    shape (not a 200 with a cut answer), the stream an error event and then [DONE]; exit 0."""
    s = start_server("sigterm-inflight")
    model = _served_model(s)
    body = {"model": model, "messages": user(LONG_PROMPT), "max_tokens": 3000, "ignore_eos": True}
    streaming = _raw_post(s.port, {**body, "stream": True})
    buf = b""
    while b"data:" not in buf:
        got = streaming.recv(65536)
        assert got, f"closed before the first chunk: {buf!r}"
        buf += got
    plain = _raw_post(s.port, body)
    # The plain request is generating once the server logs a step beyond the stream's (no sleep):
    # wait until the shared metrics say two requests run.
    with s.http() as http:
        wait_until(lambda: "tllm_requests_running 2" in http.get("/metrics").text.replace(".0", ""), 60)
    assert s.terminate() == 0
    answer = _read_all(plain).decode(errors="replace")
    head, _, payload = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 503"), answer[:500]
    assert "retry-after" in head.lower(), head
    error = json.loads(payload[payload.index("{"):payload.rindex("}") + 1])["error"]
    assert error["code"] == "shutting_down" and error["message"], error
    events = [line[5:].strip() for line in (buf + _read_all(streaming)).decode(errors="replace").splitlines()
              if line.startswith("data:")]
    assert events[-1] == "[DONE]", events[-3:]
    last = json.loads(events[-2])
    assert last.get("error", {}).get("code") == "shutting_down", events[-3:]
    assert not any('"finish_reason":"abort"' in e.replace(" ", "") for e in events), events[-3:]


# --------------------------------------------------------------------------
# OpenBLAS kernel selection (the server re-executes itself when OpenBLAS fell back to SSE3)

PRE_AVX2_CORES = {"prescott", "core2", "penryn", "dunnington", "nehalem", "sandybridge", "atom", "unknown"}


def test_openblas_uses_the_cpus_vector_kernels(server):
    m = re.search(r"OpenBLAS core (\S+)", server.log_text())
    assert m, f"no OpenBLAS core in the startup log:\n{server.log_tail()}"
    with open("/proc/cpuinfo") as f:
        has_avx2 = " avx2" in f.read()
    if has_avx2 and "OPENBLAS_CORETYPE" not in os.environ:
        assert m.group(1).lower() not in PRE_AVX2_CORES, f"OpenBLAS runs its {m.group(1)} kernels on an AVX2 CPU"


# --------------------------------------------------------------------------
# --max_connections


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server writes until it closes (or `timeout` passes)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_max_connections_503_then_serves_again(start_server):
    """With a cap of 4, keep-alive connections are served until 4 are open; the next one is
    answered 503 (Retry-After, OpenAI's error shape) and closed; once connections close,
    requests are served again. (The harness's own connections from start-up may still be
    counted for a moment, so the test fills the cap by asking, not by assuming 4 free slots.)"""
    s = start_server("max-connections", max_connections=4)
    holders: list[socket.socket] = []
    refused = None
    try:
        for _ in range(5):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_first_response(c)
            if answer.startswith(b"HTTP/1.1 200"):
                holders.append(c)
                continue
            refused = answer + _read_answer(c, timeout=10)
            c.close()
            break
        assert 1 <= len(holders) <= 4, f"{len(holders)} connections served at once with --max_connections 4"
        assert refused is not None, "a fifth connection was served with --max_connections 4"
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), refused[:300]
        assert b"\r\nretry-after: 1" in head.lower(), head
        assert check_error_shape(json.loads(body))["code"] == "too_many_connections", body
    finally:
        for h in holders:
            h.close()

    def served() -> bool:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return _read_answer(c, timeout=5).startswith(b"HTTP/1.1 200")

    # Closed connections are counted out when the server sees them close: poll until it has.
    assert wait_until(served, timeout=10), "no request served within 10 s after the connections closed"
    assert_serving(s.client(), _served_model(s))


def _read_first_response(sock: socket.socket) -> bytes:
    """One `/health` response on a keep-alive connection (headers plus its Content-Length body)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)) if b"ength" in head else 0
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return data
