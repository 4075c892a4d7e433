"""Probe plugins: each is called with a dict about the instance and its options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hmplug.hooks import append


async def file_exists(info: dict[str, Any], path: str) -> bool | str:
    """Passes once `path` exists."""
    # An async plugin runs on herdsman's loop: even a stat is done on a thread.
    exists = await asyncio.to_thread(Path(path).exists)
    return True if exists else f"{path} does not exist yet"


class FileProbe:
    """The class form: made once per process with the options, then called."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.calls = 0

    async def __call__(self, info: dict[str, Any]) -> tuple[bool, str]:
        self.calls += 1
        line = f"{info['check']} {info['instance']} {info['pid']} {self.calls}\n"
        await asyncio.to_thread(append, self.path, line)
        return True, "fine"


async def explode(info: dict[str, Any]) -> bool:
    raise RuntimeError("probe plugin blew up on purpose")


async def hang(info: dict[str, Any]) -> bool:
    await asyncio.sleep(3600)
    return True
