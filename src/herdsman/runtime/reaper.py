"""Reaping: the daemon is a child subreaper and collects every exit status.

SIGCHLD wakes the event loop (through the signal wakeup fd, no thread and no
polling, coalesced: see signals.py); each wake-up collects up to REAP_BATCH exit
statuses and hands each to whoever watches that pid as soon as it is collected,
leaving the rest to the next loop turn, so a crash loop never holds the loop for
long (each exit may respawn at once). An exit is read with `waitid(WNOWAIT)`,
which leaves the zombie, and released (`waitpid(pid)`) once it has been told, its
respawn on its way. Each `waitid(P_ALL)` looks at every child, thousands of them:
the processes whose pipes hung up (a process's fds close as it exits, before its
parent is told; the supervisor hints at them) are looked at alone first, and the
look that finds no more waits until the exit before it has been told.
Orphans we inherit (daemonizing grandchildren) are reaped too, so no zombie is
left behind, also when herdsman runs as PID 1.

Processes that are not our children (services adopted after the daemon itself
was killed and started again) are watched through a pidfd, which becomes
readable when the process exits; their exit status is not ours to collect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any, TypeVar

from herdsman.runtime.procfs import zombie_status
from herdsman.runtime.signals import Signals

PR_SET_CHILD_SUBREAPER = 36
REAP_BATCH = 16  # exits handled per loop turn: each may respawn at once

T = TypeVar("T")
# (owner, pid, exit code, signal): called with what `watch` was given with the pid.
ExitCallback = Callable[[T, int, int | None, int | None], None]


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


# A child that exited, left a zombie until its exit is told: releasing it, 0.02 ms,
# comes after the respawn it starts.
_EXITED = os.WEXITED | os.WNOHANG | os.WNOWAIT


def _next_exit(likely: Iterator[int]) -> os.waitid_result | None:
    """The next child that exited, if any: first among the pids `likely` gives, each
    looked at alone, then any child. waitid(P_ALL) looks at every child until it
    finds one that exited: 0.03 ms with 300 of them, 0.35 with 2,000 and 1.5 with
    8,000, between each exit and its respawn."""
    for pid in likely:
        with contextlib.suppress(ChildProcessError):  # collected already, or not ours
            info = os.waitid(os.P_PID, pid, _EXITED)
            if info is not None:
                return info
    try:
        return os.waitid(os.P_ALL, 0, _EXITED)
    except ChildProcessError:  # no child at all
        return None


def _ended(info: os.waitid_result) -> tuple[int | None, int | None]:
    """waitid's answer as (exit code, signal number); one of them is None."""
    if info.si_code == os.CLD_EXITED:
        return info.si_status, None
    return None, info.si_status  # CLD_KILLED or CLD_DUMPED: WEXITED asks for no other


class Reaper:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # pid -> (callback, owner): one tuple a child, not a closure (thousands live).
        self._watched: dict[int, tuple[ExitCallback[Any], Any]] = {}
        self._pidfds: dict[int, int] = {}  # adopted pid -> its pidfd
        self._signals: Signals | None = None
        self._more: asyncio.Handle | None = None  # the next batch, when one was full
        self.orphans_reaped = 0
        # Told once per wake-up that reaped orphans: their children are ours now.
        self.on_orphan: Callable[[], None] | None = None
        # Called before the statuses are collected: takes in the spawns that have
        # landed (their pids become watched), without waiting for the others, and
        # says whether any is still on its way from the spawning thread. An exit
        # collected meanwhile of a pid nobody watches may be one of those: it waits
        # in `_early` for its watch, rather than the loop waiting for the thread.
        self.before_reap: Callable[[], bool] | None = None
        self._early: dict[int, tuple[int | None, int | None]] = {}  # pid -> (code, signal)
        # Pids that most likely exited (the supervisor's: those whose pipes lost their
        # last writer), looked at one by one before every child is (see _next_exit).
        self.likely_exited: Callable[[], Iterable[int]] | None = None

    def start(self, signals: Signals) -> None:
        become_subreaper()
        self._signals = signals
        signals.add(signal.SIGCHLD, self.reap, coalesce=True)
        self.reap()  # children that died before the handler was installed

    def close(self) -> None:
        if self._signals is not None:
            self._signals.remove(signal.SIGCHLD)
        if self._more is not None:
            self._more.cancel()
        for pid in list(self._pidfds):
            self._forget_pidfd(pid)

    def watch_foreign(self, pid: int, callback: ExitCallback[T], owner: T) -> bool:
        """Call `callback(owner, pid, None, None)` when `pid`, which is not our child,
        exits (or with its status, if it can still be read).

        False when there is no such process (any more).
        """
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        os.set_inheritable(pidfd, False)
        self._pidfds[pid] = pidfd
        self._watched[pid] = (callback, owner)
        self._loop.add_reader(pidfd, self._foreign_exited, pid)
        return True

    def watched(self) -> Container[int]:
        """The pids whose exit someone waits for (a live view)."""
        return self._watched.keys()

    def unwatch(self, pid: int) -> None:
        self._forget_pidfd(pid)
        self._watched.pop(pid, None)

    def _foreign_exited(self, pid: int) -> None:
        self._forget_pidfd(pid)
        watcher = self._watched.pop(pid, None)
        if watcher is not None:
            callback, owner = watcher
            status = zombie_status(pid)
            callback(owner, pid, *(decode_status(status) if status is not None else (None, None)))

    def _forget_pidfd(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)

    def watch(self, pid: int, callback: ExitCallback[T], owner: T) -> None:
        """Call `callback(owner, pid, code, signal)` when `pid` exits.

        Safe right after spawning: the SIGCHLD handler runs on the loop, after
        the caller's synchronous code has registered the pid; and a pid collected
        before its spawn's outcome landed is told now, on the loop's next turn.
        """
        ended = self._early.pop(pid, None)
        if ended is not None:
            self._loop.call_soon(callback, owner, pid, *ended)
            return
        self._watched[pid] = (callback, owner)

    def reap(self) -> None:
        if self._more is not None:
            self._more.cancel()  # this call does its work
            self._more = None
        orphans = self.orphans_reaped
        spawning = self.before_reap() if self.before_reap is not None else False
        if self._early and not spawning:
            # No spawn is on its way to claim them: they were orphans after all.
            self.orphans_reaped += len(self._early)
            self._early.clear()
        failed: BaseException | None = None
        likely = iter(self.likely_exited() if self.likely_exited is not None else ())
        for _ in range(REAP_BATCH):
            info = _next_exit(likely)
            if info is None:
                break
            pid = info.si_pid
            ended = _ended(info)
            try:
                watcher = self._watched.pop(pid, None)
                if watcher is None and self.before_reap is not None:
                    # A spawn's process, collected before its outcome was taken in? The
                    # spawn may even have been started by an exit told just before.
                    spawning = self.before_reap()
                    watcher = self._watched.pop(pid, None)
                if watcher is None:
                    if spawning:
                        self._early[pid] = ended  # its spawn may not have landed yet
                    else:
                        self.orphans_reaped += 1
                    continue
                callback, owner = watcher
                try:
                    callback(owner, pid, *ended)
                except Exception as error:  # the others' exits must still be told
                    failed = failed or error
            finally:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # collected: the next waitid looks past it
        else:
            # More may be waiting: after the loop has polled everything else once.
            self._more = self._loop.call_soon(self.reap)
        if self.orphans_reaped != orphans and self.on_orphan is not None:
            self.on_orphan()  # their children are ours now
        if failed is not None:
            raise failed  # to the loop's exception handler (see background.py)
