#!/usr/bin/env bash
# The main job on a fresh Debian machine (README's first command): installs the system
# packages, fetches the embedded default model, builds in release, runs a one-machine
# generation (tllm-generate), then starts the master with the whole model in-process:
#   tllm.server --is_local --model_path models/SmolLM2-135M-Instruct.Q4_1.gguf
# on http://0.0.0.0:8022 (TLLM_HTTP_PORT). The binaries are linked into /usr/local/bin when it
# is writable, so `tllm.server` and `tllm-generate` are on PATH afterwards.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
model=$(bash scripts/fetch-default-model.sh)
swift build -c release --product tllm-generate
swift build -c release --product tllm.server
if [ -w /usr/local/bin ]; then
    for tool in tllm.server tllm-generate; do ln -sf "$root/.build/release/$tool" "/usr/local/bin/$tool"; done
fi
.build/release/tllm-generate --model_path "$model" --prompt "${TLLM_PROMPT:-Write a haiku about distributed computing.}" --max_tokens 64
port=${TLLM_HTTP_PORT:-8022}
echo "starting tllm.server --is_local on port $port (Ctrl-C stops it); try:"
echo "  curl localhost:$port/v1/chat/completions -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
exec .build/release/tllm.server --is_local --model_path "$model" --http_port "$port"
