"""Repeated messages: one throttle, two policies. STRANGERS logs the first of a kind
and says the rest once per window; REPEATS logs a burst per key and then how many
more there were and the last. The windows run on a clock the test moves."""

from __future__ import annotations

import asyncio
import heapq
import logging
import tracemalloc
from collections.abc import Callable
from typing import Any, cast

import pytest

from herdsman.runtime.throttle import BURST, SOURCES_KEPT, STRANGERS, Counted, Throttle

LOG = logging.getLogger("herdsman.test.throttle")


class Clock:
    """The part of an event loop a throttle uses: its time and its timers."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), cast(Any, self))
        heapq.heappush(self._timers, (when, id(handle), handle))
        return handle

    def get_debug(self) -> bool:  # asked by TimerHandle
        return False

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def advance(self, seconds: float) -> None:
        """Move time on, running each timer due by then at its time."""
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled():
                handle._run()
        self.now = end


def summary(counted: Counted) -> str:
    return f"ignored {counted.count:,} messages from {counted.sources} in the last {counted.seconds:.1f} s"  # fmt: skip


def strangers(clock: Clock) -> tuple[Throttle, Callable[[str, int, str], None]]:
    throttle = Throttle(LOG, cast(asyncio.AbstractEventLoop, clock), STRANGERS, window=10)

    def warn(kind: str, pid: int, text: str) -> None:
        throttle.log(kind, logging.WARNING, lambda: text, source=pid, summary=summary)

    return throttle, warn


def test_a_flood_costs_one_line_then_one_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttle, warn = strangers(clock)
    with caplog.at_level(logging.WARNING, LOG.name):
        for _ in range(12_346):
            warn("kind", 999, "ignored a message from pid 999")
        clock.advance(15)  # the window closed: one line with the count
        warn("kind", 7, "not logged: still counted")
        warn("kind", 8, "not logged: still counted")
        clock.advance(10)
        clock.advance(10)  # a quiet window ends the burst
        warn("kind", 5, "a first again")
        warn("other", 5, "another kind is its own")
        throttle.close()
    assert [r.getMessage() for r in caplog.records] == [
        "ignored a message from pid 999",
        "ignored 12,345 messages from pid 999 in the last 10.0 s",
        "ignored 2 messages from 2 processes in the last 10.0 s",
        "a first again",
        "another kind is its own",
    ]


def test_many_senders_are_counted_without_remembering_them_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle, warn = strangers(clock)
    with caplog.at_level(logging.WARNING, LOG.name):
        warn("kind", 1, "first")
        for pid in range(2, 2 + SOURCES_KEPT * 3):
            warn("kind", pid, "first")
        clock.advance(3)
        throttle.close()  # says what was counted so far
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        f"ignored {SOURCES_KEPT * 3} messages from more than {SOURCES_KEPT} processes"
        " in the last 3.0 s",
    ]


def test_repeats_log_a_burst_then_how_many_more_and_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = Throttle(LOG, cast(asyncio.AbstractEventLoop, clock), window=10)
    with caplog.at_level(logging.INFO, LOG.name):
        for i in range(BURST + 5):
            throttle.log("web", logging.INFO, f"web: change {i}")
        throttle.log("web", logging.WARNING, "web: the worst")
        throttle.log("db", logging.INFO, "db: its own window")
        clock.advance(10)  # the window ended: its summary, at its worst level
        throttle.log("web", logging.INFO, "web: a new window")
        throttle.close()
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records[:BURST] == [(logging.INFO, f"web: change {i}") for i in range(BURST)]
    assert records[BURST:] == [
        (logging.INFO, "db: its own window"),
        (logging.WARNING, "web: 6 more messages in the last 10s, the last: the worst"),
        (logging.INFO, "web: a new window"),
    ]


def test_a_key_that_logged_without_a_flood_holds_little() -> None:
    # The daemon's changes keep a window per instance for as long as it runs:
    # thousands of them, almost all for keys that never flooded.
    clock = Clock()
    throttle = Throttle(LOG, cast(asyncio.AbstractEventLoop, clock), window=10)
    keys = [f"web.{i}" for i in range(2000)]
    messages = [f"{key}: stopped -> starting" for key in keys]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, message in zip(keys, messages, strict=True):
            throttle.log(key, logging.DEBUG, message)
        per_key = (tracemalloc.get_traced_memory()[0] - before) / len(keys)
    finally:
        tracemalloc.stop()
    assert per_key < 200, f"{per_key:.0f} bytes per key"
