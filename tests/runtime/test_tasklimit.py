"""The room for processes that `check`, `up` and `reload` warn about (tasklimit.py),
read from the real /proc and limits; the cgroup case runs end to end in
tests/e2e/test_exhaustion.py."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from herdsman.runtime import tasklimit
from tests.conftest import wait_for

NOBODY = 65534


@pytest.fixture
def nobodys_sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (to run processes as nobody)")
    # setpriv execs the command itself (runuser would fork and leave it behind on a kill).
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sleep", "60"]
    procs = [subprocess.Popen(argv) for _ in range(3)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_users_tasks_are_counted_as_rlimit_nproc_counts_them(nobodys_sleepers) -> None:
    # Three sleeps as nobody are three of nobody's tasks; gone, they are not.
    wait_for(lambda: tasklimit._tasks_of(NOBODY) >= 3)
    for proc in nobodys_sleepers:
        proc.kill()
        proc.wait()
    wait_for(lambda: tasklimit._tasks_of(NOBODY) < 3)


def test_a_low_ulimit_u_of_an_ordinary_user_is_said(
    monkeypatch: pytest.MonkeyPatch, nobodys_sleepers
) -> None:
    wait_for(lambda: tasklimit._tasks_of(NOBODY) >= 3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    monkeypatch.setattr(tasklimit.os, "getuid", lambda: NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (10, hard))  # root is exempt: harmless here
    try:
        said = tasklimit.shortfall(50)
        fits = tasklimit.shortfall(5)
    finally:
        resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
    assert said is not None
    assert said.startswith("the process limit (ulimit -u: 10) leaves room for about ")
    assert "fewer than the 50 instances: raise it (LimitNPROC= in the unit, ulimit -u" in said
    assert fits is None  # 10 - 3 sleeps (and what else nobody runs) still holds 5


def test_root_is_held_to_no_ulimit_u_and_plenty_of_room_says_nothing() -> None:
    if os.getuid() != 0:
        pytest.skip("as root only")
    assert tasklimit._user(10) is None
    assert tasklimit.shortfall(1) is None
