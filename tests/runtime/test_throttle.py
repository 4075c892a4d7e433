"""Repeated warnings: the first is logged, the rest counted and said once per window."""

from __future__ import annotations

import asyncio
import logging

import pytest

from herdsman.runtime.throttle import SOURCES_KEPT, Throttle

LOG = logging.getLogger("herdsman.test.throttle")


def summary(count: int, who: str, took: float) -> str:
    return f"ignored {count:,} messages from {who} in the last {took:.1f} s"


def test_a_flood_costs_one_line_then_one_per_window(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> None:
        throttle = Throttle(LOG, window=0.2)
        for _ in range(12_346):
            throttle.warn("kind", 999, lambda: "ignored a message from pid 999", summary)
        await asyncio.sleep(0.3)  # the window closed: one line with the count
        throttle.warn("kind", 7, lambda: "not logged: still counted", summary)
        throttle.warn("kind", 8, lambda: "not logged: still counted", summary)
        await asyncio.sleep(0.3)
        await asyncio.sleep(0.3)  # a quiet window ends the burst
        throttle.warn("kind", 5, lambda: "a first again", summary)
        throttle.warn("other", 5, lambda: "another kind is its own", summary)
        throttle.close()

    with caplog.at_level(logging.WARNING, LOG.name):
        asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ignored a message from pid 999"
    assert lines[1].startswith("ignored 12,345 messages from pid 999 in the last 0.")
    assert lines[2].startswith("ignored 2 messages from 2 processes in the last 0.")
    assert lines[3:] == ["a first again", "another kind is its own"]


def test_many_senders_are_counted_without_remembering_them_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> None:
        throttle = Throttle(LOG, window=10)
        throttle.warn("kind", 1, lambda: "first", summary)
        for pid in range(2, 2 + SOURCES_KEPT * 3):
            throttle.warn("kind", pid, lambda: "first", summary)
        throttle.close()  # says what was counted so far

    with caplog.at_level(logging.WARNING, LOG.name):
        asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "first"
    assert lines[1].startswith(
        f"ignored {SOURCES_KEPT * 3} messages from more than {SOURCES_KEPT} processes"
    )
    assert len(lines) == 2
