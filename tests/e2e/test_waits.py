"""Every wait ends with an answer: `start`, `restart`, `stop` and `up -d --wait` end as
soon as an instance cannot get there, naming it and why, or at `--timeout`. Real
daemons, real processes; each test takes its daemon down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import free_port, herdsman, instances

# Generous: none of these waits should come anywhere near it.
LONG = "60"
EARLY = 15.0  # an early end comes well before LONG seconds


@contextlib.contextmanager
def config(tmp: Path, toml: str) -> Iterator[Path]:
    """`toml` as tmp/herdsman.toml; afterwards its daemon (if one runs) is taken down."""
    (tmp / "herdsman.toml").write_text(textwrap.dedent(toml))
    try:
        yield tmp
    finally:
        pid = None
        proc = herdsman(tmp, "status", "--json")
        if proc.returncode == 0:
            pid = int(json.loads(proc.stdout)["daemon"]["pid"])
        herdsman(tmp, "down")
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)


def last(stderr: str) -> str:
    """The answer: the last line (a slow wait says what it waits for before it)."""
    lines = stderr.splitlines()
    assert all(line.startswith("herdsman: waiting for ") for line in lines[:-1]), lines
    return lines[-1] if lines else ""


def timed(cwd: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = herdsman(cwd, *argv)
    return result, time.monotonic() - started


FAILING_DB = """
    [services.db]
    command = ["sh", "-c", "echo 'FATAL: data directory is not empty' >&2; exit 1"]
    start_seconds = "10s"  # it crashes long before: a loaded machine must not make it "running"
    backoff = { initial = "50ms" }
    start_limit = { burst = 1 }

    [services.app]
    command = "sleep 1000"
    depends_on = { db = "ready" }
    start_seconds = 0
    stop_timeout = "2s"
