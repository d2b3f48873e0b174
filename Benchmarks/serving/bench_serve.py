#!/usr/bin/env python3
"""Serving benchmark: N concurrent streaming clients against an OpenAI-compatible server.

    bench_serve.py --base-url http://127.0.0.1:8022 --concurrency 4 --num-requests 16 \
        [--prompt-tokens 128] [--output-tokens 64] [--shared-prefix-tokens 0 --suffix-tokens 16] \
        [--warmup 1] [--seed 0] [--label NAME] [--json-out FILE]
    bench_serve.py --table FILE [--reference LABEL]

Every request is `POST /v1/completions` with `stream: true`, `stream_options.include_usage`,
`temperature: 0`, `ignore_eos: true` and `max_tokens`, on a distinct prompt of random English words
(from `--seed` and the workload, so other workloads get other prompts). Tokens per word are measured
once from the server's `usage.prompt_tokens`, so two servers with the same tokenizer get the same
prompts. `--shared-prefix-tokens P` makes every
prompt one common P-token prefix plus a distinct `--suffix-tokens` suffix; the warm-up requests then
carry the prefix, so a prefix cache can be populated before the measured requests.

A run prints a Markdown table row and appends a record to the JSON array in `--json-out`: mean
prompt / output tokens (from `usage`, else output = content chunks), TTFT p50 / p99, inter-token
latency p50 / p99 (gaps between consecutive content chunks of one request), end-to-end latency
p50, output tokens/s (all output tokens / wall time), requests/s, errors (a failed request is
counted, never fatal). `--table` prints the records of such a file, with each run's output
tokens/s and TTFT p50 divided by those of the `--reference` label's run of the same workload.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import random
import sys
import time

import aiohttp

WORDS = """
the of and to in is was for on that with as by at from his her they which an be this had not but
are were have one all their there been has more when who will would no out so up into can said
time only new some could these two may first then any like other over also after most made such
where through back years much before good well way down should because each just those people how
too little state world very still own see men work long get here between both life being under
never day same another know while last might great old year off come since against go came right
used take three house place around however small found water again part home every thousand light
river garden morning winter summer window table letter story music market village mountain island
forest teacher doctor engine bridge harbor castle kitchen station library question answer reason
number family friend country city school color paper money animal picture power voice problem
chapter history science nature silver golden quiet bright simple early strong gentle narrow heavy
careful sudden ancient modern distant yellow purple orange green blue black white brown red soft
walk carry follow travel listen remember wonder build open close begin finish write read speak
learn teach bring hold watch climb sing dance paint cook clean plant grow change move rest sleep
dream laugh smile hope trust study visit return explain decide promise measure gather arrive
""".split()


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks, like numpy's default."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def stream_completion(session: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int) -> dict:
    """One streaming completion: {"error"} or the token timestamps and usage."""
    body = {"model": "default", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    chunks: list[float] = []  # arrival time of every chunk that carries text
    usage = None
    try:
        async with session.post(url, json=body) as response:
            if response.status != 200:
                return {"error": f"HTTP {response.status}: {(await response.text())[:200]}"}
            async for raw in response.content:  # one SSE line at a time
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return {"error": str(chunk["error"])[:200]}
                usage = chunk.get("usage") or usage
                if any(choice.get("text") for choice in chunk.get("choices") or []):
                    chunks.append(time.perf_counter())
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    if not chunks:
        return {"error": "no content in the stream"}
    usage = usage or {}
    return {"start": start, "end": time.perf_counter(), "chunks": chunks,
            "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
            "output_tokens": usage.get("completion_tokens") or len(chunks)}


def random_words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


async def tokens_per_word(session: aiohttp.ClientSession, url: str, seed: int) -> float:
    """Prompt tokens per word, from the difference of two prompts (so BOS and the like cancel)."""
    text = random_words(random.Random(seed), 300)
    short, long = [await stream_completion(session, url, t, 1) for t in (" ".join(text.split()[:100]), text)]
    if (long.get("prompt_tokens") or 0) > (short.get("prompt_tokens") or math.inf):
        return (long["prompt_tokens"] - short["prompt_tokens"]) / 200
    print("bench_serve: no usage.prompt_tokens, assuming one token per word", file=sys.stderr)
    return 1.0


async def run(args: argparse.Namespace) -> dict:
    url = args.base_url.rstrip("/") + "/v1/completions"
    shape = (f"prefix {args.shared_prefix_tokens}+{args.suffix_tokens}" if args.shared_prefix_tokens
             else f"prompt {args.prompt_tokens}")
    workload = f"{shape}, out {args.output_tokens}, c={args.concurrency}"
    # The same prompts for the same workload on every server, but other prompts for other workloads:
    # a server's prompt cache must not serve one run from the one before.
    rng = random.Random(f"{args.seed} {workload}")
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    # A connection per request: llama-server closes idle keep-alive connections, and a request on a
    # pooled connection the server has just closed fails ("Can not write request body").
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        ratio = await tokens_per_word(session, url, args.seed)
        prefix = random_words(rng, round(args.shared_prefix_tokens / ratio)) if args.shared_prefix_tokens else ""

        def make_prompt() -> str:
            tokens = args.suffix_tokens if prefix else args.prompt_tokens
            return (prefix + " " if prefix else "") + random_words(rng, max(1, round(tokens / ratio)))

        warmups = [make_prompt() for _ in range(max(args.warmup, 1 if args.shared_prefix_tokens else 0))]
        prompts = [make_prompt() for _ in range(args.num_requests)]
        for prompt in warmups:
            await stream_completion(session, url, prompt, args.output_tokens)

        queue = list(reversed(prompts))
        results: list[dict] = []

        async def client() -> None:
            while queue:
                results.append(await stream_completion(session, url, queue.pop(), args.output_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        wall = time.perf_counter() - start

    done = [r for r in results if "error" not in r]
    for error in sorted({r["error"] for r in results if "error" in r}):
        print(f"bench_serve: error: {error}", file=sys.stderr)
    ttft = [(r["chunks"][0] - r["start"]) * 1000 for r in done]
    itl = [(b - a) * 1000 for r in done for a, b in zip(r["chunks"], r["chunks"][1:])]
    e2e = [(r["end"] - r["start"]) * 1000 for r in done]
    output = sum(r["output_tokens"] for r in done)
    return {
        "label": args.label, "workload": workload, "base_url": args.base_url,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "requests": len(results), "concurrency": args.concurrency, "errors": len(results) - len(done),
        "prompt_tokens_mean": mean([r["prompt_tokens"] for r in done if r["prompt_tokens"] is not None]),
        "cached_tokens_mean": mean([r["cached_tokens"] for r in done if r["cached_tokens"] is not None]),
        "output_tokens_mean": mean([r["output_tokens"] for r in done]),
        "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
        "itl_p50_ms": percentile(itl, 50), "itl_p99_ms": percentile(itl, 99),
        "e2e_p50_ms": percentile(e2e, 50),
        "output_tok_s": output / wall, "requests_s": len(done) / wall, "wall_s": wall,
    }


COLUMNS = [  # (header, record key, format)
    ("server", "label", "{}"), ("workload", "workload", "{}"), ("requests", "requests", "{}"),
    ("prompt tok", "prompt_tokens_mean", "{:.0f}"), ("cached tok", "cached_tokens_mean", "{:.0f}"),
    ("output tok", "output_tokens_mean", "{:.0f}"),
    ("TTFT p50 ms", "ttft_p50_ms", "{:.0f}"), ("TTFT p99 ms", "ttft_p99_ms", "{:.0f}"),
    ("ITL p50 ms", "itl_p50_ms", "{:.1f}"), ("ITL p99 ms", "itl_p99_ms", "{:.1f}"),
    ("E2E p50 ms", "e2e_p50_ms", "{:.0f}"), ("output tok/s", "output_tok_s", "{:.1f}"),
    ("req/s", "requests_s", "{:.2f}"), ("errors", "errors", "{}"),
]


def cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def print_table(records: list[dict], reference: str | None) -> None:
    """All records grouped by workload; with a reference label, the ratios to its run."""
    headers = [header for header, _, _ in COLUMNS]
    if reference:
        headers += [f"tok/s ÷ {reference}", f"TTFT p50 ÷ {reference}"]
    print(row(headers))
    print(row(["---"] * len(headers)))
    workloads = list(dict.fromkeys(r["workload"] for r in records))
    for workload in workloads:
        group = [r for r in records if r["workload"] == workload]
        base = next((r for r in group if r["label"] == reference), None)
        for record in group:
            cells = [cell(record[key], fmt) for _, key, fmt in COLUMNS]
            if reference:
                ratios = [record[key] / base[key] if base and base[key] and record[key] else None
                          for key in ("output_tok_s", "ttft_p50_ms")]
                cells += ["–" if record is base else cell(ratio, "{:.2f}") for ratio in ratios]
            print(row(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8022")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--num-requests", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128, help="approximate prompt length")
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--shared-prefix-tokens", type=int, default=0, help="common prefix of every prompt")
    parser.add_argument("--suffix-tokens", type=int, default=16, help="distinct suffix after the shared prefix")
    parser.add_argument("--warmup", type=int, default=1, help="requests sent first and not counted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per request")
    parser.add_argument("--label", default="server")
    parser.add_argument("--json-out", help="JSON array to append this run's record to")
    parser.add_argument("--table", metavar="FILE", help="print the records of a --json-out file and exit")
    parser.add_argument("--reference", help="with --table: the label the ratios are relative to")
    args = parser.parse_args()

    if args.table:
        with open(args.table) as f:
            print_table(json.load(f), args.reference)
        return
    record = asyncio.run(run(args))
    print_table([record], None)
    if args.json_out:
        records = []
        if os.path.exists(args.json_out) and os.path.getsize(args.json_out):
            with open(args.json_out) as f:
                records = json.load(f)
        with open(args.json_out, "w") as f:
            json.dump(records + [record], f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
