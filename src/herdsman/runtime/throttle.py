"""Repeated log messages, counted instead of written one by one.

`LogThrottle` (state changes of crash-looping instances) logs the first `burst` of
a key's window; `Throttle` (warnings a stranger can cause: ignored sd_notify
datagrams) logs only the first of a kind, and when its window closes one line
says how many there were and from whom (`ignored 12,345 notify messages from pid
999 in the last 10 s`).

An instance crash-looping with no backoff changes state hundreds of times a
second; a line each would fill the disk (and cost more than the respawns). Per
key (an instance), the first `burst` messages of a window are logged as they
come; the rest are only counted, and when the window ends one line says how many
there were and what the last one was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

BURST = 20
WINDOW = 10.0  # seconds


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0
    last: str = ""
    level: int = logging.INFO


class LogThrottle:
    def __init__(
        self,
        log: logging.Logger,
        loop: asyncio.AbstractEventLoop,
        burst: int = BURST,
        window: float = WINDOW,
    ) -> None:
        self._log = log
        self._loop = loop
        self._burst = burst
        self._window = window
        self._windows: dict[str, _Window] = {}
        self._summary: asyncio.TimerHandle | None = None

    def log(self, key: str, level: int, message: str) -> None:
        """Log `message`, unless `key` already had `burst` lines in this window."""
        now = self._loop.time()
        window = self._windows.get(key)
        if window is None or now - window.start >= self._window:
            if window is not None and window.suppressed:
                self._summarize(key, window)
            window = self._windows[key] = _Window(now)
        if window.logged < self._burst:
            window.logged += 1
            self._log.log(level, "%s", message)
            return
        window.suppressed += 1
        window.last, window.level = message, max(window.level, level)
        if self._summary is None:
            self._summary = self._loop.call_at(window.start + self._window, self._summarize_due)

    def close(self) -> None:
        """Say what is still counted (the daemon is stopping or handing over)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        for key, window in self._windows.items():
            if window.suppressed:
                self._summarize(key, window)
        self._windows.clear()

    def _summarize(self, key: str, window: _Window) -> None:
        self._log.log(
            window.level,
            "%s: %s more messages in the last %gs, the last: %s",
            key,
            f"{window.suppressed:,}",
            self._window,
            window.last.removeprefix(f"{key}: "),
        )
        window.suppressed = 0

    def _summarize_due(self) -> None:
        self._summary = None
        now = self._loop.time()
        due = None
        for key, window in list(self._windows.items()):
            ends = window.start + self._window
            if ends <= now:
                if window.suppressed:
                    self._summarize(key, window)
                del self._windows[key]
            elif window.suppressed and (due is None or ends < due):
                due = ends
        if due is not None:
            self._summary = self._loop.call_at(due, self._summarize_due)


SOURCES_KEPT = 64  # distinct senders remembered per window, for the summary


@dataclass
class _Burst:
    summary: Callable[[int, str, float], str]
    opened: float
    count: int = 0
    sources: set[int] = field(default_factory=set)
    more_sources: bool = False


class Throttle:
    """Used on the event loop's thread (its windows are timers of the running loop)."""

    def __init__(self, log: logging.Logger, window: float = WINDOW) -> None:
        self._log = log
        self._window = window
        self._bursts: dict[str, _Burst] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def warn(
        self,
        kind: str,
        source: int,
        first: Callable[[], str],
        summary: Callable[[int, str, float], str],
    ) -> None:
        """A warning of `kind` from `source` (a pid): logged if it is the first of its
        kind in a window (`first()` makes the text only then), else counted;
        `summary(count, sources, window)` says what was counted."""
        burst = self._bursts.get(kind)
        if burst is None:
            self._log.warning("%s", first())
            self._open(kind, summary)
            return
        burst.count += 1
        if len(burst.sources) < SOURCES_KEPT:
            burst.sources.add(source)
        elif source not in burst.sources:
            burst.more_sources = True

    def _open(self, kind: str, summary: Callable[[int, str, float], str]) -> None:
        loop = asyncio.get_running_loop()
        self._bursts[kind] = _Burst(summary, loop.time())
        self._timers[kind] = loop.call_later(self._window, self._close, kind)

    def _close(self, kind: str, *, reopen: bool = True) -> None:
        burst = self._bursts.pop(kind)
        self._timers.pop(kind).cancel()
        if not burst.count:
            return  # quiet: the next one is logged as a first again
        took = asyncio.get_running_loop().time() - burst.opened
        self._log.warning("%s", burst.summary(burst.count, _sources(burst), took))
        if reopen:  # still flooding, maybe: the next window's count is said when it closes
            self._open(kind, burst.summary)

    def close(self) -> None:
        """Say what was counted so far (the daemon stops or re-execs)."""
        for kind in list(self._bursts):
            self._close(kind, reopen=False)


def _sources(burst: _Burst) -> str:
    if len(burst.sources) == 1 and not burst.more_sources:
        return f"pid {next(iter(burst.sources))}"
    more = "more than " if burst.more_sources else ""
    return f"{more}{len(burst.sources)} processes"
