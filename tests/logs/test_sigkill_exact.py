"""SIGKILL of the daemon at random instants while a service floods it, under systemd's
fd store (played by the test, as in tests/e2e/test_fdstore.py): every line the
service wrote is in its log file exactly once, whole, in order.

A pump takes bytes out of the pipe only once they are in the log file, and a batch
cut off between the two (or cut short while being written) is settled by the next
daemon from what it recorded in `<state_dir>/logs.pos` (runtime/positions.py).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import alive, wait_for
from tests.e2e.helpers import instances
from tests.e2e.test_fdstore import AS_SYSTEMD, FakeSystemd
from tests.logs.conftest import tail

KILLS = int(os.environ.get("HERDSMAN_TEST_KILLS", "12"))

# Numbered lines as fast as it can, in writes of whole lines of at most PIPE_BUF
# bytes (so each lands in the pipe whole: no read ends inside a line), faster than
# the daemon writes them: its batches are large, and the pipe full when it dies.
# Until the file `stop` appears; then it says how many lines it wrote and waits.
WRITER = textwrap.dedent(
    """
    import os, time
    i = 0
    while not os.path.exists("stop"):
        for _ in range(100):
            chunk = b"".join(b"%d\\n" % n for n in range(i, i + 400))
            os.write(1, chunk)
            i += 400
    with open("written.tmp", "w") as f:
        f.write(str(i))
    os.rename("written.tmp", "written")
    while True:
        time.sleep(60)
    """
)

CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.writer]
command = ["python3", "-c", {writer}]
start_seconds = 0
log = {{ max_bytes = "1GiB" }}
"""

LINE = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z out (\d+)")


class Store(FakeSystemd):
    """An fd store that keeps one fd per pipe, as systemd's does (each daemon stores
    the pipes it adopted again)."""

    def receive(self) -> None:
        super().receive()
        seen: dict[int, int] = {}
        for fd in self.store:
            inode = os.fstat(fd).st_ino
            if inode in seen:
                os.close(fd)
            else:
                seen[inode] = fd
        self.store = list(seen.values())


def kill_while_writing(pid: int, log: Path) -> None:
    """SIGKILL `pid` the moment its log file grows: in the middle of writing a batch
    (a large one grows the file page by page), or just after, before it has taken
    the batch out of the pipe: the instants that matter most."""
    size = size_of(log)
    deadline = time.monotonic() + 5.0
    while size_of(log) == size and time.monotonic() < deadline:
        pass
    os.kill(pid, signal.SIGKILL)


def size_of(log: Path) -> int:
    """The file's size; -1 between a rotation's rename and the new file (over 1 GiB)."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return -1


def readies(manager: Store) -> int:
    manager.receive()
    return sum("READY=1" in m.split("\n") for m in manager.messages)


def test_many_sigkills_under_a_flood_lose_and_repeat_nothing(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(CONFIG.format(writer=json.dumps(WRITER)))
    manager = Store(tmp / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "notify"), "HERDSMAN_FDSTORE": "64"}
    quiet = subprocess.DEVNULL
    log = tmp / ".herdsman/logs/writer.log"
    rng = random.Random()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "up"], cwd=tmp, env=env, stdout=quiet, stderr=quiet
    )
    writer = None
    try:
        wait_for(lambda: readies(manager) == 1 and len(manager.store) == 2, timeout=15)
        writer = wait_for(lambda: instances(tmp)["writer"]["pid"])
        assert isinstance(writer, int)
        for kill in range(KILLS):
            wait_for(lambda: log.exists() and log.stat().st_size > 0, timeout=15)
            time.sleep(rng.uniform(0.05, 0.6))  # the daemon is busy writing batches
            if kill % 2:  # every other one
                kill_while_writing(daemon.pid, log)
            else:
                daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            assert alive(writer)  # the fd store kept a reader: no SIGPIPE
            manager.receive()
            daemon = subprocess.Popen(
                [sys.executable, "-c", AS_SYSTEMD, ",".join(map(str, manager.store))],
                cwd=tmp,
                env=env,
                stdout=quiet,
                stderr=quiet,
                pass_fds=manager.store,
            )
            wait_for(lambda n=kill + 2: readies(manager) == n, timeout=20)
        (tmp / "stop").touch()
        wait_for((tmp / "written").exists, timeout=10)
        written = int((tmp / "written").read_text())

        def all_in() -> bool:
            return f" out {written - 1}\n".encode() in tail(log, 64)

        wait_for(all_in, timeout=20)
        assert instances(tmp)["writer"]["pid"] == writer  # adopted every time
        rotated = log.with_name(log.name + ".1")  # many kills write over 1 GiB
        data = (rotated.read_bytes() if rotated.exists() else b"") + log.read_bytes()
        assert data.endswith(b"\n")
        lines = data.split(b"\n")[:-1]
        numbers = [int(m[1]) for m in map(LINE.fullmatch, lines) if m]
        assert len(numbers) == len(lines), "a line that is not whole"
        repeated = len(numbers) - len(set(numbers))
        missing = written - len(set(numbers))
        assert (missing, repeated) == (0, 0), f"{KILLS} kills: {missing} lost, {repeated} twice"
        assert numbers == list(range(written))  # and in order
        # The test saw what it is about: batches cut off mid-write, settled.
        settled = (tmp / ".herdsman/logs/herdsman.log").read_text().count("died writing")
        assert settled > 0
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        if writer is not None and alive(writer):
            os.killpg(writer, signal.SIGKILL)
        manager.close()
