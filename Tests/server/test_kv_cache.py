"""The paged KV cache through the API (issue 6): prefix reuse visible in /metrics and invisible
in the text, a tiny cache that queues instead of failing, pages freed on finish and on abort,
and /metrics in Prometheus text format whose counters move.
"""

from __future__ import annotations

import concurrent.futures

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tllm_server_helpers import REQUEST_TIMEOUT, wait_until

SYSTEM = (
    "You are the help desk of a small public library in a river town. Answer briefly and kindly. "
    "The main branch opens at nine and closes at six on weekdays; on Saturdays it closes at one. "
    "The river branch opens at ten and closes at five, and is closed on Mondays. Books can be "
    "borrowed for three weeks and renewed twice online unless someone else has reserved them. "
    "Printing costs ten cents a page. Never invent book titles or opening hours."
)
QUESTIONS = [
    "When does the river branch open on Tuesday?",
    "How much does printing cost?",
    "Can I renew a book three times?",
    "Is the main branch open on Saturday afternoon?",
]
# Page size of SmolLM2-135M's float32 cache: 30 layers x (K + V) x 16 positions x 192 floats.
PAGE_BYTES = 30 * 2 * 16 * 192 * 4


def metrics(http: httpx.Client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, parsed by prometheus_client: {(name, sorted labels): value}."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def ask(http: httpx.Client, question: str, max_tokens: int = 24, usage: list | None = None) -> str:
    body = {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    r = http.post("/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT)
    assert r.status_code == 200, r.text
    if usage is not None:
        usage.append(r.json()["usage"])
    return r.json()["choices"][0]["message"]["content"]


def pages_settle(http: httpx.Client, timeout: float = 10.0) -> dict:
    """Waits until no page is in use by a sequence; returns the metrics then."""
    settled = wait_until(lambda: value(metrics(http), "tllm_kv_cache_pages", state="used") == 0, timeout)
    assert settled, f"KV pages still in use after {timeout} s"
    return metrics(http)


def test_prefix_reuse_shows_in_metrics_and_not_in_the_text(start_server):
    reusing = start_server("prefix-on")
    plain = start_server("prefix-off", disable_prefix_cache=True)
    with reusing.http() as a, plain.http() as b:
        before = metrics(a)
        first = ask(a, QUESTIONS[0])
        assert first == ask(b, QUESTIONS[0])
        after_first = metrics(a)
        # Later questions share the long system prompt: its pages are reused, the text is the same.
        for question in QUESTIONS[1:]:
            hit_before = value(metrics(a), "tllm_prefix_cache_hit_tokens_total")
            usage = []
            assert ask(a, question, usage=usage) == ask(b, question), question
            hit = value(metrics(a), "tllm_prefix_cache_hit_tokens_total") - hit_before
            assert hit >= 100, f"{question!r}: only {hit} prompt tokens reused"
            # OpenAI's usage field says so too.
            assert usage[0]["prompt_tokens_details"]["cached_tokens"] == hit
        end = metrics(a)
        assert value(end, "tllm_prefix_cache_hits_total") - value(after_first, "tllm_prefix_cache_hits_total") >= 3
        assert value(end, "tllm_prefix_cache_lookups_total") - value(before, "tllm_prefix_cache_lookups_total") == 4
        assert value(metrics(b), "tllm_prefix_cache_hit_tokens_total") == 0
        assert value(metrics(b), "tllm_kv_cache_pages", state="cached") == 0
        assert value(end, "tllm_kv_cache_pages", state="cached") > 0


def test_metrics_parse_and_counters_move(server):
    with server.http() as http:
        before = metrics(http)
        # Every family the issue names is there.
        names = {name for name, _ in before}
        for family in (
            "tllm_requests_total",
            "tllm_prompt_tokens_total",
            "tllm_completion_tokens_total",
            "tllm_time_to_first_token_seconds_bucket",
            "tllm_inter_token_latency_seconds_bucket",
            "tllm_batch_sequences_bucket",
            "tllm_requests_waiting",
            "tllm_kv_cache_pages",
            "tllm_prefix_cache_hits_total",
            "tllm_prefix_cache_hit_tokens_total",
        ):
            assert family in names, f"{family} missing from /metrics"
        r = http.post(
            "/v1/completions",
            json={"prompt": "The three primary colours are", "max_tokens": 6, "temperature": 0, "ignore_eos": True},
            timeout=REQUEST_TIMEOUT,
        )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        after = metrics(http)
    assert value(after, "tllm_requests_total", outcome="length") == value(before, "tllm_requests_total", outcome="length") + 1
    assert value(after, "tllm_completion_tokens_total") - value(before, "tllm_completion_tokens_total") == 6
    assert value(after, "tllm_prompt_tokens_total") - value(before, "tllm_prompt_tokens_total") == usage["prompt_tokens"]
    assert value(after, "tllm_time_to_first_token_seconds_count") == value(before, "tllm_time_to_first_token_seconds_count") + 1
    assert value(after, "tllm_inter_token_latency_seconds_count") - value(before, "tllm_inter_token_latency_seconds_count") == 5


def test_a_tiny_cache_queues_sixteen_long_requests_and_frees_every_page(server, start_server):
    # 24 pages (384 positions) for 16 requests of ~150 prompt + 32 completion positions each.
    tiny = start_server("tiny-kv", kv_cache_memory=str(24 * PAGE_BYTES), disable_prefix_cache=True)
    questions = [f"{q} Also, please tell me about request number {i}." for i in range(4) for q in QUESTIONS]
    with server.http() as roomy:
        expected = [ask(roomy, q, max_tokens=32) for q in questions]

    def run(question):
        with tiny.http() as http:
            return ask(http, question, max_tokens=32)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        got = list(pool.map(run, questions))
    assert got == expected
    with tiny.http() as http:
        end = pages_settle(http)
        assert value(end, "tllm_kv_cache_pages", state="free") == 24
        assert value(end, "tllm_kv_cache_sequences") == 0
        assert value(end, "tllm_requests_total", outcome="length") + value(end, "tllm_requests_total", outcome="stop") == 16
        assert value(end, "tllm_requests_total", outcome="error") == 0


def test_an_aborted_stream_frees_its_pages_at_once(start_server):
    s = start_server("abort-kv", disable_prefix_cache=True)
    body = {
        "messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
        "max_tokens": 2000,
        "temperature": 0,
        "stream": True,
    }
    with s.http() as http, s.http() as probe:
        with http.stream("POST", "/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT) as r:
            assert r.status_code == 200
            lines = 0
            used = 0.0
            for line in r.iter_lines():
                lines += line.startswith("data: ")
                # Look while the stream is being read: leaving the loop closes the line iterator,
                # which may close the connection, and the server frees the pages at once.
                if lines == 10:
                    used = value(metrics(probe), "tllm_kv_cache_pages", state="used")
                if lines >= 20:
                    break
            assert used > 0
        # Freed by the abort, not by the 60 s idle release: the pages settle well inside 60 s
        # and the request is counted as aborted (no wall-clock bound on a busy machine).
        end = pages_settle(http, timeout=40)
        assert value(end, "tllm_requests_total", outcome="abort") == 1
