"""Repeated log messages, counted instead of written one by one.

An instance crash-looping with no backoff changes state hundreds of times a
second; a line each would fill the disk (and cost more than the respawns). Per
key (an instance), the first `burst` messages of a window are logged as they
come; the rest are only counted, and when the window ends one line says how many
there were and what the last one was.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

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
