#!/usr/bin/env bash
# API overhead: tllm.server --is_local through the OpenAI API (streaming, one request at a time)
# vs tllm-generate and llama.cpp's llama-bench on the same file and threads, in the same run.
#
#   bash Benchmarks/serving/run.sh [model.gguf]     (default: the embedded SmolLM2 Q4_1)
set -euo pipefail
source "$(dirname "$0")/../../scripts/prelude.sh"
venv=$(bash scripts/python-env.sh)
model=${1:-$(bash scripts/fetch-default-model.sh)}
llama_bin=$(bash Benchmarks/build-llama-cpp.sh)
swift build -c release --product tllm.server >/dev/null
swift build -c release --product tllm-generate >/dev/null
"$venv/bin/python" Benchmarks/serving/api_overhead.py --server .build/release/tllm.server \
    --generate .build/release/tllm-generate --llama-bench "$llama_bin/llama-bench" --model "$model" \
    --threads "${TLLM_BENCH_THREADS:-1,2}" --tokens 128 --repetitions "${TLLM_BENCH_REPETITIONS:-3}"
