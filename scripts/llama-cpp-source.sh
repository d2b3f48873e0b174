#!/usr/bin/env bash
# Fetches llama.cpp's source once (the tree vendored in the PyPI sdist of llama-cpp-python 0.3.36:
# PyPI is the one registry CI reaches) into .build-llama/ (git-ignored) and prints the path of the
# llama.cpp tree: its tools (Benchmarks/build-llama-cpp.sh), convert_hf_to_gguf.py and gguf-py
# (Tests/server/hf_families.py) and its chat templates come from there.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
llama=.build-llama
tree="$llama/llama_cpp_python-0.3.36/vendor/llama.cpp"
if [ ! -f "$tree/convert_hf_to_gguf.py" ]; then
    venv=$(bash scripts/python-env.sh)
    mkdir -p "$llama"
    "$venv/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d "$llama" >&2
    tar -xzf "$llama"/llama_cpp_python-0.3.36.tar.gz -C "$llama"
fi
echo "$root/$tree"
