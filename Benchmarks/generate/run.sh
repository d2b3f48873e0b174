#!/usr/bin/env bash
# Prefill (pp512) and decode (tg128) tokens/s of our compute path vs llama.cpp's llama-bench
# on the same GGUF files and thread counts, in the same run.
#
#   bash Benchmarks/generate/run.sh [options] [model.gguf ...]   (default: the embedded SmolLM2 Q4_1)
#
#   --llama-1b         also (without models given: only) Llama-3.2-1B-shaped random-weight files in
#                      Q4_0, Q8_0, F16 and Q4_K_M, written once into models/bench/ by
#                      make_random_gguf.py (~0.7, 1.3, 2.4 and 0.8 GB; TLLM_BENCH_LLAMA_1B=1 does
#                      the same; TLLM_BENCH_LLAMA_1B_TYPES=Q4_0,Q5_K_M picks types)
#   --repetitions N    repetitions of each measurement, ours and llama-bench's (default 3)
#   --no-build         use the GenerateBenchmark already in .build/release
#
# Ours runs once per activation arithmetic in TLLM_BENCH_ACTIVATIONS (default
# float32,int16,int8; on F16 files int8 computes as float32 does, and int16 differs only in
# prefill, on AMX).
#
# llama.cpp: Benchmarks/build-llama-cpp.sh (llama-cpp-python 0.3.36's vendored tree;
# LLAMA_CPP_BIN=dir reuses an existing build).
set -euo pipefail
source "$(dirname "$0")/../../scripts/prelude.sh"
[ -x /usr/bin/time ] || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq time >/dev/null; }
models=()
llama_1b=${TLLM_BENCH_LLAMA_1B:-0}
repetitions=3
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --llama-1b) llama_1b=1 ;;
        --repetitions) repetitions=$2; shift ;;
        --no-build) build=0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) models+=("$1") ;;
    esac
    shift
done
if [ "$llama_1b" = 1 ]; then
    venv=$(bash scripts/python-env.sh)
    generated=$("$venv/bin/python" Benchmarks/generate/make_random_gguf.py --out models/bench \
        --types "${TLLM_BENCH_LLAMA_1B_TYPES:-Q4_0,Q8_0,F16,Q4_K_M}")
    mapfile -t generated_models <<<"$generated"
    models+=("${generated_models[@]}")
fi
[ ${#models[@]} -gt 0 ] || models=("$(bash scripts/fetch-default-model.sh)")
llama_bin=$(bash Benchmarks/build-llama-cpp.sh)
[ "$build" = 0 ] || swift build -c release --product GenerateBenchmark >/dev/null
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Runs a command, prints the lines of its output matching $1; on failure its last lines.
filtered() {
    local pattern=$1 output status=0
    shift
    output=$("$@" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        echo "FAILED ($status): $*" >&2
        tail -n 20 <<<"$output" >&2
        return "$status"
    fi
    grep -E "$pattern" <<<"$output" || true
}

failed=0
for model in "${models[@]}"; do
    echo "== $(basename "$model")"
    activations=${TLLM_BENCH_ACTIVATIONS:-float32,int16,int8}
    case "$(basename "$model")" in *[Ff]16*) activations=${activations/,int8/} ;; esac
    for precision in ${activations//,/ }; do
        filtered '^tllm' .build/release/GenerateBenchmark --model "$model" --threads 1,2 --repetitions "$repetitions" \
            --activations "$precision" \
            --json "/tmp/tllm-generate-bench-$(basename "$model" .gguf)-$precision.json" || failed=1
    done
    # Peak RSS over the whole run (both thread counts), as ours is VmHWM over the whole process.
    filtered '^\||peak RSS' /usr/bin/time -f "llama-bench peak RSS %M KiB" \
        "$llama_bin/llama-bench" -m "$model" -t 1,2 -p 512 -n 128 -r "$repetitions" -o md || failed=1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$failed"
