"""A flood of sd_notify datagrams from another user costs a line or two of herdsman.log,
not a line per datagram: the socket is as narrow as the instances' users allow, and
what is ignored is counted and said once per window."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import herdsman

# A python nobody can run (the tests' own may live under /root).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None or SYSTEM_PYTHON is None,
    reason="needs root, runuser and a system python3 (to send as nobody)",
)

FLOOD = """
import socket, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sent = refused = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        sock.sendto(b"READY=1\\nSTATUS=flood", path)
        sent += 1
    except BlockingIOError:
        pass
    except PermissionError:
        refused += 1
print(sent, refused)
"""


def flood(tmp: Path, seconds: float) -> tuple[int, int]:
    """Send as nobody for `seconds`; (datagrams sent, sends refused)."""
    script = tmp / "flood.py"
    script.write_text(FLOOD)
    script.chmod(0o644)
    sock = tmp / ".herdsman/notify.sock"
    argv = ["runuser", "-u", "nobody", "--", str(SYSTEM_PYTHON), "-I", str(script)]
    out = subprocess.run(
        [*argv, str(sock), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return int(out[0]), int(out[1])


# The service says READY=1 from its main process, which lives on, so the daemon can
# take its word however late it reads the datagram. `systemd-notify` run as nobody
# cannot name its parent and sends as itself: a daemon that gets no CPU for the 5 s
# its barrier waits reads the datagram after the helper was reaped, cannot tell whose
# it is, and `up --wait` waits for a readiness that never comes (how this test's
# `up -d --wait` could time out at a load of ~130: a 6 s stall of the daemon's read of
# the socket does it every time).
READY = (
    "import os, socket, time; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)"
    ".sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(600)"
)


def config(tmp: Path, user: str | None) -> None:
    who = f'user = "{user}"\n' if user else ""
    (tmp / "herdsman.toml").write_text(
        f"""
[services.ready]
command = [{json.dumps(SYSTEM_PYTHON)}, "-I", "-c", {json.dumps(READY)}]
ready = {{ notify = true }}
{who}"""
    )


@pytest.fixture(autouse=True)
def reachable(tmp: Path) -> None:
    tmp.chmod(0o755)  # nobody must reach the directories inside


def test_the_socket_is_owner_only_when_every_notifying_instance_runs_as_herdsman(
    tmp: Path,
) -> None:
    config(tmp, None)
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    try:
        sock = tmp / ".herdsman/notify.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        log = tmp / ".herdsman/logs/herdsman.log"
        before = log.read_bytes()
        sent, refused = flood(tmp, 1.0)
        assert sent == 0
        assert refused > 0
        assert log.read_bytes().count(b"\n") == before.count(b"\n")
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_a_flood_from_a_user_of_an_instance_costs_a_few_lines(tmp: Path) -> None:
    config(tmp, "nobody")
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    try:
        sock = tmp / ".herdsman/notify.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o660  # nobody's group, not everyone
        assert sock.stat().st_gid == 65534
        log = tmp / ".herdsman/logs/herdsman.log"
        lines_before = log.read_bytes().count(b"\n")
        sent, refused = flood(tmp, 3.0)
        assert sent > 1000
        assert refused == 0
        text = log.read_text()
        grown = text.count("\n") - lines_before
        assert grown <= 3, text.splitlines()[lines_before:]
        assert "ignored an sd_notify message from pid" in text
        # The window closes: one line with the count of what was ignored meanwhile.
        summary = re.compile(r"ignored ([\d,]+) notify messages from pid \d+ in the last \d+ s")
        found = wait_for(lambda: summary.search(log.read_text()), timeout=15)
        assert isinstance(found, re.Match)
        counted = int(found.group(1).replace(",", ""))
        assert 0 < counted < sent  # the first was logged on its own; the rest counted
        # And the instance still reports, and the daemon still answers.
        status = herdsman(tmp, "status", "--json")
        assert status.returncode == 0
        assert '"ready": true' in status.stdout
    finally:
        assert herdsman(tmp, "down").returncode == 0
