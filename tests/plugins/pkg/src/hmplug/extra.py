"""Not an entry point: reached through `settings.plugins = ["hmplug.extra:note"]`."""

from __future__ import annotations

import asyncio
from typing import Any

from hmplug.hooks import append


async def note(event: dict[str, Any], path: str) -> None:
    line = f"{event['instance']} {event['previous']} -> {event['state']}\n"
    await asyncio.to_thread(append, path, line)  # an async plugin must not block the loop
