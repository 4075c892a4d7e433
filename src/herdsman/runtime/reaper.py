"""Reaping: the daemon is a child subreaper and collects every exit status.

SIGCHLD wakes the event loop (through the signal wakeup fd, no thread and no
polling); each wake-up drains `waitpid(-1, WNOHANG)` and hands each status to
whoever watches that pid. Orphans we inherit (daemonizing grandchildren) are
reaped too, so no zombie is left behind, also when herdsman runs as PID 1.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_CHILD_SUBREAPER = 36

ExitCallback = Callable[[int | None, int | None], None]


def become_subreaper() -> bool:
    """Ask the kernel to reparent orphaned descendants to us instead of PID 1."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def decode_status(status: int) -> tuple[int | None, int | None]:
    """A wait status as (exit code, signal number); one of them is None."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: dict[int, ExitCallback] = {}
        self.orphans_reaped = 0

    def start(self) -> None:
        become_subreaper()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        # When thousands of children exit at once the loop's wakeup pipe fills
        # up; the bytes already queued guarantee a wake-up and `reap` drains every
        # exit, so a full pipe loses nothing and is not worth a warning per signal.
        wakeup_fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)
        self.reap()  # children that died before the handler was installed

    def close(self) -> None:
        self._loop.remove_signal_handler(signal.SIGCHLD)

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call `callback(code, signal)` when `pid` exits.

        Safe right after spawning: the SIGCHLD handler runs on the loop, after
        the caller's synchronous code has registered the pid.
        """
        self._watched[pid] = callback

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            callback = self._watched.pop(pid, None)
            if callback is None:
                self.orphans_reaped += 1
                continue
            code, sig = decode_status(status)
            callback(code, sig)
