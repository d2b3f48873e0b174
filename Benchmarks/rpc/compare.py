#!/usr/bin/env python3
"""Prints Swift vs grpcio Forward benchmark results side by side with ratios.

Usage: compare.py SWIFT.json GRPCIO.json   (the outputs of RPCBenchmark and grpcio_bench.py)
Ratios > 1 mean Swift is better: latency ratio = grpcio p50 / Swift p50,
throughput ratio = Swift calls/s / grpcio calls/s.
"""
import json
import sys


def load(path):
    with open(path) as f:
        data = json.load(f)
    return {(r["transport"], tuple(r["shape"])): r for r in data["results"]}


def main():
    swift, grpcio = load(sys.argv[1]), load(sys.argv[2])
    header = f"{'transport':9} {'shape':12} {'swift p50':>10} {'grpcio p50':>10} {'p50 x':>6} {'swift p99':>10} {'grpcio p99':>10} {'swift calls/s':>13} {'grpcio calls/s':>14} {'thr x':>6}"
    print(header)
    print("-" * len(header))
    for key, s in swift.items():
        g = grpcio.get(key)
        if not g:
            continue
        print(
            f"{key[0]:9} {str(list(key[1])):12} {s['p50_us']:>8.0f}us {g['p50_us']:>8.0f}us {g['p50_us'] / s['p50_us']:>6.2f}"
            f" {s['p99_us']:>8.0f}us {g['p99_us']:>8.0f}us {s['calls_per_s']:>13.0f} {g['calls_per_s']:>14.0f}"
            f" {s['calls_per_s'] / g['calls_per_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
