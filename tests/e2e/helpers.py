"""What the e2e tests of a real daemon share: the CLI as a user runs it, the status
document, and the numbers in a log file of a service that writes numbered lines."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

from tests.conftest import MARK


def herdsman(
    cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        # Past the CLI's own 60 s (`--wait`, `start`, `stop`): a wait that runs out
        # exits with its reason on stderr, which a timeout here would throw away.
        timeout=90,
        env=env,
    )


def status(cwd: Path) -> dict[str, Any]:
    result = herdsman(cwd, "status", "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def instances(cwd: Path) -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in status(cwd)["services"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def numbers(log: Path) -> list[int]:
    """The numbers of the complete lines (a write may be under way at the end)."""
    data = log.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    return [int(line.split(b" ", 2)[2]) for line in whole.splitlines()]


def unread(pid: int, fd: int) -> int:
    """How many bytes process `pid` wrote to the pipe at its `fd` that no one has
    read yet: the pipe opened again through /proc, and asked (FIONREAD), not read."""
    reader = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        count: int = struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0" * 4))[0]
        return count
    finally:
        os.close(reader)


def processes_of(instance: str, *, main_only: bool = False) -> list[int]:
    """Live processes (not zombies) of this test that carry `instance`'s marker;
    with `main_only`, only session leaders: its main process (a shell's children
    share its session; an escapee that called setsid is a leader too)."""
    return processes_by_instance(main_only=main_only).get(instance, [])


def processes_by_instance(*, main_only: bool = False) -> dict[str, list[int]]:
    """As processes_of, for every instance at once: one pass over /proc, which on a
    busy machine holds thousands of processes."""
    mark = f"{MARK}={os.environ[MARK]}".encode()
    prefix = b"HERDSMAN_INSTANCE="
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if mark not in env:
                continue
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        leader = int(stat[3]) == pid
        if stat[0] == b"Z" or not (leader or not main_only):
            continue
        for var in env:
            if var.startswith(prefix):
                found.setdefault(var[len(prefix) :].decode(), []).append(pid)
    return found


# A service writing a line every 50 ms beside one that only sleeps: the daemon has
# output and a quiet process to carry across a re-exec.
TICKER = """
[services.ticker]
command = ["sh", "-c", "while :; do echo tick; sleep 0.05; done"]
start_seconds = "0.1s"

[services.sleeper]
command = "sleep 600"
start_seconds = "0.1s"
"""


def inject(tmp: Path, sitecustomize: str, **variables: str) -> dict[str, str]:
    """An environment whose Python processes (the daemon and its new images) run
    `sitecustomize` first, with `variables` set: how a test injects a fault."""
    directory = tmp / "inject"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(sitecustomize)
    return {**os.environ, "PYTHONPATH": str(directory), **variables}
