"""End to end: the client commands as a user types them, against a real daemon
started with `herdsman up -d` in a temp dir. The fixture always takes the daemon
down (and kills it if `down` fails), so no test leaves a process behind."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.cli.conftest import Project
from tests.conftest import alive, wait_for

CONFIG = """\
[settings]
shutdown_timeout = "5s"

[services.db]
command = ["sleep", "1000"]
start_seconds = "0.2s"

[services.web]
command = ["sh", "-c", "trap 'echo got HUP' HUP; echo hello from $HERDSMAN_INSTANCE; while :; do sleep 0.1; done"]
replicas = 2
start_seconds = "0.2s"
stop_timeout = "2s"
depends_on = { db = "started" }

[services.stubborn]
command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
start_seconds = "0.2s"
stop_timeout = "0.3s"
autostart = false

[services.broken]
command = "no-such-program-herdsman-test"
autostart = false
"""


def herdsman(project: Project, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=project.dir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(project: Project) -> dict[str, dict[str, object]]:
    proc = herdsman(project, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {i["name"]: i for i in json.loads(proc.stdout)["services"]}


def all_running(project: Project, *names: str) -> bool:
    instances = status(project)
    return all(instances[n]["state"] == "running" for n in names)


@pytest.fixture
def daemon(project: Project) -> Iterator[int]:
    """A daemon for the project's config; its pid."""
    project.config.write_text(CONFIG)
    up = herdsman(project, "up", "-d")
    assert up.returncode == 0, up.stderr
    pid = int(json.loads(herdsman(project, "status", "--json").stdout)["daemon"]["pid"])
    try:
        yield pid
    finally:
        down = herdsman(project, "down")
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr


def test_a_session(project: Project, daemon: int) -> None:
    wait_for(lambda: all_running(project, "db", "web.0", "web.1"))

    table = herdsman(project, "status")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["INSTANCE", "STATE", "PID"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["web.0"][1] == "running"
    assert rows["broken"][1] == "stopped"

    stop = herdsman(project, "stop", "web")
    assert stop.returncode == 0, stop.stderr
    assert [line.split()[:2] for line in stop.stdout.splitlines()] == [
        ["web.0:", "stopped"],
        ["web.1:", "stopped"],
    ]
    assert status(project)["web.0"]["pid"] is None

    start = herdsman(project, "start", "web")
    assert start.returncode == 0, start.stderr
    assert [line.split()[:3] for line in start.stdout.splitlines()] == [
        ["web.0:", "running", "(pid"],
        ["web.1:", "running", "(pid"],
    ]
    before = status(project)["web.0"]["pid"]

    restart = herdsman(project, "restart", "web")
    assert restart.returncode == 0, restart.stderr
    after = status(project)
    assert after["web.0"]["state"] == "running"
    assert after["web.0"]["pid"] != before

    sig = herdsman(project, "signal", "HUP", "web")
    assert sig.returncode == 0, sig.stderr
    assert sig.stdout.splitlines()[0] == "sent SIGHUP to web.0, web.1"

    def hup_logged() -> bool:
        logs = herdsman(project, "logs", "-n", "5", "web")
        assert logs.returncode == 0
        return "web.0 │ got HUP" in logs.stdout.splitlines()

    wait_for(hup_logged)
    as_json = herdsman(project, "logs", "-n", "1", "--json", "web.1")
    entry = json.loads(as_json.stdout)
    assert entry["instance"] == "web.1"
    assert entry["stream"] == "out"
    assert entry["time"].endswith("Z")

    down = herdsman(project, "down")
    assert (down.returncode, down.stdout) == (0, "herdsman: stopped\n")
    assert not alive(daemon)
    gone = herdsman(project, "status")
    assert gone.returncode == 3
    assert gone.stderr == (
        f"herdsman: no daemon is running for {project.config} (start one with 'herdsman up -d')\n"
    )
    # What ran is still in the log files.
    offline = herdsman(project, "logs", "-n", "50", "web.0")
    assert offline.returncode == 0
    assert "web.0 │ got HUP" in offline.stdout.splitlines()


def test_second_up_is_refused_and_socket_is_private(project: Project, daemon: int) -> None:
    again = herdsman(project, "up", "-d")
    assert again.returncode == 1
    assert str(daemon) in again.stderr
    mode = os.stat(project.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


def test_failures_and_kills(project: Project, daemon: int) -> None:
    broken = herdsman(project, "start", "broken")
    assert broken.returncode == 1
    assert broken.stderr.startswith("herdsman: broken: cannot start: command ")
    assert "no-such-program-herdsman-test" in broken.stderr

    assert herdsman(project, "start", "stubborn").returncode == 0
    killed = herdsman(project, "stop", "stubborn")
    assert killed.returncode == 0  # it had to be killed, and that is still a stop
    assert "SIGKILL" in killed.stdout

    nothing = herdsman(project, "restart", "nope*")
    assert nothing.returncode == 1
    assert "nope*" in nothing.stderr
    bad = herdsman(project, "signal", "SIGNOPE", "web")
    assert bad.returncode == 2


def test_logs_follow_until_ctrl_c(project: Project, daemon: int) -> None:
    wait_for(lambda: all_running(project, "web.0"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "logs", "-f", "-n", "1", "web.0"],
        cwd=project.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()  # read aside, so that each wait has a deadline

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert lines.get(timeout=15).startswith("web.0 │ ")  # the last line so far
        assert herdsman(project, "signal", "HUP", "web.0").returncode == 0
        # And what comes after (sh may first report its sleep killed by the HUP).
        seen = [lines.get(timeout=15)]
        while seen[-1] != "web.0 │ got HUP\n" and len(seen) < 3:
            seen.append(lines.get(timeout=15))
        assert seen[-1] == "web.0 │ got HUP\n", seen
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
        reader.join()
    assert proc.stderr is not None
    assert (proc.returncode, proc.stderr.read()) == (0, "")


def test_down_ends_followers(project: Project, daemon: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "logs", "-f", "-n", "0"],
        cwd=project.dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _follows(daemon, proc.pid))
        assert herdsman(project, "down").returncode == 0
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert "stopped" in err


def _follows(daemon: int, client: int) -> bool:
    """Whether the client process has a connection open to the daemon's socket."""
    return any(
        _target(f"/proc/{client}/fd/{fd}").startswith("socket:")
        for fd in os.listdir(f"/proc/{client}/fd")
    )


def _target(link: str) -> str:
    """What an fd's link names; "" once the fd is closed (the client, starting,
    opens and closes files between the listing of its fds and this)."""
    try:
        return os.readlink(link)
    except OSError:
        return ""


@pytest.mark.parametrize(
    "argv",
    [("version",), ("schema",), ("status",), ("logs", "web.1"), ("logs", "-f", "web.1")],
)
def test_a_reader_that_went_away_ends_it_quietly(
    project: Project, daemon: int, argv: tuple[str, ...]
) -> None:
    # `herdsman ... | head`: the reader is gone before the command writes. Exit 0, no
    # "internal error: Broken pipe".
    wait_for(lambda: "hello from web.1" in herdsman(project, "logs", "web.1").stdout)
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "herdsman", *argv],
            cwd=project.dir,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")
