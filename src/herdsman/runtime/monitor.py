"""Resource sampling of instances' process trees, read from /proc.

A sample covers the main process and all its descendants: CPU %, RSS, number of
processes and open fds. Sampling costs CPU, so it happens on demand (someone
asks for status or metrics, and then at most once a second) and periodically
only for instances with a `memory_limit`. A process that vanishes mid-sample is
simply left out.

Each process costs three small reads and a directory listing: its stat (state,
CPU times, threads, start time), its statm (resident pages, what psutil's
memory_info().rss reads; stat's own rss field is counted apart and runs lower),
its fd directory, and the children of its thread. psutil reads the same files but
opened twice as many and spent three times as long per process (105 us against
33 us here): a pass over 8,000 instances took 1.3 s of the daemon's CPU, while a
`status` waited for slices of it. tests/runtime/test_monitor.py holds the samples
to psutil's view. psutil is imported only for the daemon's own usage (metrics).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from herdsman.runtime.procfs import boot_clock

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_READ = os.O_RDONLY | os.O_CLOEXEC


@dataclass(slots=True)
class Sample:
    """The resources of an instance's process tree at one time."""

    at: float  # monotonic
    cpu_seconds: float  # user + system, whole tree
    cpu_percent: float
    rss_bytes: int
    processes: int
    open_fds: int


@cache
def _psutil() -> ModuleType:
    import psutil

    return psutil


def _read(path: str) -> bytes:
    """A file of /proc whose text fits in one read (stat, statm)."""
    fd = os.open(path, _READ)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _children(path: str) -> list[int]:
    """The pids in a thread's children file, however many (a read stops short of a
    page: read to the end)."""
    fd = os.open(path, _READ)
    try:
        data = os.read(fd, 4096)
        while more := os.read(fd, 65536):
            data += more
    finally:
        os.close(fd)
    return [int(child) for child in data.split()]


def sample_tree(pid: int, previous: Sample | None) -> Sample | None:
    """One sample of the tree under `pid`, or None if the main process is gone."""
    now = time.monotonic()
    ticks = rss = fds = count = 0
    started = None  # the main process's start, in ticks since boot
    todo = [pid]
    while todo:
        member = todo.pop()
        proc = f"/proc/{member}"
        try:
            stat = _read(f"{proc}/stat")
            # After the command name (field 2), which may hold spaces and parentheses.
            fields = stat[stat.rfind(b")") + 2 :].split()
            if fields[0] == b"Z":
                continue  # exited and not yet reaped: it holds nothing any more
            resident = int(_read(f"{proc}/statm").split()[1])
            member_fds = len(os.listdir(f"{proc}/fd"))
        # EACCES: another user's process (psutil's AccessDenied); EMFILE: the daemon
        # is out of fds; ENOENT, ESRCH: gone. Left out, as psutil's sampling left it.
        except (OSError, IndexError, ValueError):
            continue
        # A child is listed under the thread that forked it: read every thread's
        # list (one thread, the most common: its list is the process's own).
        threads = fields[17]  # field 20 of the whole line
        try:
            tasks = [str(member)] if threads == b"1" else os.listdir(f"{proc}/task")
        except OSError:
            tasks = []  # gone meanwhile: its children no longer count either
        for task in tasks:
            try:
                todo.extend(_children(f"{proc}/task/{task}/children"))
            except OSError:
                continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
        rss += resident
        fds += member_fds
        count += 1
        if member == pid:
            started = int(fields[19])  # field 22
    if count == 0:
        return None
    cpu = ticks / TICKS
    if previous is not None and now > previous.at:
        percent = max(0.0, (cpu - previous.cpu_seconds) / (now - previous.at) * 100.0)
    elif started is not None:
        # No earlier sample: the average since the main process started.
        age = boot_clock() / 1e9 - started / TICKS
        percent = cpu / max(age, 1e-3) * 100.0
    else:
        percent = 0.0
    return Sample(now, cpu, round(percent, 1), rss * PAGE, count, fds)


def own_usage() -> tuple[float, int]:
    """The daemon's own CPU seconds and RSS bytes."""
    me = _psutil().Process()
    with me.oneshot():
        times = me.cpu_times()
        return times.user + times.system, me.memory_info().rss
