"""The NEON kernels (arm64) against the portable references.

This machine is x86, so the kernel sources and neon_kernels.c are cross-compiled with
aarch64-linux-gnu-gcc (once for baseline Armv8-A, once with the dotprod extension, which
switches the 8-bit kernel to `sdot`) and run under qemu-aarch64. The packages come from
`scripts/install-system-deps.sh --tests`.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
KERNELS = ROOT / "Sources" / "CTLLMKernels"
SYSROOT = "/usr/aarch64-linux-gnu"


@pytest.mark.parametrize("march", ["armv8-a", "armv8.2-a+dotprod"])
def test_neon_kernels_match_the_references(tmp_path, march):
    compiler, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    assert compiler and qemu, "needs gcc-aarch64-linux-gnu and qemu-user (scripts/install-system-deps.sh --tests)"
    binary = tmp_path / "neon_kernels"
    # -ffp-contract=off: the references must not be fused where clang (SwiftPM's compiler) does not fuse them.
    build = subprocess.run(
        [compiler, "-O2", "-ffp-contract=off", f"-march={march}", "-Wall", "-Wno-unknown-pragmas",
         f"-I{KERNELS / 'include'}", f"-I{KERNELS}", str(ROOT / "Tests" / "neon" / "neon_kernels.c"),
         *map(str, sorted(KERNELS.glob("*.c"))), "-lm", "-lpthread", "-o", str(binary)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert "warning" not in build.stderr, build.stderr
    run = subprocess.run([qemu, "-L", SYSROOT, str(binary)], capture_output=True, text=True, timeout=600)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 failed" in run.stdout.splitlines()[-1]
