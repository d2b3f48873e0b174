#!/usr/bin/env bash
# Prefill-sized products of one matrix on each path Linear can take (packed integer kernel with
# two planes, dequantise + sgemm, AMX split-bfloat16 tiles), with each path's error: Q4_0, Q8_0
# and F16 at Llama-3.2-1B shapes, 1 and 2 threads, batches 16 to 512. Compiles the kernel
# sources directly with clang -O3 against OpenBLAS; ~3 minutes.
#
#   bash Benchmarks/kernels/prefill.sh [batch ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
kernels=Sources/CTLLMKernels
compiler=$(command -v clang || command -v cc)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2046
"$compiler" -O3 -I$kernels/include -I$kernels $(pkg-config --cflags openblas) Benchmarks/kernels/prefill.c \
    $kernels/*.c $(pkg-config --libs openblas) -lm -lpthread -o "$out/prefill"
# OpenBLAS may not know this CPU and fall back to SSE3 kernels (see OpenBLASKernel.swift).
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(16 32 64 512)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for type in 2 8 1; do
    for threads in 1 2; do
        "$out/prefill" $type 2048 2048 $threads "${batches[@]}"
        "$out/prefill" $type 8192 2048 $threads 512
    done
done
