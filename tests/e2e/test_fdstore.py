"""Under systemd with the fd store (the unit `herdsman systemd-unit` prints), a
SIGKILLed daemon loses no output line: systemd keeps a copy of every service's
pipe, so the services' writes wait in their pipes, and the next herdsman gets the
pipes back (LISTEN_FDS) and reads on. systemd is played by the test: a datagram
socket that keeps the fds sent with FDSTORE=1 and passes them to the next daemon
the way systemd does (fds from 3, LISTEN_FDS, LISTEN_PID)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import alive, wait_for
from tests.e2e.helpers import instances, numbers
from tests.e2e.test_reexec import WRITER

# Puts the fds named in argv[1] at 3, 4, ... and execs `herdsman up` with
# LISTEN_FDS/LISTEN_PID set for itself, as systemd does for a service.
AS_SYSTEMD = textwrap.dedent(
    """
    import fcntl, os, sys
    fds = [int(x) for x in sys.argv[1].split(",")]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)
    for fd in high + [fd for fd in fds if fd >= 3 + len(fds)]:
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(fds))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-m", "herdsman", "up"])
    """
)

CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.writer]
command = ["python3", "-c", {writer}]
start_seconds = "0.1s"

[services.quiet]
command = "sleep 600"
start_seconds = "0.1s"
"""


class FakeSystemd:
    """The notify socket of a service manager with an fd store."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self.store: list[int] = []

    def receive(self) -> None:
        try:
            while True:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 64)
                text = data.decode()
                self.messages.append(text)
                if "FDSTORE=1" in text.split("\n"):
                    self.store.extend(fds)
                else:
                    for fd in fds:
                        os.close(fd)
        except TimeoutError:
            return

    def close(self) -> None:
        for fd in self.store:
            os.close(fd)
        self.sock.close()


def test_the_fd_store_keeps_every_line_through_a_sigkill_of_the_daemon(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(CONFIG.format(writer=json.dumps(WRITER)))
    manager = FakeSystemd(tmp / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify"), "HERDSMAN_FDSTORE": "64"}
    quiet = subprocess.DEVNULL
    first = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "up"], cwd=tmp, env=env, stdout=quiet, stderr=quiet
    )
    second = None
    try:

        def stored_both() -> bool:
            manager.receive()
            return any("READY=1" in m for m in manager.messages) and len(manager.store) == 4

        wait_for(stored_both, timeout=15)
        assert all("FDNAME=herdsman-pipe" in m for m in manager.messages if "FDSTORE=1" in m)
        before = {n: i["pid"] for n, i in instances(tmp).items()}
        log = tmp / ".herdsman/logs/writer.log"
        wait_for(lambda: log.exists() and len(numbers(log)) > 200)

        # The writer holds still while the daemon is killed: a line the daemon had
        # read but not yet written dies with it (that is no fault of the fd store).
        os.kill(before["writer"], signal.SIGSTOP)

        def caught_up() -> bool:  # the daemon has written all there was to read
            count = len(numbers(log))
            time.sleep(0.1)
            return len(numbers(log)) == count

        wait_for(caught_up)
        first.send_signal(signal.SIGKILL)
        first.wait()
        os.kill(before["writer"], signal.SIGCONT)
        time.sleep(0.5)  # about 1,000 lines wait in the pipe meanwhile
        assert alive(before["writer"])  # with a reader kept, no SIGPIPE

        second = subprocess.Popen(
            [sys.executable, "-c", AS_SYSTEMD, ",".join(map(str, manager.store))],
            cwd=tmp,
            env=env,
            stdout=quiet,
            stderr=quiet,
            pass_fds=manager.store,
        )
        wait_for(lambda: "adopted 2" in (tmp / ".herdsman/logs/herdsman.log").read_text(), 15)
        after = {n: i["pid"] for n, i in instances(tmp).items()}
        assert after == before
        last = numbers(log)[-1]
        wait_for(lambda: numbers(log)[-1] > last + 500, timeout=10)
        got = numbers(log)
        assert got == list(range(len(got)))  # not a line lost, none twice
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
        manager.close()
