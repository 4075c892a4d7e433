"""Repeated log messages, counted instead of written one by one.

An instance crash-looping with no backoff changes state hundreds of times a
second, and a stranger can send sd_notify datagrams or API requests as fast as it
likes; a line each would fill the disk (and cost more than what it reports). Per
key, the first messages of a window are logged as they come; the rest are only
counted, and when the window ends one line says how many there were.

Two policies: REPEATS (an instance's state changes, refused API clients) logs the
first BURST of a window and then says how many more there were and the last one
(`web: 1,234 more messages in the last 10s, the last: ...`); STRANGERS (warnings
a stranger can cause) logs only the first, and while the flood goes on says once
per window how many there were and from whom (`ignored 12,345 notify messages
from pid 999 in the last 10 s`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

BURST = 20
WINDOW = 10.0  # seconds
SOURCES_KEPT = 64  # distinct senders remembered per window, for the summary


@dataclass(slots=True)
class Policy:
    """How a kind of message is throttled."""

    burst: int  # messages of a window logged as they come
    # A window that counted some is followed at once by one in which nothing is
    # logged as it comes (a flood goes on: only its counts are said); otherwise the
    # next message opens a window of its own.
    steady: bool


REPEATS = Policy(burst=BURST, steady=False)
STRANGERS = Policy(burst=1, steady=True)


@dataclass(slots=True)
class Counted:
    """What a window counted, for its summary line."""

    key: str
    count: int
    last: str  # the last message counted
    sources: str  # `pid 999`, `3 processes`, `more than 64 processes`
    seconds: float  # since the window opened


Summary = Callable[[Counted], str]


@dataclass(slots=True, eq=False)
class _Window:
    """One per key (an instance, for REPEATS) as long as the daemon runs: nothing in
    it that only a flood needs is made before one comes (an empty set is 216 bytes,
    a bound method 64)."""

    start: float
    summary: Summary | None = None  # None: Throttle's own (how many more, and the last)
    logged: int = 0
    suppressed: int = 0
    last: str = ""
    level: int = logging.INFO
    sources: set[int] | None = None  # the first source counted makes it
    more_sources: bool = False


class Log(Protocol):
    """Where lines go: a logging.Logger, or logfile.Lines. A message is never
    %-formatted (no arguments)."""

    def log(self, level: int, msg: str, /) -> None: ...


class Throttle:
    """Used on the event loop's thread (its windows end on the loop's timers)."""

    def __init__(
        self,
        log: Log,
        loop: asyncio.AbstractEventLoop | None = None,
        policy: Policy = REPEATS,
        window: float = WINDOW,
    ) -> None:
        self._log = log
        self._loop = loop
        self._policy = policy
        self._window = window
        self._windows: dict[str, _Window] = {}
        self._summary: asyncio.TimerHandle | None = None

    def log(
        self,
        key: str,
        level: int,
        message: str | Callable[[], str],
        *,
        source: int | None = None,
        summary: Summary | None = None,
    ) -> None:
        """Log `message` (made only if it is logged, when a callable), unless `key`
        already had its policy's burst in this window: then count it (and `source`,
        a pid). `summary` says what a window counted (default: how many more, and
        the last)."""
        # Most calls of a flood only count: that path stays a few attribute looks.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        window = self._windows.get(key)
        if window is None or now >= window.start + self._window:
            quiet = 0  # how many of the new window's burst are spent
            if window is not None and window.suppressed:
                self._summarize(key, window, now)
                quiet = self._policy.burst if self._policy.steady else 0
            window = self._windows[key] = _Window(now, summary, quiet)
        if window.logged < self._policy.burst:
            window.logged += 1
            self._log.log(level, message if isinstance(message, str) else message())
            return
        window.suppressed += 1
        if level > window.level:
            window.level = level
        if isinstance(message, str):
            window.last = message
        if source is not None:
            sources = window.sources
            if sources is None:
                window.sources = {source}
            elif source not in sources:
                if len(sources) < SOURCES_KEPT:
                    sources.add(source)
                else:
                    window.more_sources = True
        if self._summary is None:
            self._summary = loop.call_at(window.start + self._window, self._summarize_due)

    def close(self) -> None:
        """Say what is still counted (the daemon is stopping or handing over)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        now = (self._loop or asyncio.get_running_loop()).time()
        for key, window in self._windows.items():
            if window.suppressed:
                self._summarize(key, window, now)
        self._windows.clear()

    def _more(self, counted: Counted) -> str:
        last = counted.last.removeprefix(f"{counted.key}: ")
        return (
            f"{counted.key}: {counted.count:,} more messages in the last {self._window:g}s,"
            f" the last: {last}"
        )

    def _summarize(self, key: str, window: _Window, now: float) -> None:
        counted = Counted(key, window.suppressed, window.last, _sources(window), now - window.start)
        self._log.log(window.level, (window.summary or self._more)(counted))
        window.suppressed = 0

    def _summarize_due(self) -> None:
        self._summary = None
        loop = self._loop or asyncio.get_running_loop()
        now = loop.time()
        due = None
        for key, window in list(self._windows.items()):
            ends = window.start + self._window
            if ends <= now:
                counted = window.suppressed
                if counted:
                    self._summarize(key, window, now)
                del self._windows[key]
                if counted and self._policy.steady:  # still flooding, maybe: count on
                    self._windows[key] = _Window(now, window.summary, logged=self._policy.burst)
            elif window.suppressed and (due is None or ends < due):
                due = ends
        if due is not None:
            self._summary = loop.call_at(due, self._summarize_due)


def _sources(window: _Window) -> str:
    sources = window.sources or set()
    if len(sources) == 1 and not window.more_sources:
        return f"pid {next(iter(sources))}"
    more = "more than " if window.more_sources else ""
    return f"{more}{len(sources)} processes"
