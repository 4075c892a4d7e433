"""Signals handled on the event loop, each at most once per loop turn.

asyncio's `add_signal_handler` writes a byte per delivered signal to the loop's
self-pipe and calls the handler once per byte it reads back. A crash loop sends
thousands of SIGCHLDs a second: the pipe overflows (a traceback per lost byte in
the log), each byte costs a callback, and a SIGTERM whose byte was dropped is
never acted on. Here the Python-level handler only counts what arrived, the
wakeup fd only wakes the loop, and one reader per turn dispatches what was
counted: SIGCHLD once however many came, other signals once per delivery. A full
wakeup pipe then loses a wake-up (the pipe is readable anyway), never a signal.

The process has one wakeup fd: everything on the daemon's loop that handles
signals goes through one `Signals`, never through `loop.add_signal_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any


class Signals:
    def __init__(self) -> None:
        self._handlers: dict[int, tuple[Callable[[], None], bool]] = {}
        self._previous: dict[int, Any] = {}  # what signal.getsignal() gave
        self._pending: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._read_fd = self._write_fd = -1
        self._old_wakeup_fd = -1

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(self._read_fd, self._dispatch)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

    def add(self, signum: int, callback: Callable[[], None], *, coalesce: bool = False) -> None:
        """Call `callback()` on the loop when `signum` arrives; with `coalesce`, once
        per loop turn however many arrived since the last."""
        self._previous.setdefault(signum, signal.getsignal(signum))
        self._handlers[signum] = (callback, coalesce)
        signal.signal(signum, self._caught)
        # Restart interrupted system calls: a signal must not fail a read elsewhere.
        signal.siginterrupt(signum, False)

    def remove(self, signum: int) -> None:
        if self._handlers.pop(signum, None) is not None:
            signal.signal(signum, self._previous.pop(signum))
        self._pending.pop(signum, None)

    def close(self) -> None:
        for signum in list(self._handlers):
            self.remove(signum)
        if self._loop is not None and self._read_fd >= 0:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._read_fd = self._write_fd = -1

    def _caught(self, signum: int, _frame: FrameType | None) -> None:
        # Runs between two bytecodes of the loop's thread: count, nothing more.
        self._pending[signum] = self._pending.get(signum, 0) + 1

    def _dispatch(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass
        # A signal counted from here on is dispatched next turn (its byte wakes it).
        pending, self._pending = self._pending, {}
        for signum, count in pending.items():
            entry = self._handlers.get(signum)
            if entry is None:
                continue
            callback, coalesce = entry
            for _ in range(1 if coalesce else count):
                callback()
