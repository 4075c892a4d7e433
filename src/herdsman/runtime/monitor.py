"""Resource sampling of instances' process trees with psutil.

A sample covers the main process and all its descendants: CPU %, RSS, number of
processes and open fds. Sampling costs CPU, so it happens on demand (someone
asks for status or metrics, and then at most once a second) and periodically
only for instances with a `memory_limit`. A process that vanishes mid-sample is
simply left out.

psutil is imported at the first sample, not with the daemon: its 1.3 MB stay out
of a daemon nobody asks for samples (no `status`, no metrics, no memory_limit).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any


@dataclass(slots=True)
class Sample:
    """The resources of an instance's process tree at one time."""

    at: float  # monotonic
    cpu_seconds: float  # user + system, whole tree
    cpu_percent: float
    rss_bytes: int
    processes: int
    open_fds: int
    # The psutil.Process of each pid in the tree, for the next sample of it: one made
    # afresh reads its stat and the whole system's /proc/stat (boot time, for its
    # start time) before the sample reads anything. 0.5 kB each.
    members: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)


@cache
def _psutil() -> ModuleType:
    import psutil

    return psutil


def _descendants(pid: int) -> list[int]:
    """`pid` and all its descendants, from the kernel's per-task children lists.

    psutil's `children(recursive=True)` scans every process on the machine for
    each call; sampling 300 instances that way costs seconds, this costs one
    small read per process in the tree.
    """
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            # A child is listed under the thread that forked it: read every thread's list.
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue  # gone: it no longer counts, nor do its children
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", "rb") as f:
                    todo.extend(int(child) for child in f.read().split())
            except OSError:
                continue
    return found


def sample_tree(pid: int, previous: Sample | None) -> Sample | None:
    """One sample of the tree under `pid`, or None if the main process is gone."""
    psutil = _psutil()
    gone = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError)
    now = time.monotonic()
    cpu = 0.0
    rss = fds = count = 0
    started = None
    known = previous.members if previous is not None else {}
    members = {}
    for member in _descendants(pid):
        try:
            proc = known.get(member)
            if proc is None:
                proc = psutil.Process(member)
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue  # exited and not yet reaped: it holds nothing any more
                times = proc.cpu_times()
                member_rss = proc.memory_info().rss
                member_fds = proc.num_fds()
                if member == pid:
                    started = proc.create_time()
        # OSError: psutil passes on EMFILE when the daemon is out of fds; no sample then.
        except gone:
            continue
        members[member] = proc
        cpu += times.user + times.system
        rss += member_rss
        fds += member_fds
        count += 1
    if count == 0:
        return None
    if previous is not None and now > previous.at:
        percent = max(0.0, (cpu - previous.cpu_seconds) / (now - previous.at) * 100.0)
    elif started is not None:
        # No earlier sample: the average since the main process started.
        percent = cpu / max(time.time() - started, 1e-3) * 100.0
    else:
        percent = 0.0
    return Sample(now, cpu, round(percent, 1), rss, count, fds, members)


def own_usage() -> tuple[float, int]:
    """The daemon's own CPU seconds and RSS bytes."""
    me = _psutil().Process()
    with me.oneshot():
        times = me.cpu_times()
        return times.user + times.system, me.memory_info().rss
