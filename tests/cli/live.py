"""A real daemon for the tests of the commands that follow it live (`events`, `top`,
completion): started with `herdsman up -d` in the project dir, always taken down (and
killed if `down` fails), so no test leaves a process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import alive, wait_for

CONFIG = """\
[settings]
shutdown_timeout = "5s"

[services.crashy]
command = ["sh", "-c", "echo crashy up; while :; do sleep 0.1; done"]
restart = "never"
start_seconds = "0.2s"

[services.web]
command = ["sh", "-c", "echo hello from $HERDSMAN_INSTANCE; while :; do sleep 0.1; done"]
replicas = 2
start_seconds = "0.2s"
stop_timeout = "2s"
"""


def herdsman(
    cwd: Path, *argv: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def instances(cwd: Path) -> dict[str, dict[str, Any]]:
    proc = herdsman(cwd, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return {i["name"]: i for i in json.loads(proc.stdout)["services"]}


def running(cwd: Path, *names: str) -> bool:
    found = instances(cwd)
    return all(found[n]["state"] == "running" for n in names)


@contextlib.contextmanager
def daemon(cwd: Path, config: str = CONFIG) -> Iterator[int]:
    """A daemon for `cwd/herdsman.toml` with every instance running; its pid."""
    (cwd / "herdsman.toml").write_text(config)
    up = herdsman(cwd, "up", "-d")
    assert up.returncode == 0, up.stderr
    pid = int(json.loads(herdsman(cwd, "status", "--json").stdout)["daemon"]["pid"])
    try:
        wait_for(lambda: all(i["state"] == "running" for i in instances(cwd).values()), 10)
        yield pid
    finally:
        down = herdsman(cwd, "down")
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr


class Follower:
    """A following command (`events`) run as a user would, its output read line by line
    with deadlines."""

    def __init__(self, cwd: Path, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "herdsman", *argv],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._pending = b""

    def wait_for_line(self, predicate: Any, timeout: float = 10.0) -> str:
        """The first line (from those not yet looked at) for which predicate is true."""
        import select
        import time

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._pending:
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode()
                self.lines.append(line)
                if predicate(line):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such line within {timeout}s; got {self.lines}")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                data = os.read(self.proc.stdout.fileno(), 65536)
                if not data:
                    raise AssertionError(f"the output ended; got {self.lines}")
                self._pending += data

    def finish(self, timeout: float = 15.0) -> tuple[int, str, str]:
        """Its exit code, the rest of its output and its stderr, once it ends."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self._pending + out).decode(), err.decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
