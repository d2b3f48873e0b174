#!/usr/bin/env bash
# Regenerates the protobuf-c code of Protos/schemas.proto into the CTLLMProto
# target (committed). Usage: scripts/generate-proto.sh [OUTPUT_DIR]
# With OUTPUT_DIR the files go there instead (the freshness test uses this).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/Sources/CTLLMProto}
command -v protoc-c >/dev/null || { echo "protoc-c not found (apt-get install protobuf-c-compiler)" >&2; exit 3; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root/Protos" && protoc-c --c_out="$tmp" schemas.proto)
mkdir -p "$out/include"
# SwiftPM wants public headers under include/; the .c file includes it by its bare name.
cp "$tmp/schemas.pb-c.h" "$out/include/schemas.pb-c.h"
cp "$tmp/schemas.pb-c.c" "$out/schemas.pb-c.c"
