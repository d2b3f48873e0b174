#!/usr/bin/env bash
# Creates (or reuses) the project's Python virtual environment for tests and benchmarks
# and prints its path. Location: $TLLM_VENV, default .venv in the project (git-ignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${TLLM_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv for `python3 -m venv`.
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
fi
stamp="$venv/.requirements-installed"
if [ ! -f "$stamp" ] || ! cmp -s "$root/Tests/requirements.txt" "$stamp"; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/Tests/requirements.txt" >&2
    cp "$root/Tests/requirements.txt" "$stamp"
fi
echo "$venv"
