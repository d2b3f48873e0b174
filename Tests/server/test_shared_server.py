"""Runs last (marked `run_last`, see conftest.py): the shared server never died during the other tests (they restart it
on the same port when it did, see conftest.py) and it exits 0 within 10 s of SIGTERM.

A separate test rather than a check in the session fixture's teardown, whose failure pytest
would pin on whatever test of the session ran last (an interop test in scripts/test.sh).
"""

from __future__ import annotations

import time

import pytest
from tllm_server_helpers import STOP_TIMEOUT


@pytest.mark.run_last
def test_shared_server_never_crashed_and_exits_zero(server):
    crashes = list(server.crashes)
    t0 = time.monotonic()
    rc = server.terminate()
    elapsed = time.monotonic() - t0
    problems = [f"the shared server died {len(crashes)} time(s) during the tests:"] + crashes if crashes else []
    if rc != 0:
        problems.append(f"exit code {rc} after SIGTERM (None: still running after {STOP_TIMEOUT}s)")
    elif elapsed >= STOP_TIMEOUT:
        problems.append(f"took {elapsed:.1f}s to exit after SIGTERM")
    assert not problems, "\n".join(problems) + f"\nlogs of the last process:\n{server.log_tail()}"
