"""What the log tests share: a daemon started with the real CLI (`herdsman up -d`)
for a config written into a short temp dir, the child programs in child.py, and a
strict reader for `<log_dir>/<instance>.log` and its rotated files.

The `herd` fixture always takes its daemon down (SIGKILL if `down` does not), so
a failing test leaves no process behind for the leak check to find.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import alive

CHILD = str(Path(__file__).with_name("child.py"))
PYTHON = sys.executable

# `2026-11-23T10:00:00.123456Z out the text as written`: a whole line of a log file
# (`out+`/`err+`: a piece of a longer line, continued by the next line).
LINE = re.compile(rb"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ((?:out|err)\+?) (.*)", re.DOTALL)


def child(*args: object) -> str:
    """A TOML array: the command that runs child.py with these arguments."""
    return json.dumps([PYTHON, CHILD, *map(str, args)])


class Herd:
    """A project dir, its config, and the daemon the CLI starts for it."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        self.config = root / "herdsman.toml"
        self.state_dir = root / ".herdsman"
        self.log_dir = self.state_dir / "logs"  # set it when the config moves it
        self.pid: int | None = None

    def cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "herdsman", "-c", str(self.config), *argv],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self, config: str) -> int:
        """Write the config, `up -d`; the daemon's pid."""
        self.config.write_text(config)
        up = self.cli("up", "-d")
        assert up.returncode == 0, up.stderr
        self.pid = int(self.status()["daemon"]["pid"])
        lock = (self.state_dir / "herdsman.lock").read_text().strip()
        assert lock == str(self.pid)
        return self.pid

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json")
        assert proc.returncode == 0, proc.stderr
        document: dict[str, Any] = json.loads(proc.stdout)
        return document

    def instance(self, name: str) -> dict[str, Any]:
        (found,) = [i for i in self.status()["services"] if i["name"] == name]
        return found

    def down(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            if alive(pid):
                down = self.cli("down")
                assert down.returncode == 0, down.stderr
        finally:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # --- its log files ---------------------------------------------------------

    def log(self, instance: str) -> Path:
        return self.log_dir / f"{instance}.log"

    def files(self, instance: str) -> list[Path]:
        """The instance's log files, oldest first: .log.N ... .log.1, .log."""
        return rotated(self.log(instance))

    def daemon_log(self) -> str:
        return (self.log_dir / "herdsman.log").read_text(errors="replace")


def rotated(path: Path) -> list[Path]:
    backups = []
    index = 1
    while (backup := path.with_name(f"{path.name}.{index}")).exists():
        backups.append(backup)
        index += 1
    stray = sorted(p.name for p in path.parent.glob(f"{path.name}.*") if p not in backups)
    assert not stray, f"backups with a gap in their numbering: {stray}"
    return [*reversed(backups), path] if path.exists() else list(reversed(backups))


def parse(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(timestamp, stream, text) of every line; every line must be whole and well formed."""
    if not data:
        return []
    assert data.endswith(b"\n"), f"the file ends inside a line: {data[-120:]!r}"
    entries = []
    for raw in data[:-1].split(b"\n"):
        m = LINE.fullmatch(raw)
        assert m is not None, f"not a log line: {raw[:120]!r}"
        entries.append((m[1], m[2], m[3]))
    return entries


def texts(entries: list[tuple[bytes, bytes, bytes]], stream: bytes | None = None) -> list[bytes]:
    return [text for _, s, text in entries if stream is None or s == stream]


def tail(path: Path, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read()
    except FileNotFoundError:
        return b""


def ends_with_line(path: Path, text: bytes) -> bool:
    """Whether the last line of the file is `<prefix> text`."""
    last = tail(path, len(text) + 64)
    return last.endswith(b" " + text + b"\n")


@pytest.fixture
def herd(tmp: Path) -> Iterator[Herd]:
    h = Herd(tmp)
    try:
        yield h
    finally:
        h.down()
