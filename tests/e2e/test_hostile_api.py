"""A flood of idle TCP connections (no token, nothing sent) against a daemon with
1024 file descriptors: supervision goes on. With the default `max_connections`
the flood never reaches the fd limit, `status` on the Unix socket answers and a
crash-looping service is restarted on time; with the cap out of the way the
accept loop runs out of fds, rests instead of spinning, says so once, and
everything is back once the flood ends. Before, accept() failed in a tight loop:
46,810 tracebacks (17 MB) in 25 s, and the crash-looping service stayed without a
process for over a minute."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import free_port, herdsman, instances

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")

FLOOD = 1100
CONFIG = """
[settings]
tcp = "127.0.0.1:{port}"
token_file = "token"
{extra}

[services.crashy]
command = ["sh", "-c", "sleep 0.2; exit 1"]
start_seconds = "0.1s"
backoff = {{ initial = "200ms", max = "200ms", jitter = 0 }}
start_limit = {{ burst = 1000000, interval = "1s" }}
"""


def start(tmp: Path, extra: str = "") -> tuple[int, int]:
    """The daemon under a 1024 fd limit: (its pid, its TCP port)."""
    port = free_port()
    (tmp / "herdsman.toml").write_text(CONFIG.format(port=port, extra=extra))
    (tmp / "token").write_text("s3cret\n")
    (tmp / "token").chmod(0o600)  # a token others can read is refused
    up = subprocess.run(
        ["prlimit", "--nofile=1024:1024", "--", sys.executable, "-m", "herdsman", "up", "-d"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    return int(json.loads((tmp / ".herdsman/state.json").read_text())["daemon_pid"]), port


def restarts(tmp: Path) -> int:
    """From state.json, which needs no API."""
    document = json.loads((tmp / ".herdsman/state.json").read_text())
    return int(document["instances"]["crashy"]["restarts"])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def flood(port: int) -> Iterator[list[socket.socket]]:
    """FLOOD connections that never send a byte, opened a batch at a time (a burst
    of SYNs beyond the listen backlog is dropped and retried for seconds)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < FLOOD:
            batch = []
            for _ in range(50):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                batch.append(sock)
            socks += batch
            # Connected, or left in flight when the daemon takes no more.
            waiting = select.poll()
            for sock in batch:
                waiting.register(sock, select.POLLOUT)
            pending, deadline = len(batch), time.monotonic() + 2.0
            while pending and time.monotonic() < deadline:
                for fd, _ in waiting.poll(100):
                    waiting.unregister(fd)
                    pending -= 1
        yield socks
    finally:
        for sock in socks:
            sock.close()


def daemon_log(tmp: Path) -> str:
    return (tmp / ".herdsman/logs/herdsman.log").read_text()


def test_a_connection_flood_leaves_supervision_and_the_unix_socket_alone(tmp: Path) -> None:
    daemon, port = start(tmp)
    try:
        wait_for(lambda: restarts(tmp) >= 2, timeout=20)
        size = len(daemon_log(tmp))
        with flood(port):
            before, began = restarts(tmp), time.monotonic()
            time.sleep(1)  # let the daemon accept what it will
            for _ in range(3):
                answer = herdsman(tmp, "status", "--json")
                assert answer.returncode == 0, answer.stderr
            wait_for(lambda: time.monotonic() - began > 6, timeout=30, interval=0.1)
            made = restarts(tmp) - before
        # one restart per ~0.4 s: some slack for a loaded machine, but not a stall
        assert made >= 5, f"{made} restarts in {time.monotonic() - began:.1f}s of flood"
        text = daemon_log(tmp)
        grown = len(text) - size
        assert "Traceback" not in text
        assert "cannot accept" not in text
        assert text.count("turning new API clients away") == 1
        assert grown < 64 * 1024, f"the log grew by {grown} bytes"
        assert alive(daemon)
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_out_of_fds_the_accept_loop_rests_and_recovers(tmp: Path) -> None:
    # No cap: the flood takes every fd the daemon has.
    daemon, port = start(tmp, extra="max_connections = 5000")
    try:
        wait_for(lambda: restarts(tmp) >= 2, timeout=20)
        size = len(daemon_log(tmp))
        with flood(port):
            wait_for(lambda: "cannot accept API connections" in daemon_log(tmp), timeout=30)
            cpu, began = cpu_seconds(daemon), time.monotonic()
            wait_for(lambda: time.monotonic() - began > 5, timeout=30, interval=0.1)
            busy = (cpu_seconds(daemon) - cpu) / (time.monotonic() - began)
        # Resting, not spinning on accept(): (generous) far from a whole core.
        assert busy < 0.5, f"the daemon used {busy:.0%} of a CPU while out of fds"
        assert alive(daemon)

        # The flood is gone: the API answers and the service is restarted again.
        def serving() -> bool:
            return herdsman(tmp, "status", "--json").returncode == 0

        wait_for(serving, timeout=30, interval=0.5)
        after = restarts(tmp)
        wait_for(lambda: restarts(tmp) >= after + 3, timeout=30, interval=0.2)
        assert instances(tmp)["crashy"]["state"] in ("starting", "restarting", "running")
        text = daemon_log(tmp)[size:]
        assert "Traceback" not in text
        assert "Exception" not in text
        # Said once, then at most once per throttle window while it lasts (the flood
        # lasts longer on a loaded machine): a handful of lines, never one per accept.
        assert 1 <= text.count("cannot accept API connections on 127.0.0.1") <= 6
        assert "accepting API connections on 127.0.0.1" in text
        assert len(text) < 64 * 1024, f"the log grew by {len(text)} bytes"
    finally:
        assert herdsman(tmp, "down").returncode == 0
