#!/usr/bin/env bash
# Formats the Swift sources with swift-format (.swift-format); `--check` only reports.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/opt/swift/usr/bin"
files=$(find Sources Tests Benchmarks -name '*.swift')
if [ "${1:-}" = "--check" ]; then
    swift format lint --strict $files
else
    swift format --in-place $files
fi
