"""Repeated warnings, logged with a count instead of once each.

A flood (datagrams from a stranger on the notify socket, a misbehaving sender)
must not become a flood of log lines: the first warning of a kind is logged, the
rest within the next WINDOW seconds are counted, and when the window closes one
line says how many there were and from whom (`ignored 12,345 notify messages from
pid 999 in the last 10 s`). A flood that goes on costs one line per window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

WINDOW = 10.0  # seconds
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
