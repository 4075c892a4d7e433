"""Escaped processes: a service whose children leave its process group (`setsid`) and
ignore SIGTERM. After `stop`, after `down`, after a restart, after `down` without a
daemon and after stopping an instance adopted from a dead daemon, none of them
runs on."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import alive, wait_for
from tests.e2e.helpers import herdsman, instances, processes_of, status

# Two escapees that ignore SIGTERM, one of which starts a third in a session of its own.
LEAKY = """
[settings]
shutdown_timeout = "2s"

[services.leaky]
command = ["sh", "-c", '''
setsid sh -c "trap '' TERM; setsid sh -c \\"trap '' TERM; sleep 600; :\\" & sleep 600; :" &
setsid sh -c "trap '' TERM; sleep 601; :" &
sleep 602
''']
start_seconds = "0.1s"
stop_timeout = "2s"

[services.plain]
command = "sleep 603"
start_seconds = "0.1s"
"""


def sessions(pids: list[int]) -> set[int]:
    return {os.getsid(pid) for pid in pids if alive(pid)}


def _started(tmp: Path) -> list[int]:
    """`leaky` with all its escapees up (three sessions besides its own)."""
    pid = instances(tmp)["leaky"]["pid"]
    wait_for(lambda: len(sessions(processes_of("leaky"))) == 4, timeout=10)
    pids = processes_of("leaky")
    assert pid in pids
    return pids


def test_stop_and_down_leave_no_escaped_process(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(LEAKY)
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    try:
        escaped = _started(tmp)
        stopped = herdsman(tmp, "stop", "leaky")
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: not processes_of("leaky"))
        assert all(not alive(pid) for pid in escaped)

        # A restart of its own (the main process dies) takes the escapees of the
        # old process along; the new one's run on with it.
        assert herdsman(tmp, "start", "leaky").returncode == 0
        first = _started(tmp)
        main = instances(tmp)["leaky"]["pid"]
        os.kill(main, signal.SIGKILL)
        wait_for(lambda: instances(tmp)["leaky"]["pid"] not in (None, main), timeout=10)
        second = _started(tmp)
        wait_for(lambda: not any(alive(pid) for pid in first))
        assert not set(first) & set(second)
        assert all(alive(pid) for pid in second)
    finally:
        down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    # `down` returns once the daemon is gone; it killed them before it went.
    wait_for(lambda: not processes_of("leaky"), timeout=2)
    assert not processes_of("plain")


def test_escapees_of_an_adopted_instance_and_down_without_a_daemon(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(LEAKY)
    assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
    escaped = _started(tmp)
    daemon = status(tmp)["daemon"]["pid"]
    os.kill(daemon, signal.SIGKILL)  # its escapees go to another reaper now
    wait_for(lambda: not alive(daemon))
    try:
        again = herdsman(tmp, "up", "-d", "--wait")
        assert again.returncode == 0, again.stderr
        assert instances(tmp)["leaky"]["pid"] in escaped  # adopted
        assert herdsman(tmp, "stop", "leaky").returncode == 0
        wait_for(lambda: not processes_of("leaky"))

        assert herdsman(tmp, "start", "leaky").returncode == 0
        _started(tmp)
        daemon = status(tmp)["daemon"]["pid"]
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: not alive(daemon))
    finally:
        down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped what a daemon that died had left running: leaky, plain" in down.stdout
    assert not processes_of("leaky")
    assert not processes_of("plain")
