#!/usr/bin/env bash
# Prefill (pp512) and decode (tg128) tokens/s of our compute path vs llama.cpp's llama-bench
# on the same GGUF files and thread counts, in the same run.
#
#   bash Benchmarks/generate/run.sh [model.gguf ...]     (default: the embedded SmolLM2 Q4_1)
#
# llama.cpp comes from the PyPI sdist of llama-cpp-python 0.3.36 (its vendored tree), built
# once with cmake into .build-llama/ (git-ignored; ~8 minutes on 2 cores).
set -euo pipefail
source "$(dirname "$0")/../../scripts/prelude.sh"
venv=$(bash scripts/python-env.sh)
for tool in cmake time; do
    [ -x "/usr/bin/$tool" ] || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq "$tool" >/dev/null; }
done
models=("$@")
[ ${#models[@]} -gt 0 ] || models=("$(bash scripts/fetch-default-model.sh)")

llama=.build-llama
if [ ! -x "$llama/build/bin/llama-bench" ]; then
    mkdir -p "$llama"
    "$venv/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$llama"
    tar -xzf "$llama"/llama_cpp_python-0.3.36.tar.gz -C "$llama"
    cmake -S "$llama/llama_cpp_python-0.3.36/vendor/llama.cpp" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
        `# -march=native enables instructions this VM traps on; name the ones the CPU has` \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
        -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON >/dev/null
    cmake --build "$llama/build" --target llama-bench -j "$(nproc)" >/dev/null
fi
swift build -c release --product GenerateBenchmark >/dev/null

for model in "${models[@]}"; do
    echo "== $(basename "$model")"
    .build/release/GenerateBenchmark --model "$model" --threads 1,2 --json /tmp/tllm-generate-bench.json 2>&1 | grep "^tllm"
    .build/release/GenerateBenchmark --model "$model" --threads 1,2 --int8-activations 2>&1 | grep "^tllm"
    /usr/bin/time -f "llama-bench peak RSS %M KiB" "$llama/build/bin/llama-bench" -m "$model" -t 2 -p 512 -n 128 -r 1 -o md >/dev/null
    "$llama/build/bin/llama-bench" -m "$model" -t 1,2 -p 512 -n 128 -r 3 -o md 2>/dev/null | grep -E '^\|'
done
