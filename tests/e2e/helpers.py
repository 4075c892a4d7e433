"""What the e2e tests of a real daemon share: the CLI as a user runs it, the status
document, and the numbers in a log file of a service that writes numbered lines."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def herdsman(
    cwd: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
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
