"""How many more processes the system lets the daemon start.

Every instance is at least one process. What caps them, the first to be reached
wins: the user's `RLIMIT_NPROC` (every process and thread of the daemon's real
user; root is exempt), the cgroup's `pids.max` (systemd's `TasksMax=`, a
container's pids limit; v1 or v2, the cgroup and each of its ancestors), and the
machine's `kernel.pid_max` and `kernel.threads-max`. A fork past any of them fails
with EAGAIN, which the spawner reports as `too many processes` and retries.

Best effort and cheap (a few small files; /proc is scanned only when the user's
limit is within reach): a limit that cannot be read is no limit here.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Room:
    """`left` more processes fit under `limit` (what it is, and how to raise it)."""

    left: int
    limit: str
    raise_it: str


def shortfall(instances: int, what: str = "instances") -> str | None:
    """One sentence when the processes the system still allows are fewer than
    `instances` (`what` they are), else None."""
    room = tightest(instances)
    if room is None or instances <= room.left:
        return None
    return (
        f"the process limit ({room.limit}) leaves room for about {max(room.left, 0)} more "
        f"processes, fewer than the {instances} {what}: raise it ({room.raise_it}); "
        "instances that cannot be started retry until there is room"
    )


def tightest(instances: int) -> Room | None:
    """The limit with the least room left (`instances`: how many are to fit)."""
    rooms = [room for room in (_user(instances), *_cgroups(), _machine()) if room is not None]
    return min(rooms, key=lambda room: room.left, default=None)


def _tasks_on_the_machine() -> int | None:
    """Every task (process or thread) now: /proc/loadavg's `running/total`."""
    try:
        with open("/proc/loadavg", "rb") as f:
            return int(f.read().split()[3].split(b"/")[1])
    except (OSError, ValueError, IndexError):
        return None


def _read_int(path: str | Path) -> int | None:
    try:
        with open(path, "rb") as f:
            text = f.read().strip()
    except OSError:
        return None
    return None if text == b"max" else int(text) if text.isdigit() else None


def _user(instances: int) -> Room | None:
    uid = os.getuid()
    if uid == 0:
        return None  # the kernel does not hold root to RLIMIT_NPROC
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if soft == resource.RLIM_INFINITY:
        return None
    total = _tasks_on_the_machine()
    how = "LimitNPROC= in the unit, ulimit -u in a shell"
    limit = f"ulimit -u: {soft}"
    if total is not None and soft - total >= instances:
        # Room enough even if every task on the machine were the user's: no scan.
        return Room(soft - total, limit, how)
    return Room(soft - _tasks_of(uid), limit, how)


def _tasks_of(uid: int) -> int:
    """The tasks whose real user is `uid`, as RLIMIT_NPROC counts them."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        real = threads = None
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                real = int(line.split()[1])
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
        if real == uid:
            count += threads or 1
    return count


def _cgroup_dirs() -> list[Path]:
    """The pids controller's directory of this process's cgroup (v2, or v1's pids
    hierarchy), then each ancestor's up to the mount."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        v2 = hierarchy == "0" and controllers == ""
        if not v2 and "pids" not in controllers.split(","):
            continue
        for mount in mounts:
            left, _, right = mount.partition(" - ")
            fields, kinds = left.split(), right.split()
            if len(fields) < 5 or len(kinds) < 3:
                continue
            if v2 and kinds[0] != "cgroup2":
                continue
            if not v2 and (kinds[0] != "cgroup" or "pids" not in kinds[2].split(",")):
                continue
            root, where = fields[3], Path(fields[4])
            relative = path if root == "/" else path.removeprefix(root)
            here = where / relative.lstrip("/")
            while here.is_relative_to(where):
                found.append(here)
                if here == where:
                    break
                here = here.parent
    return found


def _cgroups() -> list[Room]:
    rooms = []
    for directory in _cgroup_dirs():
        limit = _read_int(directory / "pids.max")
        current = _read_int(directory / "pids.current")
        if limit is not None and current is not None:
            rooms.append(
                Room(
                    limit - current,
                    f"pids.max of cgroup {directory}: {limit}",
                    "TasksMax= in the unit, the container's pids limit",
                )
            )
    return rooms


def _machine() -> Room | None:
    total = _tasks_on_the_machine()
    pid_max = _read_int("/proc/sys/kernel/pid_max")
    threads_max = _read_int("/proc/sys/kernel/threads-max")
    if total is None or pid_max is None or threads_max is None:
        return None
    if pid_max <= threads_max:
        return Room(pid_max - total, f"kernel.pid_max: {pid_max}", "sysctl kernel.pid_max")
    return Room(
        threads_max - total, f"kernel.threads-max: {threads_max}", "sysctl kernel.threads-max"
    )
