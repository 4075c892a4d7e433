"""Processes that left an instance's process group (`setsid`, a double fork) are
stopped with it.

They carry the instance's marker in their environment (HERDSMAN_STATE_DIR and
HERDSMAN_INSTANCE, see leftovers.py), and since the daemon is a child subreaper,
once the process that started them is gone they are reparented to the daemon:
then they are its direct children that are no instance's main process, which
the kernel lists in /proc/self/task/*/children. So whenever a main process ends
or an orphan is reaped (its own children come to us next), the daemon's
children are looked at, and a marked one is killed unless its instance runs a
main process that is older than it (then it is that process's, left behind by a
parent of its own: it runs on with the instance).

Processes of an instance adopted after a crash were reparented elsewhere; when
such an instance ends, all of /proc is looked at instead. What clears its
environment and leaves its process group is not caught (a cgroup would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Container
from pathlib import Path

from herdsman.runtime.leftovers import Marked, scan
from herdsman.runtime.procfs import process_start_time

# (instance name) -> its main process's (pid, start time), or None without one.
MainOf = Callable[[str], tuple[int, int | None] | None]
# Between two looks at the daemon's children, at least: a herd that stops ends
# thousands of main processes within seconds, and each look reads every child.
SWEEP_GAP = 0.02


def children() -> list[int]:
    """The daemon's direct children, from the kernel's per-thread lists."""
    found: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for task in tasks:
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/children", "rb") as f:
            found.extend(map(int, f.read().split()))
    return found


class Escapes:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state_dir: Callable[[], Path],
        main_of: MainOf,
        mains: Callable[[], Container[int]],
        spawning: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._state_dir = state_dir
        self._main_of = main_of
        self._mains = mains  # every instance's main pid now (and maybe more of ours)
        self._spawning = spawning  # whether a spawn is in flight (see _sweep_now)
        self._scheduled = False
        self._put_off: asyncio.TimerHandle | None = None  # the latest look, if put off
        self._last = -SWEEP_GAP  # loop time of the last look
        self._everywhere = False
        self._reaped = asyncio.Event()

    def soon(self, *, everywhere: bool = False) -> None:
        """Look once this loop turn is over (one look for a batch of exits), or
        SWEEP_GAP after the last look if that is later; `everywhere`: an adopted
        instance ended, look at all of /proc."""
        self._everywhere = self._everywhere or everywhere
        if not self._scheduled:
            self._scheduled = True
            at = self._last + SWEEP_GAP
            if at <= self._loop.time():
                self._loop.call_soon(self._sweep_now)
            else:
                self._loop.call_at(at, self._sweep_now)

    def orphan_reaped(self) -> None:
        """A process reparented to us ended: its children are ours now."""
        self._reaped.set()
        self.soon()

    def spawns_landed(self) -> None:
        """No spawn is in flight any more: a look put off for one is taken now."""
        if self._put_off is not None:
            self._sweep_now()

    def _sweep_now(self) -> None:
        if self._put_off is None and self._spawning():
            # After an exit, its respawn is in flight: the spawning thread needs the
            # GIL to reach posix_spawn, and the look (0.1 to 0.4 ms) held it up, so
            # the look waits until the spawns have landed (once, SWEEP_GAP at most).
            self._put_off = self._loop.call_later(SWEEP_GAP, self._sweep_now)
            return
        if self._put_off is not None:
            self._put_off.cancel()
            self._put_off = None
        self._scheduled = False
        self._last = self._loop.time()
        everywhere, self._everywhere = self._everywhere, False
        self.sweep(everywhere=everywhere)

    def sweep(self, *, everywhere: bool = False, every_instance: bool = False) -> int:
        """Kill the marked processes that no running instance keeps; how many.
        `every_instance`: at shutdown, whatever instance they are of."""
        mains = self._mains()
        if everywhere:
            found = [m for m in scan(self._state_dir()) if m.pid not in mains]
        else:
            candidates = [pid for pid in children() if pid not in mains]
            found = scan(self._state_dir(), candidates) if candidates else []
        killed = 0
        for marked in found:
            if every_instance or not self._kept(marked):
                killed += _kill(marked.pid)
        return killed

    def _kept(self, marked: Marked) -> bool:
        main = self._main_of(marked.instance)
        if main is None:
            return False
        pid, start_time = main
        if start_time is None:
            start_time = process_start_time(pid)
        # Started after the instance's main process: one of its own, still wanted.
        return start_time is not None and start_time <= marked.start_time

    async def drain(self) -> None:
        """At shutdown, every instance stopped: kill every marked process, also those
        that become our children as their parents die, until none is left (the
        caller bounds how long)."""
        everywhere = True
        while self.sweep(everywhere=everywhere, every_instance=True):
            everywhere = False
            self._reaped.clear()
            # Each killed one, once reaped, may hand us children of its own. (A
            # killed process that is not our child is not reaped by us: the
            # timeout bounds the wait for it.)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reaped.wait(), 0.2)


def _kill(pid: int) -> int:
    """SIGKILL to `pid` and, if it leads one, its process group; 1 if it was sent."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return 0
    return 1
