#!/usr/bin/env bash
# Forward round-trip benchmark: Swift (nghttp2 on SwiftNIO) vs grpcio, same machine, same run.
# Usage: bash Benchmarks/rpc/run.sh [--calls N] [--duration S] [--concurrency C]
set -euo pipefail
source "$(dirname "$0")/../../scripts/prelude.sh"
venv=$(bash scripts/python-env.sh)
swift build -c release --product RPCBenchmark
out=$(mktemp -d)
# A throwaway CA and certificate for the tls transport (both sides use the same files).
"$venv/bin/python" -c "import sys; sys.path.insert(0, 'Tests/server'); from tls_test_pki import make_test_pki; \
from pathlib import Path; make_test_pki(Path('$out'))"
echo "== Swift client -> Swift server" >&2
.build/release/RPCBenchmark "$@" --tls-dir "$out" --json "$out/swift.json" 2>&1 | grep -v ' info ' >&2
echo "== grpcio client -> grpcio server" >&2
"$venv/bin/python" Benchmarks/rpc/grpcio_bench.py "$@" --transports tcp,unix,tls --tls-dir "$out" \
    --json "$out/grpcio.json" >/dev/null
"$venv/bin/python" Benchmarks/rpc/compare.py "$out/swift.json" "$out/grpcio.json"
