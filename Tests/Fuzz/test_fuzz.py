"""The libFuzzer targets (docs/fuzzing.md): seeds replay cleanly, each target survives a bounded
fuzzing run under AddressSanitizer, and a planted memory error does fail the check.

Env:  TLLM_FUZZ_BIN      libFuzzer build of tllm-fuzz (default <repo>/.build/fuzz/debug/tllm-fuzz,
                         made by `scripts/fuzz.sh build`)
      TLLM_REPLAY_BIN    ordinary build of tllm-fuzz (default <repo>/.build/debug/tllm-fuzz)
      TLLM_FUZZ_SECONDS  seconds per target (default 45)
Without the libFuzzer build the fuzzing runs are skipped, except under CI, where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT / "Tests" / "Fuzz" / "Corpus"
TARGETS = ["openai-request", "grpc-message", "gguf", "safetensors", "tokenizer", "chat-template"]
SECONDS = int(os.environ.get("TLLM_FUZZ_SECONDS", "45"))
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1")


def _binary(variable: str, default: Path, what: str) -> Path:
    path = Path(os.environ.get(variable) or default)
    if not path.exists():
        message = f"{what} not found at {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def fuzz_bin() -> Path:
    return _binary("TLLM_FUZZ_BIN", REPO_ROOT / ".build/fuzz/debug/tllm-fuzz",
                   "the libFuzzer build of tllm-fuzz (scripts/fuzz.sh build)")


@pytest.fixture(scope="module")
def replay_bin() -> Path:
    return _binary("TLLM_REPLAY_BIN", REPO_ROOT / ".build/debug/tllm-fuzz", "tllm-fuzz (swift build)")


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_replay_in_the_ordinary_build(target, replay_bin):
    seeds = sorted(p for p in (CORPUS / target).iterdir() if p.is_file())
    assert len(seeds) >= 5, f"{target}: only {len(seeds)} seeds in {CORPUS / target}"
    run = subprocess.run([str(replay_bin), target, str(CORPUS / target)], capture_output=True, text=True,
                         timeout=600, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, f"{target}: exit {run.returncode}\n{run.stderr[-3000:]}"
    assert f"ran {len(seeds)} inputs" in run.stdout, run.stdout


def _fuzz(fuzz_bin: Path, target: str, seeds: Path, seconds: int, work: Path) -> tuple[subprocess.CompletedProcess, Path]:
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    cmd = [str(fuzz_bin), target, str(corpus), str(seeds), f"-max_total_time={seconds}", "-timeout=20",
           "-rss_limit_mb=4096", "-max_len=65536", "-print_final_stats=1", f"-artifact_prefix={artifacts}/"]
    run = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=seconds + 300,
                         stdin=subprocess.DEVNULL, env=ENV)
    return run, artifacts


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target(target, fuzz_bin, tmp_path):
    run, artifacts = _fuzz(fuzz_bin, target, CORPUS / target, SECONDS, tmp_path)
    found = sorted(p.name for p in artifacts.iterdir())
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", run.stderr))
    print(f"{target}: {stats.get('number_of_executed_units', '?')} runs in {SECONDS} s, "
          f"peak RSS {stats.get('peak_rss_mb', '?')} MB")
    report = "\n".join(line for line in run.stderr.splitlines()
                       if "ERROR" in line or "SUMMARY" in line or "Fatal error" in line or "#" in line[:3])
    assert run.returncode == 0 and not found, (
        f"{target}: exit {run.returncode}, findings {found}\n{report[-4000:]}\n{run.stderr[-4000:]}")
    # The run did fuzz: libFuzzer executed inputs beyond the seeds.
    assert int(stats.get("number_of_executed_units", 0)) > len(list((CORPUS / target).iterdir())), run.stderr[-2000:]


def test_a_memory_error_fails_the_check(fuzz_bin, tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "planted").write_bytes(b"tllm planted overflow")
    work = tmp_path / "work"
    work.mkdir()
    run, artifacts = _fuzz(fuzz_bin, "selftest", seeds, 30, work)
    assert run.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in run.stderr, run.stderr[-3000:]
    assert any(p.name.startswith("crash-") for p in artifacts.iterdir())
