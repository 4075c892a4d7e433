"""Shared test fixtures: short temp dirs, condition waits, and a leak check.

Every test runs with a unique marker in its environment, which every process it
causes inherits; afterwards any process still carrying the marker is killed and
the test fails, so a leaked process can never go unnoticed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MARK = "HERDSMAN_TEST_MARK"

# Started from a background job (`make test &`), the shell hands pytest SIGINT
# ignored, and every process a test starts would inherit that: the Ctrl-C tests
# would fail for want of a Ctrl-C. A handler (not an ignore) is reset by exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def marked_pids(mark: str) -> list[int]:
    needle = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        return f"{pid} {b' '.join(argv).decode(errors='replace').strip()}"
    except OSError:
        return str(pid)


@pytest.fixture(autouse=True)
def no_leaked_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    yield
    leftovers = marked_pids(mark)
    deadline = time.monotonic() + 2.0
    while leftovers and time.monotonic() < deadline:  # exits may be in flight
        time.sleep(0.02)
        leftovers = marked_pids(mark)
    described = [describe(pid) for pid in leftovers]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not described, f"the test left processes behind: {described}"


@pytest.fixture
def tmp(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A temp dir with a short path (Unix socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hm", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_for(
    predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.01
) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout`.

    The default is generous: a condition that holds ends the wait at once, and a
    machine under load (two cores, other suites beside this one) can take seconds to
    start an interpreter."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
