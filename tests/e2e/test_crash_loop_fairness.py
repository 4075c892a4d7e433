"""50 instances crash-looping with no backoff leave the daemon responsive: `status`
and `down` answer, SIGTERM is acted on, the log says how many times an instance
respawned instead of a line each, and no "Exception ignored when trying to write
to the signal wakeup fd" traceback is written. Before, `status` and `down` got no
answer within 10 s, SIGTERM was lost and the log grew by ~400 KB/s."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from tests.conftest import alive, marked_pids, wait_for
from tests.e2e.helpers import herdsman

CONFIG = """
[services.crash]
command = "/bin/false"
replicas = 50
backoff = { initial = 0 }
start_limit = { burst = 1000000, interval = "1s" }
"""


def crash_looping(tmp: Path, restarts: int) -> int:
    """Start the loop and wait until it has made `restarts` respawns; the daemon's pid."""
    (tmp / "herdsman.toml").write_text(CONFIG)
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr
    state = tmp / ".herdsman/state.json"

    def made() -> int:
        try:
            document = json.loads(state.read_text())
        except (OSError, ValueError):  # not written yet
            return 0
        return sum(i.get("restarts", 0) for i in document["instances"].values())

    # Told by state.json, not by the API under test.
    wait_for(lambda: made() > restarts, timeout=120, interval=0.2)
    return int(json.loads(state.read_text())["daemon_pid"])


def assert_clean_log(tmp: Path, seconds: float) -> None:
    """No traceback, and at most 20 lines per instance per 10 s (the rest counted)."""
    text = log_text(tmp)
    assert "Exception ignored" not in text
    assert "Traceback" not in text
    windows = seconds / 10 + 1
    for replica in range(50):
        lines = text.count(f" crash.{replica}: ")
        assert lines <= (20 + 1) * windows + 5, f"crash.{replica}: {lines} lines in {seconds}s"


def test_status_and_down_answer_during_a_crash_loop(tmp: Path) -> None:
    began = time.monotonic()
    daemon = crash_looping(tmp, 3000)
    try:
        for _ in range(3):
            started = time.monotonic()
            answer = herdsman(tmp, "status", "--json")
            # The client gives up after 10 s: it must not come to that.
            assert answer.returncode == 0, answer.stderr
            assert time.monotonic() - started < 9
    finally:
        down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    wait_for(lambda: not alive(daemon), timeout=20)
    assert_clean_log(tmp, time.monotonic() - began)
    # Counted, not written: which message a window names last depends on when
    # `down` came (a respawn, or the stop itself).
    assert re.search(
        r" crash\.\d+: [\d,]+ more messages in the last 10s, the last: ", log_text(tmp)
    )


def test_sigterm_to_the_daemon_during_a_crash_loop_stops_everything(tmp: Path) -> None:
    began = time.monotonic()
    daemon = crash_looping(tmp, 1000)
    try:
        os.kill(daemon, signal.SIGTERM)
        wait_for(lambda: not alive(daemon), timeout=20, interval=0.1)
    finally:
        if alive(daemon):
            os.kill(daemon, signal.SIGKILL)
    assert not marked_pids(os.environ["HERDSMAN_TEST_MARK"])
    assert_clean_log(tmp, time.monotonic() - began)
    assert "SIGTERM: stopping all services" in log_text(tmp)


def log_text(tmp: Path) -> str:
    return (tmp / ".herdsman/logs/herdsman.log").read_text()
