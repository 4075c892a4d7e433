"""Signals handled on the event loop, each at most once per loop turn.

asyncio's `add_signal_handler` writes a byte per delivered signal to the loop's
self-pipe and calls the handler once per byte it reads back. A crash loop sends
thousands of SIGCHLDs a second: the pipe overflows (a traceback per lost byte in
the log), each byte costs a callback, and a SIGTERM whose byte was dropped is
never acted on. Here the Python-level handler counts what arrived and puts one
dispatch at the end of the loop's callbacks, the wakeup fd only wakes the loop,
and the dispatch calls each handler for what was counted: SIGCHLD once however
many came, other signals once per delivery. A full wakeup pipe then loses a
wake-up (the pipe is readable anyway), never a signal.

The dispatch is queued by the handler rather than run by the wakeup fd's reader
so that it comes before the readers woken with it: a process that exits closes
its pipes before its parent gets SIGCHLD, and the log pumps' end-of-file work
(0.12 ms on a cold cache) held up the reap, and the respawn, by as much.

A signal that comes while the loop waits for its fds (in epoll_wait, which it
interrupts) is dispatched at once, from inside that wait, rather than queued: the
loop has nothing else in hand then, and the queued dispatch waited for epoll_wait
to be called again and for the loop's turn around it (0.05 ms of the way from an
exit to its respawn, cold). The byte the signal wrote to the wakeup fd makes the
wait, called again, return at once: what the dispatch queued runs in that turn.

The process has one wakeup fd: everything on the daemon's loop that handles
signals goes through one `Signals`, never through `loop.add_signal_handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import selectors
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

# The code of the loop's wait for its fds (asyncio's selector on Linux).
_WAIT = selectors.EpollSelector.select.__code__


class Signals:
    def __init__(self) -> None:
        self._handlers: dict[int, tuple[Callable[[], None], bool]] = {}
        self._previous: dict[int, Any] = {}  # what signal.getsignal() gave
        self._pending: dict[int, int] = {}
        self._scheduled = False  # a dispatch is queued on the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        # The dispatch's own: the handler runs inside whatever code the signal
        # interrupted, whose context is not the handlers' business.
        self._context = contextvars.copy_context()
        self._read_fd = self._write_fd = -1
        self._old_wakeup_fd = -1

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(self._read_fd, self._woken)
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

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the loop's thread: count, and dispatch now if
        # the loop was waiting for its fds, else queue one dispatch (appending a
        # callback is all asyncio's own signal handling does).
        self._pending[signum] = self._pending.get(signum, 0) + 1
        loop = self._loop
        if self._scheduled or loop is None or loop.is_closed():
            return
        if (
            frame is not None
            and frame.f_code is _WAIT
            and frame.f_locals.get("self") is getattr(loop, "_selector", None)
        ):
            try:
                self._context.run(self._dispatch)
            except Exception as error:  # to the loop's handler, as from a callback
                loop.call_exception_handler(
                    {"message": "exception in a signal's handler", "exception": error}
                )
            return
        self._scheduled = True
        loop.call_soon(self._dispatch, context=self._context)

    def _woken(self) -> None:
        """The wakeup fd only wakes the loop: what woke it is queued already."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read_fd, 4096):
                pass

    def _dispatch(self) -> None:
        self._scheduled = False
        # A signal counted from here on queues a dispatch of its own.
        pending, self._pending = self._pending, {}
        for signum, count in pending.items():
            entry = self._handlers.get(signum)
            if entry is None:
                continue
            callback, coalesce = entry
            for _ in range(1 if coalesce else count):
                callback()
