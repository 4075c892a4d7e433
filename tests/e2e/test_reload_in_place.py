"""Every setting the README says a reload applies in place does, on a real daemon:
the instance keeps its process (same pid, `unchanged` in reload's answer) and the new
setting is in effect at once. One test per setting."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import herdsman, instances

# Grows to 80 MiB once the file `grow` exists in its cwd.
HOG = (
    "import os, time\n"
    "while not os.path.exists('grow'): time.sleep(0.02)\n"
    "x = b'x' * (80 * 2**20)\n"
    "print('grown', flush=True)\n"
    "time.sleep(600)\n"
)
SETTINGS = """
[settings]
memory_interval = "0.5s"
"""


@contextmanager
def running(tmp: Path, services: str) -> Iterator[Callable[[str], dict[str, Any]]]:
    """A daemon for `services` (up -d); yields a function that reloads to new
    `services` text and checks reload's answer; `down` at the end."""
    config = tmp / "herdsman.toml"
    (tmp / "hog.py").write_text(HOG)
    config.write_text(SETTINGS + textwrap.dedent(services))
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr

    def reload(new: str) -> dict[str, Any]:
        config.write_text(SETTINGS + textwrap.dedent(new))
        done = herdsman(tmp, "reload")
        assert done.returncode == 0, done.stderr
        assert "unchanged: svc" in done.stdout.splitlines(), done.stdout
        return instances(tmp)["svc"]

    try:
        yield reload
    finally:
        assert herdsman(tmp, "down").returncode == 0


def svc(tmp: Path) -> dict[str, Any]:
    return instances(tmp)["svc"]


def up_with_pid(tmp: Path) -> int:
    doc: dict[str, Any] = wait_for(
        lambda: (d := svc(tmp))["state"] == "running" and d["pid"] and d, timeout=10
    )  # type: ignore[assignment]
    return int(doc["pid"])


