#!/usr/bin/env bash
# Kernel-level comparison of the quantised paths (float activations, 8-bit row layout, packed
# 16-row groups with one and two activation planes), with and without software prefetch, one
# thread, Q4_0 / Q4_1 / Q8_0. Compiles the kernel sources directly with clang -O2; ~2 minutes.
#
#   bash Benchmarks/kernels/run.sh [batch]
set -euo pipefail
cd "$(dirname "$0")/../.."
kernels=Sources/CTLLMKernels
# clang, as SwiftPM builds the C target with it (gcc -O2 keeps some small arrays in memory).
compiler=$(command -v clang || command -v cc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for prefetch in 4096 0; do
    "$compiler" -O2 -DTLLM_PREFETCH_AHEAD=$prefetch -I$kernels/include -I$kernels Benchmarks/kernels/packed_q8.c \
        $kernels/*.c -lm -lpthread -o "$out/packed_q8_$prefetch"
done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for type in 2 3 8; do
    for prefetch in 4096 0; do
        echo "-- type $type, prefetch $prefetch bytes ahead"
        "$out/packed_q8_$prefetch" "$type" "${1:-1}"
    done
done
