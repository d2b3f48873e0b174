"""API overhead of tllm.server: one streaming request at a time through the OpenAI API vs the
same model in the runtime's own generation command (tllm-generate) and llama.cpp's llama-bench,
same file, same threads, same run.

    python Benchmarks/serving/api_overhead.py --server BIN --generate BIN --llama-bench BIN \
        --model M [--threads 1,2] [--tokens 128] [--repetitions 3]

Per thread count it reports the medians of: decode tokens/s and TTFT through the API, decode
tokens/s and prefill time of tllm-generate, llama-bench's tg (decode) tokens/s, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import time
import urllib.request

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream_chat(port: int, body: dict, host: str = "127.0.0.1") -> dict:
    """One streaming chat request; returns {"ttft": s, "rate": decode tok/s, "tokens", "text"}
    (text and tool-call deltas both count as output)."""
    data = json.dumps({**body, "stream": True, "stream_options": {"include_usage": True}}).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    first = last = None
    count = 0
    usage = None
    text = ""
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                delta = choice["delta"]
                if delta.get("content") or delta.get("tool_calls"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    count += 1
                    text += delta.get("content") or ""
    completion = usage["completion_tokens"] if usage else count
    rate = (completion - 1) / (last - first) if first and last and last > first else float("nan")
    return {"ttft": (first or start) - start, "rate": rate, "tokens": completion, "text": text}


def stream_once(port: int, tokens: int, host: str = "127.0.0.1") -> tuple[float, float, int]:
    """One greedy streaming chat request; returns (TTFT s, decode tok/s, tokens)."""
    result = stream_chat(
        port, {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens, "ignore_eos": True}, host)
    return result["ttft"], result["rate"], result["tokens"]


def generate_once(binary: str, model: str, threads: int, tokens: int) -> tuple[float, float]:
    """tllm-generate on the same prompt; returns (prefill ms, decode tok/s)."""
    result = subprocess.run(
        [binary, "--model_path", model, "--prompt", PROMPT, "--max_tokens", str(tokens), "--threads", str(threads),
         "--ignore-eos"], capture_output=True, text=True, check=True)
    match = re.search(r"\(([\d.]+) ms\); generated \d+ tokens, decode ([\d.]+) tok/s", result.stderr)
    return float(match.group(1)), float(match.group(2))


def llama_bench(binary: str, model: str, threads: int, tokens: int) -> float:
    result = subprocess.run(
        [binary, "-m", model, "-t", str(threads), "-p", "0", "-n", str(tokens), "-r", "3", "-o", "json"],
        capture_output=True, text=True, check=True)
    return json.loads(result.stdout)[0]["avg_ts"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--generate", required=True)
    parser.add_argument("--llama-bench")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()

    print(f"{'threads':>7} | {'API decode':>10} | {'gen decode':>10} | {'API/gen':>7} | {'API TTFT ms':>11} | "
          f"{'gen prefill ms':>14} | {'llama tg':>8} | {'API/llama':>9}")
    for threads in [int(t) for t in args.threads.split(",")]:
        port = free_port()
        server = subprocess.Popen(
            [args.server, "--model_path", args.model, "--is_local", "--hostname", "127.0.0.1", "--http_port",
             str(port), "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            stream_once(port, 8)  # warm-up
            api, gen = [], []
            # Interleave the two so that machine noise hits both alike.
            for _ in range(args.repetitions):
                api.append(stream_once(port, args.tokens))
                gen.append(generate_once(args.generate, args.model, threads, args.tokens))
        finally:
            server.terminate()
            server.wait(timeout=30)
        api_decode = statistics.median(rate for _, rate, _ in api)
        api_ttft = statistics.median(ttft for ttft, _, _ in api) * 1000
        gen_decode = statistics.median(rate for _, rate in gen)
        gen_prefill = statistics.median(ms for ms, _ in gen)
        llama = llama_bench(args.llama_bench, args.model, threads, args.tokens) if args.llama_bench else float("nan")
        print(f"{threads:>7} | {api_decode:>10.1f} | {gen_decode:>10.1f} | {api_decode / gen_decode:>7.3f} | "
              f"{api_ttft:>11.1f} | {gen_prefill:>14.1f} | {llama:>8.1f} | {api_decode / llama:>9.3f}")


if __name__ == "__main__":
    main()
