#!/usr/bin/env bash
# libFuzzer + AddressSanitizer (docs/fuzzing.md). Everything lives in .build/fuzz:
#   scripts/fuzz.sh build                 tllm-fuzz (libFuzzer) and ASan builds of tllm-generate, tllm.server
#   scripts/fuzz.sh run TARGET SECONDS    fuzz one target from its seeds (Tests/Fuzz/Corpus/TARGET)
#   scripts/fuzz.sh all SECONDS           every target in turn; fails on the first finding
# A finding is written to .build/fuzz/artifacts/TARGET-crash-… (or leak-, timeout-, oom-);
# reproduce it with `.build/fuzz/debug/tllm-fuzz TARGET FILE` or, in a normal build,
# `.build/debug/tllm-fuzz TARGET FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/fuzz
targets=(openai-request grpc-message gguf safetensors tokenizer chat-template)

fuzzer_lib() {
    local swiftc lib
    swiftc=$(command -v swiftc)
    swiftc=$(readlink -f "$swiftc")
    lib=$(ls "$(dirname "$swiftc")"/../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-"$(uname -m)".a 2>/dev/null | head -1)
    [ -n "$lib" ] || { echo "libclang_rt.fuzzer_no_main not found beside $swiftc" >&2; exit 1; }
    readlink -f "$lib"
}

build() {
    local lib product
    lib=$(fuzzer_lib)
    for product in tllm-fuzz tllm-generate tllm.server; do
        local status=0
        TLLM_SANITIZE=fuzzer TLLM_FUZZER_LIB="$lib" swift build --build-path "$out" --product "$product" \
            >"$out.log" 2>&1 || status=$?
        grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Building)|ld.gold: warning: Cannot export' \
            "$out.log" || true
        [ "$status" -eq 0 ] || { echo "fuzz build of $product failed" >&2; exit 1; }
    done
}

# ASan: stop at the first error; leaks are not findings here (Swift's runtime keeps caches).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0:allocator_may_return_null=1}

run() {
    local target=$1 seconds=$2
    shift 2
    mkdir -p "$out/corpus/$target" "$out/artifacts"
    # New inputs go to the first directory (not committed); the seeds are only read.
    "$out/debug/tllm-fuzz" "$target" "$out/corpus/$target" "Tests/Fuzz/Corpus/$target" \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$target-" "$@"
}

case "${1:-}" in
    build) build ;;
    run) run "$2" "$3" "${@:4}" ;;
    all) for t in "${targets[@]}"; do run "$t" "$2"; done ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
esac
