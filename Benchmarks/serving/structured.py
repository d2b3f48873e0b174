"""Structured outputs and tools: what the grammar mask and the tool offer cost, in one run.

Starts `tllm.server --is_local` (a release build) and, one streaming request at a time, measures:
- decode tokens/s of free generation vs the same prompt under a JSON schema (an array of six
  objects, so both run long), and under `json_object`;
- the same with `logprobs` (top 5);
- time to first token of a chat request offering 20 tools (`auto`, and `required`, whose grammar
  is compiled per request) vs the same conversation without tools.

Decode rate per request = (completion tokens - 1) / (last token time - first token time); the
summary is the mean over repetitions, as llama-bench reports.

  python Benchmarks/serving/structured.py --server .build/release/tllm.server --model M.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_overhead import stream_chat  # noqa: E402

ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 24},
        "member": {"type": "boolean"},
        "colour": {"enum": ["red", "green", "blue"]},
    },
    "required": ["name", "age", "city", "member", "colour"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": ITEM, "minItems": 6, "maxItems": 6}
PROMPT = "List six people with their name, age, city, membership and favourite colour, as JSON."


def tools(n: int) -> list[dict]:
    return [{"type": "function", "function": {
        "name": f"tool_{i}", "description": f"Looks up record kind {i} by id and date.",
        "parameters": {"type": "object", "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 100000},
            "date": {"type": "string", "maxLength": 10},
            "verbose": {"type": "boolean"}}, "required": ["id"], "additionalProperties": False}}}
        for i in range(n)]  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--port", type=int, default=18231)
    args = parser.parse_args()

    log = tempfile.NamedTemporaryFile(prefix="tllm-structured-", suffix=".log", delete=False)
    server = subprocess.Popen(
        [args.server, "--model_path", args.model, "--is_local", "--http_port", str(args.port),
         "--threads", str(args.threads), "--disable_prefix_cache"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=600)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                print(f"the server did not start; log: {log.name}", file=sys.stderr)
                return 1
            time.sleep(0.2)

        messages = [{"role": "user", "content": PROMPT}]
        base = {"messages": messages, "temperature": 0, "max_tokens": 160}
        schema_format = {"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}}
        cases = {
            "free": {**base, "ignore_eos": True, "max_tokens": 160},
            "json_schema": {**base, "response_format": schema_format},
            "json_object": {**base, "response_format": {"type": "json_object"}},
            "free + logprobs": {**base, "ignore_eos": True, "logprobs": True, "top_logprobs": 5},
        }
        question = [{"role": "user", "content": "Look up record 42 of kind 3 for today."}]
        ttft_cases = {
            "no tools": {"messages": question, "max_tokens": 1, "temperature": 0},
            "20 tools, auto": {"messages": question, "max_tokens": 1, "temperature": 0, "tools": tools(20)},
            "20 tools, required": {"messages": question, "max_tokens": 1, "temperature": 0, "tools": tools(20),
                                   "tool_choice": "required"},
        }  # fmt: skip
        stream_chat(args.port, {**base, "max_tokens": 8})  # warm-up
        print(f"CPU: {cpu_name()}; {os.cpu_count()} logical CPUs; --threads {args.threads}; model {args.model}")
        print(f"{'case':<22} {'tokens':>7} {'decode tok/s (mean)':>20} {'best':>8} {'vs free':>8}")
        rates: dict[str, list[float]] = {}
        for name, body in cases.items():
            results = [stream_chat(args.port, body) for _ in range(args.repetitions)]
            rates[name] = [r["rate"] for r in results]
            if name.startswith("json"):
                for r in results:
                    json.loads(r["text"])  # the answer must parse
            mean = statistics.mean(rates[name])
            ratio = mean / statistics.mean(rates["free"])
            print(f"{name:<22} {results[0]['tokens']:>7} {mean:>20.1f} {max(rates[name]):>8.1f} {ratio:>7.2f}x")
        # Time to first token: a whole request for one token (prompt rendering, tokenising, the
        # grammar's compilation for `required`, the prefill and one sample).
        print(f"{'case':<22} {'prompt tokens':>14} {'TTFT ms (mean)':>15} {'best':>8}")
        for name, body in ttft_cases.items():
            ttfts = []
            for _ in range(args.repetitions):
                start = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                r.raise_for_status()
                ttfts.append((time.perf_counter() - start) * 1000)
            prompt_tokens = r.json()["usage"]["prompt_tokens"]
            print(f"{name:<22} {prompt_tokens:>14} {statistics.mean(ttfts):>15.1f} {min(ttfts):>8.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
