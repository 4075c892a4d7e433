"""The processes of one state_dir, found by the environment herdsman gave them.

Every process herdsman spawns carries `HERDSMAN_STATE_DIR` and `HERDSMAN_INSTANCE`,
and whatever it starts inherits them (unless it clears its environment). That
is how a daemon tells its own processes from anyone's when state.json cannot
(it is corrupt, missing or stale), and how what left an instance's process
group (`setsid`) is still known to belong to the instance.

`find` is the one account of what a daemon of a state_dir left running, for the
next daemon (which adopts one main process per instance and stops the others)
and for `down` without a daemon (which stops them all): the records of
state.json that still run, and every marked process besides.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from herdsman.core.states import State
from herdsman.runtime.procfs import boot_id, proc_stat, process_start_time
from herdsman.runtime.records import InstanceRecord
from herdsman.runtime.statefile import StateFile

STATE_DIR_VARIABLE = "HERDSMAN_STATE_DIR"
INSTANCE_VARIABLE = "HERDSMAN_INSTANCE"
_STATE_DIR_KEY = STATE_DIR_VARIABLE.encode() + b"="
_INSTANCE_KEY = INSTANCE_VARIABLE.encode() + b"="
_ENVIRON_READ = 65536


@dataclass(slots=True)
class Marked:
    """A live process whose environment names this state_dir."""

    pid: int
    instance: str
    start_time: int  # clock ticks since boot
    ppid: int
    session: int
    uid: int


def _read_environ(pid: int) -> bytes | None:
    """/proc/PID/environ. It answers a read with as much as asked, up to its end: a
    read that comes back short was the last (no read of nothing after it, a quarter
    fewer system calls in a scan of every process)."""
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    chunks = []
    try:
        while True:
            chunk = os.read(fd, _ENVIRON_READ)
            chunks.append(chunk)
            if len(chunk) < _ENVIRON_READ:
                break
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _variable(environ: bytes, key: bytes) -> bytes | None:
    """The value `key` (b"NAME=") has in `environ`, NUL-separated; its last one, as
    a walk through every entry would keep."""
    at = environ.rfind(b"\0" + key)
    if at >= 0:
        start = at + 1 + len(key)
    elif environ.startswith(key):
        start = len(key)
    else:
        return None
    end = environ.find(b"\0", start)
    return environ[start:] if end < 0 else environ[start:end]


class _SameDir:
    """Whether a HERDSMAN_STATE_DIR value names `state_dir` (also by another path:
    a symlink, a relative config path); each distinct value is looked at once."""

    def __init__(self, state_dir: Path) -> None:
        self._known: dict[bytes, bool] = {os.fsencode(state_dir): True}
        try:
            st = os.stat(state_dir)
            self._id: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            self._id = None

    def __call__(self, value: bytes) -> bool:
        known = self._known.get(value)
        if known is None:
            try:
                st = os.stat(value)
                known = self._id is not None and (st.st_dev, st.st_ino) == self._id
            except (OSError, ValueError):
                known = False
            self._known[value] = known
        return known


@dataclass(eq=False)
class Census:
    """Every process's marker, read before the state_dir is known: while `up` waits
    for its validating helper, which it does for longer than a census takes. The
    scan after the lock then reads the environment only of the processes it does
    not list (started since) and of those it found marked for the state_dir (to
    see that they still are), rather than every process's again.

    A pid it lists that is another process's by the scan (reused: only after the
    pids of the whole pid_max went round meanwhile) is taken for the one it saw."""

    listed: frozenset[int]
    marked: dict[int, tuple[bytes, bytes]]  # pid: (its state_dir value, its instance)


def take_census() -> Census:
    listed, marked = [], {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            listed.append(pid)
            marker = _marker(pid)
            if marker is not None:
                marked[pid] = marker
    return Census(frozenset(listed), marked)


def _marker(pid: int) -> tuple[bytes, bytes] | None:
    """The HERDSMAN_STATE_DIR and HERDSMAN_INSTANCE values of `pid`, if it has both."""
    environ = _read_environ(pid)
    if not environ or _STATE_DIR_KEY not in environ:
        return None
    state_dir_value = _variable(environ, _STATE_DIR_KEY)
    instance = _variable(environ, _INSTANCE_KEY)
    if state_dir_value is None or instance is None:
        return None
    return state_dir_value, instance


def scan(
    state_dir: Path, pids: Iterable[int] | None = None, census: Census | None = None
) -> list[Marked]:
    """Every live process (not a zombie) that carries the marker of `state_dir`;
    among `pids`, or among all processes (one pass over /proc). What a `census`
    saw of a process it lists stands, unless it saw the marker of `state_dir`:
    that one is read again."""
    same = _SameDir(state_dir)
    own = os.getpid()
    entries: Iterable[Any] = pids if pids is not None else os.listdir("/proc")
    found = []
    for entry in entries:
        if isinstance(entry, str) and not entry.isdigit():
            continue
        pid = int(entry)
        if pid == own:
            continue
        if census is not None and pid in census.listed:
            seen = census.marked.get(pid)
            if seen is None or not same(seen[0]):
                continue
        marker = _marker(pid)
        if marker is None or not same(marker[0]):
            continue
        stat = proc_stat(pid)
        if not stat or stat[0] in (b"Z", b"X"):
            continue
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        found.append(
            Marked(
                pid=pid,
                instance=marker[1].decode(errors="replace"),
                start_time=int(stat[19]),
                ppid=int(stat[1]),
                session=int(stat[3]),
                uid=uid,
            )
        )
    return found


def main_candidates(marked: list[Marked]) -> dict[str, list[Marked]]:
    """Per instance, the processes that may be its main process, oldest first.

    herdsman starts every main process as a session leader; one started by a
    process of the same instance (a `setsid` child of the service) is not one.
    """
    by_pid = {m.pid: m for m in marked}
    candidates: dict[str, list[Marked]] = {}
    for m in marked:
        if m.session != m.pid:
            continue
        parent = by_pid.get(m.ppid)
        if parent is not None and parent.instance == m.instance:
            continue
        candidates.setdefault(m.instance, []).append(m)
    for found in candidates.values():
        found.sort(key=lambda m: (m.start_time, m.pid))
    return candidates


@dataclass(eq=False)
class Leftovers:
    """What a daemon of this state_dir left running.

    `mains`: per instance the one process to adopt, with its record (from
    state.json, or made up from /proc when found by its environment only);
    `extras`: main processes beyond one per instance, (instance, pid, why);
    `strays`: other marked processes that belong to no process kept, (instance,
    pid): started by an extra, or of an instance whose main process is gone;
    `others`: the remaining marked processes (what a kept main process started).
    """

    mains: dict[str, tuple[int, InstanceRecord]] = field(default_factory=dict)
    extras: list[tuple[str, int, str]] = field(default_factory=list)
    strays: list[tuple[str, int]] = field(default_factory=list)
    others: list[int] = field(default_factory=list)

    def every_pid(self) -> Iterator[int]:
        yield from (pid for pid, _ in self.mains.values())
        yield from (pid for _, pid, _ in self.extras)
        yield from (pid for _, pid in self.strays)
        yield from self.others


def still_running(
    document: dict[str, Any], state_dir: Path
) -> Iterator[tuple[str, InstanceRecord, int]]:
    """The records of a dead daemon whose process still runs: (name, record, pid).

    Only a process with the recorded start time, on the same boot, counts: a pid
    alone may be another process's by now. A spawn known from the journal only
    has no start time yet: its process must carry the environment herdsman gave
    it (as its main process: a session leader), and then gets its start time. (A
    zombie counts: its group may live on.) `document` is one StateFile read, so
    its records are well formed.
    """
    if document.get("boot_id") != boot_id():
        return
    for name, data in (document.get("instances") or {}).items():
        record = InstanceRecord.from_data(data, f"the record of {name}", complete=False)
        pid = record.pid
        if pid is None or pid <= 0 or pid == os.getpid():
            continue
        if record.journalled:
            if any(m.instance == name and m.session == pid for m in scan(state_dir, [pid])):
                record.start_time = process_start_time(pid)
                yield name, record, pid
        elif process_start_time(pid) == record.start_time:
            yield name, record, pid


def find(
    document: dict[str, Any] | None,
    state_dir: Path,
    may_run_as: Callable[[str, int], bool] = lambda _instance, _uid: True,
    census: Census | None = None,
) -> Leftovers:
    """The processes a dead daemon of `state_dir` left: by its records (same pid and
    start time, so not a reused pid), and by their environment.

    A record's process wins for its instance; an instance without one keeps its
    oldest marked main process (by start time). A marked process counts only if
    `may_run_as(instance, uid)`: anyone can put the marker in an environment.
    `census`: see scan.
    """
    found = Leftovers()
    if document is not None:
        for name, record, pid in still_running(document, state_dir):
            found.mains[name] = (pid, record)
    recorded = {pid for pid, _ in found.mains.values()}
    marked = [
        m
        for m in scan(state_dir, census=census)
        if m.pid in recorded or may_run_as(m.instance, m.uid)
    ]
    for name, mains in main_candidates(marked).items():
        if name not in found.mains:
            first = mains[0]
            found.mains[name] = (first.pid, found_record(first))
        kept = found.mains[name][0]
        for extra in mains:
            if extra.pid != kept:
                found.extras.append((name, extra.pid, "is a second process of it"))
    kept_pids = {pid for pid, _ in found.mains.values()}
    extra_pids = {pid for _, pid, _ in found.extras}
    by_pid = {m.pid: m for m in marked}
    for m in marked:
        if m.pid in kept_pids or m.pid in extra_pids:
            continue
        # Up its ancestry, as far as the instance's processes go: to a main process,
        # or to one whose parent is gone (reparented).
        ancestor, seen = m, {m.pid}
        while ancestor.pid not in kept_pids and ancestor.pid not in extra_pids:
            parent = by_pid.get(ancestor.ppid)
            if parent is None or parent.instance != m.instance or parent.pid in seen:
                break
            ancestor = parent
            seen.add(parent.pid)
        if ancestor.pid in extra_pids or m.instance not in found.mains:
            found.strays.append((m.instance, m.pid))
        else:
            found.others.append(m.pid)
    return found


def left_by(
    state: StateFile,
    config: Path,
    may_run_as: Callable[[str, int], bool] = lambda _instance, _uid: True,
    census: Census | None = None,
) -> tuple[Leftovers, list[str]]:
    """What a dead daemon of `config` left running (as `find`), for the next daemon
    and for `down` without one; and one sentence per problem with its state.json
    (moved aside: see StateFile.recover). Records of another config are not its."""
    document, problems = state.recover()
    # The same config however it was named (a symlink, a relative path): the lock
    # on its state_dir (which the caller holds) tells that no other daemon runs it.
    if document is not None and not _same_file(document.get("config"), config):
        document = None
    # Also with a good state.json: a process it does not name (it was lost, or
    # spawned as the daemon died) is found by its environment.
    return find(document, state.path.parent, may_run_as, census), problems


def _same_file(recorded: object, path: Path) -> bool:
    if not isinstance(recorded, str):
        return False
    try:
        return os.path.samefile(recorded, path)
    except OSError:
        return recorded == str(path)


def found_record(m: Marked) -> InstanceRecord:
    """A record for a main process known only from /proc: it runs, its output pipes
    are whatever its stdout and stderr are now (taken if they are pipes)."""
    pipes = []
    for stream, number in (("out", 1), ("err", 2)):
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{m.pid}/fd/{number}")
            if (st.st_mode & 0o170000) == 0o010000:  # a FIFO: the pipe herdsman gave it
                pipes.append((stream, st.st_ino))
    return InstanceRecord(
        State.RUNNING,
        pid=m.pid,
        start_time=m.start_time,
        start_passed=True,
        spawned_at=m.start_time / os.sysconf("SC_CLK_TCK"),
        pipes=pipes,
        found_by_environment=True,
    )


def stop(found: Leftovers, state_dir: Path, timeout: float) -> tuple[list[str], list[str]]:
    """Stop everything `found` holds and whatever else still carries the marker of
    `state_dir`: each main process's stop signal to its process group, then after
    `timeout` SIGKILL to what is left (the groups, and every marked process).

    Returns (the instances stopped, one sentence per process that could not be
    signalled).
    """
    import select

    problems: list[str] = []
    poller, pidfds = select.poll(), []
    mains = [(name, pid, record) for name, (pid, record) in found.mains.items()]
    mains += [(name, pid, InstanceRecord()) for name, pid, _ in found.extras]
    for name, pid, record in mains:
        sig = record.stop_signal or signal.SIGTERM
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        pidfds.append(fd)
        poller.register(fd, select.POLLIN)
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            problems.append(f"{name}: pid {pid} cannot be signalled (permission denied)")
    deadline = time.monotonic() + timeout
    running = set(pidfds)
    while running and (remaining := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(remaining * 1000):
            poller.unregister(fd)
            running.discard(fd)
    for fd in pidfds:
        os.close(fd)
    for _, pid, _ in mains:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    problems += kill_marked(state_dir, found.every_pid())
    return sorted({name for name, _, _ in mains} | {name for name, _ in found.strays}), problems


def kill_marked(state_dir: Path, also: Iterable[int] = (), rounds: int = 20) -> list[str]:
    """SIGKILL every process that carries the marker of `state_dir` (and `also`),
    again until none is left: one may have forked between the scan and the kill.
    One sentence per process that cannot be killed."""
    pids = set(also)
    refused: dict[int, str] = {}
    for _ in range(rounds):
        pids |= {m.pid for m in scan(state_dir)}
        pids -= set(refused)
        alive = []
        for pid in pids:
            stat = proc_stat(pid)
            if not stat or stat[0] in (b"Z", b"X"):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            except PermissionError:
                refused[pid] = f"pid {pid} cannot be killed (permission denied)"
                continue
            alive.append(pid)
        if not alive:
            break
        pids = set()
        _wait_dead(alive, 1.0)
    return list(refused.values())


def _wait_dead(pids: list[int], timeout: float) -> None:
    """Wait (on pidfds) until each of `pids` has exited, or `timeout`."""
    import select

    poller, fds = select.poll(), []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except OSError:
            continue
        poller.register(fds[-1], select.POLLIN)
    deadline = time.monotonic() + timeout
    waiting = set(fds)
    try:
        while waiting and (remaining := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                waiting.discard(fd)
    finally:
        for fd in fds:
            os.close(fd)
