"""What herdsman reads of a process in /proc: its stat fields, its start time (which
tells a process from a later one that reuses its pid), whether it is a zombie, and
the boot id. (Processes found by their environment: leftovers.py.)
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

# /proc gives times in clock ticks: this many nanoseconds each (100 a second).
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat from field 3 (the state) on; None if no such process.

    The command name (field 2) may hold spaces and parentheses: split after its end.
    """
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    end = stat.rfind(b")")
    return stat[end + 2 :].split() if end >= 0 else None


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot; None if there is no such process."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22 of the whole line


def boot_clock() -> int:
    """The clock /proc's start times are read from (CLOCK_BOOTTIME), in nanoseconds."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def start_time_between(before: int, after: int) -> int | None:
    """The start time (as process_start_time gives it) of a process made between two
    readings of boot_clock(), if both fall in the same clock tick; None if they do not
    (read it from /proc then). The kernel stamps a process with that clock as it
    makes it, and /proc shows the stamp in whole ticks: a spawn of 0.3 ms straddles
    a tick about once in 30 (on a busy machine, where spawns take longer, up to one
    in seven), and the read it saves, 14 us per instance, was a tenth of the loop's
    work for each instance of a big herd's start (state.json records it)."""
    tick = before // TICK_NS
    return tick if after // TICK_NS == tick else None


def parent_pid(pid: int) -> int | None:
    """The parent of `pid`; None if there is no such process."""
    fields = proc_stat(pid)
    return int(fields[1]) if fields else None  # field 4 of the whole line


def zombie_status(pid: int) -> int | None:
    """The wait status of `pid` if it is a zombie not yet reaped by its parent.

    /proc shows it (field 52 of stat) until the parent collects it: for an adopted
    process whose parent is some other reaper, the best there is.
    """
    fields = proc_stat(pid)
    if not fields or fields[0] != b"Z" or len(fields) < 50:
        return None
    return int(fields[49])


def fd_inode(fd: int) -> int:
    return os.fstat(fd).st_ino