"""


def test_up_wait_ends_at_once_when_a_dependency_failed(tmp: Path) -> None:
    with config(tmp, FAILING_DB):
        up, took = timed(tmp, "up", "-d", "--wait", "--timeout", LONG)
        assert up.returncode == 1, up.stderr
        assert took < EARLY, up.stderr
        err = up.stderr.splitlines()
        assert (
            "herdsman: app: cannot start: depends on db, which failed (exited with code 1: "
            "FATAL: data directory is not empty; gave up after more than 1 restarts within "
            "60s (start_limit))"
        ) in err, err
        assert any(line.startswith("herdsman: db: failed: exited with code 1") for line in err)
        # The document says the same, for the API and `status`.
        app = instances(tmp)["app"]
        assert app["state"] == "starting"
        assert app["pid"] is None
        assert app["blocked"].startswith("depends on db, which failed (")
        assert app["message"] == f"cannot start: {app['blocked']}"


def test_start_ends_at_once_when_a_dependency_failed(tmp: Path) -> None:
    with config(tmp, FAILING_DB):
        assert herdsman(tmp, "up", "-d").returncode == 0
        wait_for(lambda: instances(tmp)["db"]["state"] == "failed", 10)
        start, took = timed(tmp, "start", "app", "--timeout", LONG)
        assert start.returncode == 1
        assert took < EARLY
        assert last(start.stderr).startswith(
            "herdsman: app: cannot start: depends on db, which failed (exited with code 1: FATAL"
        ), start.stderr


def test_start_ends_when_its_start_limit_is_spent(tmp: Path) -> None:
    toml = """
        [services.crashy]
        command = ["python3", "-c", "import sys; sys.exit('config error: no API_KEY')"]
        autostart = false
        start_seconds = "10s"
        backoff = { initial = "50ms" }
        start_limit = { burst = 2 }
    """
    with config(tmp, toml):
        assert herdsman(tmp, "up", "-d").returncode == 0
        start, took = timed(tmp, "start", "crashy", "--timeout", LONG)
        assert start.returncode == 1
        assert took < EARLY
        assert last(start.stderr) == (
            "herdsman: crashy: failed: exited with code 1: config error: no API_KEY; "
            "gave up after more than 2 restarts within 60s (start_limit)"
        )


def test_start_ends_when_the_spawn_fails(tmp: Path) -> None:
    toml = """
        [services.ghost]
        command = "no-such-program-herdsman-wait"
        autostart = false

        [services.after]
        command = "sleep 1000"
        autostart = false
        depends_on = ["ghost"]
    """
    with config(tmp, toml):
        assert herdsman(tmp, "up", "-d").returncode == 0
        start, took = timed(tmp, "start", "after", "--timeout", LONG)
        assert start.returncode == 1
        assert took < EARLY
        assert last(start.stderr).startswith(
            "herdsman: after: cannot start: depends on ghost, which failed (cannot start: "
        ), start.stderr
        assert "no-such-program-herdsman-wait" in start.stderr


def test_a_probe_that_never_passes_ends_at_the_timeout_with_its_reason(tmp: Path) -> None:
    port = free_port()  # nothing listens there
    toml = f"""
        [services.web]
        command = "sleep 1000"
        start_seconds = 0
        stop_timeout = "2s"
        ready = {{ tcp = "127.0.0.1:{port}", interval = "100ms" }}
    """
    with config(tmp, toml):
        assert herdsman(tmp, "up", "-d").returncode == 0
        # The probe's failure is the instance's message, in `status --json` too.
        refused = f"ready: cannot connect to 127.0.0.1:{port}: Connection refused"
        wait_for(lambda: instances(tmp)["web"]["message"] == refused, 10)
        assert instances(tmp)["web"]["checks"] == {"ready": refused.removeprefix("ready: ")}

        restart, took = timed(tmp, "restart", "web", "--timeout", "3")
        assert restart.returncode == 1
        assert 3 <= took < EARLY
        err = restart.stderr.splitlines()
        assert err[-1] == f"herdsman: web: not running within 3s (starting: {refused})"
        # Not a terminal: what it waits for is said in plain lines meanwhile.
        assert f"herdsman: waiting for web (starting: {refused})" in err

        up_again, took = timed(tmp, "start", "web", "--timeout", "1")
        assert up_again.returncode == 1
        assert 1 <= took < EARLY


def test_an_exit_during_start_says_the_last_line_on_stderr(tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        toml = f"""
            [services.web]
            command = ["{sys.executable}", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
            start_seconds = "10s"
            backoff = {{ initial = "50ms" }}
            start_limit = {{ burst = 1 }}
        """
        with config(tmp, toml):
            up, took = timed(tmp, "up", "-d", "--wait", "--timeout", LONG)
            assert up.returncode == 1
            assert took < EARLY
            assert up.stderr.splitlines()[-1] == (
                "herdsman: web: failed: exited with code 1: OSError: [Errno 98] Address "
                "already in use; gave up after more than 1 restarts within 60s (start_limit)"
            )


def test_a_stopped_dependency_ends_the_wait(tmp: Path) -> None:
    port = free_port()
    toml = f"""
        [services.db]
        command = "sleep 1000"
        start_seconds = 0
        ready = {{ tcp = "127.0.0.1:{port}", interval = "100ms" }}

        [services.app]
        command = "sleep 1000"
        depends_on = {{ db = "ready" }}
        autostart = false
    """
    # app is not started by `up`: it waits for db only once `start app` has reached the
    # daemon, so `stop db` cannot come first (start would then bring db back, and wait).
    with config(tmp, toml):
        assert herdsman(tmp, "up", "-d").returncode == 0
        waiting = subprocess.Popen(
            [sys.executable, "-m", "herdsman", "start", "app", "--timeout", LONG],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: "waiting for db" in instances(tmp)["app"]["message"], 10)
            assert herdsman(tmp, "stop", "db").returncode == 0
            _, err = waiting.communicate(timeout=EARLY)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        assert waiting.returncode == 1
        assert last(err) == "herdsman: app: cannot start: depends on db, which is stopped"


def test_stop_ends_at_its_timeout(tmp: Path) -> None:
    toml = """
        [services.stubborn]
        command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
        start_seconds = 0
        stop_timeout = "30s"
    """
    with config(tmp, toml):
        assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
        stop, took = timed(tmp, "stop", "stubborn", "--timeout", "1")
        assert stop.returncode == 1
        assert 1 <= took < EARLY
        assert last(stop.stderr) == "herdsman: stubborn: still stopping after 1s"


@pytest.mark.parametrize("timeout", ["0", "-1", "soon"])
def test_a_bad_timeout_is_a_usage_error(tmp: Path, timeout: str) -> None:
    result = herdsman(tmp, "start", "web", "--timeout", timeout)
    assert result.returncode == 2
    assert "not a timeout" in result.stderr
