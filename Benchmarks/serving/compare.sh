#!/usr/bin/env bash
# Serving benchmark (issue 6): tllm.server --is_local vs llama.cpp's llama-server, same model file,
# same threads, same run, each driven by Benchmarks/serving/bench_serve.py (streaming
# /v1/completions, greedy, ignore_eos): concurrency 1, 4 and 16 (prompt ~128 tokens, 64 out) and a
# shared-prefix workload (~1000-token prefix + ~16 distinct tokens, 16 out, concurrency 4), which
# ours also runs with --disable_prefix_cache. Prints one Markdown table with the ratios
# ours / llama-server and leaves the records in a JSON file.
#
#   bash Benchmarks/serving/compare.sh [model.gguf] [--out FILE.json]   (default model: the embedded
#                                                                         SmolLM2 Q4_1)
# Environment: TLLM_BENCH_THREADS (2), TLLM_BENCH_REQUESTS_PER_CLIENT (4; at least 8 requests per
# run), TLLM_SERVER_BIN (a tllm.server to use instead of building one), LLAMA_CPP_BIN (an existing
# llama.cpp build, see Benchmarks/build-llama-cpp.sh), TLLM_SERVER_ARGS (extra flags for ours).
set -euo pipefail
model="" out=/tmp/tllm-serving-$(date +%Y%m%d-%H%M%S).json
while (($#)); do
    case $1 in
        --out) out=$(realpath -m "$2"); shift 2 ;;
        *) model=$(realpath "$1"); shift ;;
    esac
done
source "$(dirname "$0")/../../scripts/prelude.sh"
venv=$(bash scripts/python-env.sh)
model=${model:-$(bash scripts/fetch-default-model.sh)}
llama_bin=$(bash Benchmarks/build-llama-cpp.sh)
server=${TLLM_SERVER_BIN:-}
if [ -z "$server" ]; then
    swift build -c release --product tllm.server >/dev/null
    server=.build/release/tllm.server
fi
threads=${TLLM_BENCH_THREADS:-2}
per_client=${TLLM_BENCH_REQUESTS_PER_CLIENT:-4}
: >"$out"

# One server at a time, on a free port; it and a running client are stopped on exit, whatever the
# cause (both run in the background so that a signal's trap runs at once, not after the client).
server_pid="" client_pid="" port=""
stop_server() {
    [ -n "$server_pid" ] || return 0
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
cleanup() {
    [ -z "$client_pid" ] || kill "$client_pid" 2>/dev/null || true
    stop_server
}
trap cleanup EXIT
trap 'exit 130' INT TERM
healthy() {  # GET /health answers 200 (bash's /dev/tcp: no curl needed)
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    local status=""
    read -r -t 5 _ status _ <&3 || true
    exec 3>&-
    [ "$status" = 200 ]
}
start_server() {  # log file, then the command, which listens on $port
    local log=$1
    shift
    echo "starting: $*" >&2
    "$@" >"$log" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
        healthy 2>/dev/null && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            server_pid=""
            echo "the server exited; end of $log:" >&2
            tail -20 "$log" >&2
            return 1
        fi
        sleep 0.5
    done
    echo "the server did not answer /health within 300 s; see $log" >&2
    return 1
}
new_port() {
    port=$("$venv/bin/python" -c 'import socket; print(socket.create_server(("127.0.0.1", 0)).getsockname()[1])')
}

bench() {  # label, then bench_serve.py options
    "$venv/bin/python" Benchmarks/serving/bench_serve.py --base-url "http://127.0.0.1:$port" --label "$1" \
        --json-out "$out" "${@:2}" &
    client_pid=$!
    wait "$client_pid"
    client_pid=""
}
requests() { local n=$((per_client * $1)); echo $((n < 8 ? 8 : n)); }
concurrency_workloads() {
    for c in 1 4 16; do
        bench "$1" --concurrency "$c" --num-requests "$(requests "$c")" --prompt-tokens 128 --output-tokens 64
    done
}
prefix_workload() {
    bench "$1" --concurrency 4 --num-requests "$(requests 4)" --shared-prefix-tokens 1000 --suffix-tokens 16 \
        --output-tokens 16
}

ours=(--is_local --model_path "$model" --hostname 127.0.0.1 --threads "$threads")
# Extra flags for our server, e.g. TLLM_SERVER_ARGS="--activations int8" (llama.cpp's numerics) or
# "--activations float32" (ours defaults to int16).
read -r -a extra <<<"${TLLM_SERVER_ARGS:-}"
ours+=("${extra[@]}")
new_port
start_server "${out%.json}.tllm.log" "$server" "${ours[@]}" --http_port "$port"
concurrency_workloads tllm
prefix_workload tllm
stop_server
# Not `--help | grep -q`: grep quitting early fails the pipeline (pipefail) and skipped this.
if grep -q -- --disable_prefix_cache <<<"$("$server" --help 2>&1)"; then
    new_port
    start_server "${out%.json}.tllm-no-prefix-cache.log" \
        "$server" "${ours[@]}" --http_port "$port" --disable_prefix_cache
    prefix_workload "tllm no prefix cache"
    stop_server
else
    echo "skipped: $server has no --disable_prefix_cache" >&2
fi

# llama-server divides -c among its -np slots: each slot gets room for the longest prompt + output.
slots=16
new_port
start_server "${out%.json}.llama-server.log" "$llama_bin/llama-server" -m "$model" --host 127.0.0.1 --port "$port" \
    -t "$threads" -tb "$threads" -np "$slots" -c $((slots * 1280)) --cont-batching
concurrency_workloads llama.cpp
prefix_workload llama.cpp
stop_server

echo
echo "$(date -I), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(basename "$model")," \
    "$threads threads, llama-server $("$llama_bin/llama-server" --version 2>&1 | grep -m1 -o 'version: .*' || true)"
echo
"$venv/bin/python" Benchmarks/serving/bench_serve.py --table "$out" --reference llama.cpp
echo
echo "records: $out"
