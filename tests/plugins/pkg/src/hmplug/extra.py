"""Not an entry point: reached through `settings.plugins = ["hmplug.extra:note"]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


async def note(event: dict[str, Any], path: str) -> None:
    with Path(path).open("a") as f:
        f.write(f"{event['instance']} {event['previous']} -> {event['state']}\n")
