"""One home for what a pattern names (core/patterns.py): the daemon (`start web.*`),
the CLI's own selection (`status web.*`, `logs` without a daemon) and top's filter
use the same function, and the daemon's look-ups by exact name agree with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from herdsman.cli import commands
from herdsman.cli.top import model
from herdsman.core import patterns
from herdsman.runtime import requests
from herdsman.runtime.control import ControlError
from tests.runtime.test_daemon import running

HERD = """
[services.web]
command = "sleep 60"
replicas = 3
autostart = false
[services.worker]
command = "sleep 60"
autostart = false
[services.db-main]
command = "sleep 60"
autostart = false
"""
PATTERNS = [
    "web", "web.1", "worker", "db-main", "w*", "*.0", "web.?", "[dw]*", "*", "*-*",
    "db", "web.3", "x*", "WEB", "web.[02]",
]  # fmt: skip


def test_the_daemon_the_cli_and_top_match_with_one_function() -> None:
    assert commands.matches is patterns.matches
    assert model.matches is patterns.matches
    assert requests.matches is patterns.matches
    assert commands.no_match is requests.no_match is patterns.no_match


def test_the_daemon_names_what_the_cli_selects(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, HERD) as daemon:
            documents = daemon.instances()
            for pattern in PATTERNS:
                chosen, unmatched = commands.select(documents, [pattern])
                if unmatched:
                    with pytest.raises(ControlError, match="no instance or service matches"):
                        daemon.requests.match(pattern)
                else:
                    assert [m.name for m in daemon.requests.match(pattern)] == [
                        i["name"] for i in chosen
                    ], pattern

    asyncio.run(body())
