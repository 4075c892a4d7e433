"""Probe plugins: each is called with a dict about the instance and its options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


async def file_exists(info: dict[str, Any], path: str) -> bool | str:
    """Passes once `path` exists."""
    return True if Path(path).exists() else f"{path} does not exist yet"


class FileProbe:
    """The class form: made once per process with the options, then called."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.calls = 0

    async def __call__(self, info: dict[str, Any]) -> tuple[bool, str]:
        self.calls += 1
        with self.path.open("a") as f:
            f.write(f"{info['check']} {info['instance']} {info['pid']} {self.calls}\n")
        return True, "fine"


async def explode(info: dict[str, Any]) -> bool:
    raise RuntimeError("probe plugin blew up on purpose")


async def hang(info: dict[str, Any]) -> bool:
    await asyncio.sleep(3600)
    return True
