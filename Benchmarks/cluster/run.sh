#!/usr/bin/env bash
# Decode tokens/s of one request: tllm.server --is_local vs a master with 2 and 3 tllm.client
# workers on loopback (separate processes, one compute thread each by default), same run,
# plus loopback bytes per generated token; decode of one request with 0 / 1 / 5 ms per hop
# (network namespaces + delay proxy, as root); then aggregate tokens/s of 8 concurrent requests
# on 2 and 3 stages with steps in flight on vs off, on loopback and with 1 ms per hop.
#
#   bash Benchmarks/cluster/run.sh [model.gguf]     (default: the embedded SmolLM2 Q4_1)
set -euo pipefail
source "$(dirname "$0")/../../scripts/prelude.sh"
venv=$(bash scripts/python-env.sh)
model=${1:-$(bash scripts/fetch-default-model.sh)}
swift build -c release --product tllm.server >/dev/null
swift build -c release --product tllm.client >/dev/null
"$venv/bin/python" Benchmarks/cluster/pipeline_bench.py --server .build/release/tllm.server \
    --client .build/release/tllm.client --model "$model" --tokens 128 \
    --repetitions "${TLLM_BENCH_REPETITIONS:-3}" --threads "${TLLM_BENCH_THREADS:-1}"
# Per-hop delays need network namespaces (root): loopback only otherwise.
delays=0
[ "$(id -u)" -eq 0 ] && command -v ip >/dev/null && command -v nft >/dev/null && delays=0,1,5
"$venv/bin/python" Benchmarks/cluster/pipeline_bench.py --server .build/release/tllm.server \
    --client .build/release/tllm.client --model "$model" --tokens 128 --delays "$delays" \
    --repetitions "${TLLM_BENCH_REPETITIONS:-3}" --threads "${TLLM_BENCH_THREADS:-1}"
"$venv/bin/python" Benchmarks/cluster/pipeline_bench.py --server .build/release/tllm.server \
    --client .build/release/tllm.client --model "$model" --tokens 64 --concurrency 8 \
    --delays "${delays%,5}" --repetitions "${TLLM_BENCH_REPETITIONS:-3}" --threads "${TLLM_BENCH_THREADS:-1}"
