"""Hook plugins: each is called with the event dict (and its options)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any


class Record:
    """A plain (sync) class: herdsman runs its calls on a worker thread."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def __call__(self, event: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")


def append(path: str | Path, line: str) -> None:
    with Path(path).open("a") as f:
        f.write(line)


async def record_async(event: dict[str, Any], path: str) -> None:
    # An async plugin runs on herdsman's loop: the file is written on a thread.
    await asyncio.to_thread(append, path, json.dumps(event) + "\n")


def explode(event: dict[str, Any]) -> None:
    raise ValueError("hook plugin blew up on purpose")


def block(event: dict[str, Any]) -> None:
    time.sleep(3600)
