"""What herdsman reads of a process in /proc: its stat fields, its start time (which
tells a process from a later one that reuses its pid), whether it is a zombie, and
the boot id. (Processes found by their environment: leftovers.py.)
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


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
