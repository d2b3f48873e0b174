#!/usr/bin/env bash
# The main job on a fresh Debian machine (README's first command): installs the system
# packages, fetches the embedded default model, builds in release and runs what exists.
#
# What runs today: a one-machine generation on the default model (tllm-generate), then the
# tllm RPCService node (gRPC over HTTP/2 on nghttp2) on [::]:25001 (TLLM_GRPC_PORT).
# When tllm.server lands, this starts it on the default model instead.
set -euo pipefail
source "$(dirname "$0")/prelude.sh"
model=$(bash scripts/fetch-default-model.sh)
swift build -c release --product tllm-generate
swift build -c release --product tllm-rpc
.build/release/tllm-generate --model_path "$model" --prompt "${TLLM_PROMPT:-Write a haiku about distributed computing.}" --max_tokens 64
port=${TLLM_GRPC_PORT:-25001}
echo "starting the RPCService on [::]:$port (Ctrl-C stops it); try: .build/release/tllm-rpc call localhost:$port Health"
exec .build/release/tllm-rpc serve --listen "[::]:$port"
