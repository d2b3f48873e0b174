#!/usr/bin/env bash
# The main job on a fresh Debian machine (README's first command): installs the system
# packages, builds in release and starts the node.
#
# What runs today: the tllm RPCService (gRPC over HTTP/2 on nghttp2) as a relay node on
# [::]:25001 (TLLM_GRPC_PORT). When tllm.server lands, this starts it on the embedded
# default model instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$PATH:/opt/swift/usr/bin"
bash scripts/install-system-deps.sh
swift build -c release --product tllm-rpc
port=${TLLM_GRPC_PORT:-25001}
echo "starting the RPCService on [::]:$port (Ctrl-C stops it); try: .build/release/tllm-rpc call localhost:$port Health"
exec .build/release/tllm-rpc serve --listen "[::]:$port"