def holds(predicate: Callable[[], bool], seconds: float) -> bool:
    """Whether `predicate` stays true for `seconds` (a window of observation)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)
    return True


def grown(tmp: Path) -> None:
    (tmp / "grow").touch()
    wait_for(lambda: (svc(tmp)["rss_bytes"] or 0) > 60 * 2**20, timeout=10, interval=0.1)


HOG_SERVICE = """
[services.svc]
command = ["python3", "hog.py"]
start_seconds = 0
"""


@pytest.mark.parametrize("before", ["", 'memory_limit = "500MiB"'])
def test_a_memory_limit_added_or_lowered_applies_to_the_running_process(
    tmp: Path, before: str
) -> None:
    with running(tmp, HOG_SERVICE + before) as reload:
        pid = up_with_pid(tmp)
        grown(tmp)
        assert holds(lambda: svc(tmp)["restarts"] == 0, 0.5)
        assert reload(HOG_SERVICE + 'memory_limit = "20MiB"')["pid"] == pid
        wait_for(lambda: svc(tmp)["restarts"] >= 1)  # two samples 0.5 s apart
        assert svc(tmp)["message"].startswith("memory limit exceeded (")


def test_a_memory_limit_removed_no_longer_restarts(tmp: Path) -> None:
    with running(tmp, HOG_SERVICE + 'memory_limit = "20MiB"') as reload:
        pid = up_with_pid(tmp)
        assert reload(HOG_SERVICE)["pid"] == pid
        grown(tmp)
        assert holds(lambda: svc(tmp)["pid"] == pid, 1.5)  # three samples' time


SLEEPER = """
[services.svc]
command = "sleep 600"
start_seconds = 0
"""


def test_a_health_check_added_runs(tmp: Path) -> None:
    with running(tmp, SLEEPER) as reload:
        pid = up_with_pid(tmp)
        assert svc(tmp)["health"] is None
        doc = reload(SLEEPER + 'health = { exec = "true", interval = "0.1s" }')
        assert doc["pid"] == pid
        wait_for(lambda: svc(tmp)["health"] == "healthy")


def test_health_thresholds_and_interval_apply(tmp: Path) -> None:
    check = "health = {{ exec = \"sh -c 'echo x >> checks; exit 1'\", {} }}"
    with running(tmp, SLEEPER + check.format('interval = "1h", failure_threshold = 9')) as reload:
        pid = up_with_pid(tmp)
        wait_for(lambda: (tmp / "checks").exists())
        faster = check.format('interval = "0.4s", failure_threshold = 3')
        assert reload(SLEEPER + faster)["pid"] == pid
        wait_for(lambda: svc(tmp)["restarts"] >= 1)
        log = (tmp / ".herdsman" / "logs" / "herdsman.log").read_text()
        assert "svc: health check failed (3/3)" in log
        assert "(2/9)" not in log  # the slow check ran once before the reload


def test_a_readiness_probe_changed_applies_to_the_waiting_process(tmp: Path) -> None:
    never = SLEEPER + 'ready = { exec = "false", interval = "0.1s" }'
    with running(tmp, never) as reload:
        wait_for(lambda: svc(tmp)["pid"] and svc(tmp)["checks"].get("ready"))
        pid = svc(tmp)["pid"]
        assert svc(tmp)["state"] == "starting"
        doc = reload(SLEEPER + 'ready = { exec = "true", interval = "0.1s" }')
        assert doc["pid"] == pid
        wait_for(lambda: svc(tmp)["state"] == "running")
        assert svc(tmp)["pid"] == pid
        assert svc(tmp)["ready"] is True


def test_backoff_applies(tmp: Path) -> None:
    with running(tmp, SLEEPER) as reload:
        pid = up_with_pid(tmp)
        assert reload(SLEEPER + 'backoff = { initial = "42s", max = "42s" }')["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: svc(tmp)["state"] == "restarting")
        assert svc(tmp)["message"].endswith("restarting in 42s")


def test_start_limit_applies(tmp: Path) -> None:
    with running(tmp, SLEEPER) as reload:
        pid = up_with_pid(tmp)
        assert reload(SLEEPER + "start_limit = { burst = 1 }")["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        second = wait_for(lambda: svc(tmp)["pid"] not in (None, pid) and svc(tmp)["pid"])
        os.kill(int(second), signal.SIGKILL)  # type: ignore[call-overload]
        wait_for(lambda: svc(tmp)["state"] == "failed")
        assert "gave up after more than 1 restarts" in svc(tmp)["message"]


def test_stop_signal_applies(tmp: Path) -> None:
    with running(tmp, SLEEPER) as reload:
        pid = up_with_pid(tmp)
        assert reload(SLEEPER + 'stop_signal = "INT"')["pid"] == pid
        assert herdsman(tmp, "stop", "svc").returncode == 0
        assert svc(tmp)["message"] == "stopped by SIGINT"


def test_stop_timeout_applies(tmp: Path) -> None:
    # Ignored signals stay ignored across exec: sleep ignores SIGTERM too.
    stubborn = """
    [services.svc]
    command = "sh -c 'trap \\"\\" TERM; sleep 600'"
    start_seconds = 0
    stop_timeout = "1h"
    """
    with running(tmp, stubborn) as reload:
        pid = up_with_pid(tmp)
        assert reload(stubborn.replace('"1h"', '"0.2s"'))["pid"] == pid
        assert herdsman(tmp, "stop", "svc").returncode == 0
        assert svc(tmp)["message"] == "killed with SIGKILL after stop_timeout (200ms)"


def test_log_rotation_applies(tmp: Path) -> None:
    chatty = """
    [services.svc]
    command = ["python3", "-c", "import time\\nwhile True: print('x' * 99, flush=True); time.sleep(0.01)"]
    start_seconds = 0
    """
    with running(tmp, chatty) as reload:
        pid = up_with_pid(tmp)
        logs = tmp / ".herdsman" / "logs"
        assert reload(chatty + 'log = { max_bytes = "2KiB", backups = 1 }')["pid"] == pid
        wait_for(lambda: (logs / "svc.log.1").exists())
        # Rotated past 2 KiB (a batch read under load can add some), not 10 MiB.
        assert (logs / "svc.log.1").stat().st_size <= 64 * 1024
        assert svc(tmp)["pid"] == pid
