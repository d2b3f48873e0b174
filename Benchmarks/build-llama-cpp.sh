#!/usr/bin/env bash
# Builds llama.cpp's tools once (the tree vendored in the PyPI sdist of llama-cpp-python 0.3.36)
# into .build-llama/ (git-ignored; ~8 minutes on 2 cores, llama-server ~10 more) and prints the
# bin directory. $LLAMA_CPP_BIN, when set to a directory holding the tools, is used instead.
set -euo pipefail
source "$(dirname "$0")/../scripts/prelude.sh"
tools=(llama-bench llama-perplexity llama-server)
have_tools() { for tool in "${tools[@]}"; do [ -x "$1/$tool" ] || return 1; done; }
if [ -n "${LLAMA_CPP_BIN:-}" ] && have_tools "$LLAMA_CPP_BIN"; then echo "$LLAMA_CPP_BIN"; exit 0; fi
[ -x /usr/bin/cmake ] || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq cmake >/dev/null; }
llama=.build-llama
if ! have_tools "$llama/build/bin"; then
    source_tree=$(bash scripts/llama-cpp-source.sh)
    # (Re)configuring keeps what an earlier build of some of the tools compiled.
    cmake -S "$source_tree" -B "$llama/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF \
        `# llama-server without its web page: no npm build, no download of prebuilt assets` \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        `# -march=native enables instructions this VM traps on; name the ones the CPU has` \
        -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
        -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON >&2
    cmake --build "$llama/build" --target "${tools[@]}" -j "$(nproc)" >&2
fi
echo "$root/$llama/build/bin"
