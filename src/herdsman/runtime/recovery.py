"""Recovery after a crash: the next daemon adopts what a dead one left running.

An instance whose recorded process still runs (state.json and its journal, or
found by the environment herdsman gave it: see leftovers.py) keeps it, watched
by pidfd, its output pipes opened again; a process of an instance the config no
longer has, or a second one of an instance, is stopped. A new image of the daemon
whose hand-over cannot be read recovers the same way (see cli/resume.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from herdsman.core.herd import TookOver
from herdsman.core.lifecycle import describe_exit
from herdsman.runtime import leftovers
from herdsman.runtime.adoption import pipes_by_inode, reopen_pipes
from herdsman.runtime.procfs import parent_pid, zombie_status
from herdsman.runtime.reaper import decode_status
from herdsman.runtime.records import just_spawned
from herdsman.runtime.supervisor import kill_group

if TYPE_CHECKING:
    from herdsman.runtime.logsink import LogSink
    from herdsman.runtime.statefile import StateWriter
    from herdsman.runtime.supervisor import Supervisor

STRAY_KILL_AFTER = 5.0  # a stray process from a crashed daemon: SIGTERM, then SIGKILL


Note = Callable[[int, str], None]


def recover(
    supervisor: Supervisor,
    state: StateWriter,
    output: LogSink,
    *,
    passed_fds: Iterable[int],
    note: Note,
    census: leftovers.Census | None = None,
) -> list[str]:
    """After a crash: adopt the services a dead daemon left running (state.json).

    An instance whose recorded process still runs (same pid and start time, so
    not a reused pid) keeps it: watched by pidfd, its output pipes opened again
    from /proc, or taken from `passed_fds` (the fd store's). A process of an
    instance the config no longer has is stopped. Returns the names of the
    adopted instances. `census`: the processes as `up` saw them while it waited
    for its plan (see leftovers.Census).
    """
    stored = pipes_by_inode(list(passed_fds))
    adopted: list[str] = []
    try:
        adopted = _adopt(supervisor, state, output, stored, note, census)
        return adopted
    finally:
        for fd in stored.values():  # pipes of instances that are gone
            os.close(fd)
        # Before anything is spawned: a journal of spawns needs a state.json
        # of this daemon to belong to. Only what was adopted has a process to
        # record by then; the rest follow with the next write, after the spawns.
        state.write(only=adopted)


def _adopt(
    supervisor: Supervisor,
    state: StateWriter,
    output: LogSink,
    stored: dict[int, int],
    note: Note,
    census: leftovers.Census | None,
) -> list[str]:
    may_run_as = functools.partial(_may_run_as, supervisor)
    found, problems = leftovers.left_by(state.file, supervisor.plan.config_path, may_run_as, census)
    for problem in problems:
        note(logging.WARNING, problem)
    adopted: list[str] = []
    for name, (pid, record) in found.mains.items():
        status = zombie_status(pid)
        if status is not None:
            how = describe_exit(*decode_status(status))
            note(logging.INFO, f"{name}: pid {pid} ended while no daemon ran ({how})")
            continue
        managed = supervisor.instances.get(name)
        if managed is None:
            _stop_stray(note, name, pid)
            continue
        pumps = list(reopen_pipes(pid, record.pipes, stored))
        output.settle(name, pumps)
        # Our own child after a re-exec whose hand-over could not be read: reaped
        # as usual, with its exit status; otherwise watched by pidfd.
        record.foreign = parent_pid(pid) != os.getpid()
        if record.journalled:  # spawned after the last state.json: as new
            just_spawned(record, managed.core.policy, pid)
        elif record.found_by_environment:
            ready = managed.plan.ready
            record.ready = ready is None or ready.kind == "notify"  # cannot be asked again
        if supervisor.restore(managed, record, pumps):
            adopted.append(name)
            supervisor.herd.spawned_before.add(name)  # its next spawn is a restart
    for name, pid, why in found.extras:
        _stop_stray(note, name, pid, why)
    for name, pid in found.strays:
        # Its main process is gone, or is being stopped as a second one.
        note(logging.WARNING, f"{name}: pid {pid} of a previous daemon; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if adopted:
        note(
            logging.INFO,
            f"adopted {len(adopted)} running instance(s) of a previous daemon: "
            + ", ".join(adopted),
        )
    supervisor.submit(TookOver(tuple(adopted)))
    return adopted


def _may_run_as(supervisor: Supervisor, instance: str, uid: int) -> bool:
    """Whether a process running as `uid` may be `instance`'s: herdsman's own
    user, or the one the instance is configured to run as."""
    if uid == os.geteuid():
        return True
    managed = supervisor.instances.get(instance)
    user = managed.plan.user if managed is not None else None
    return user is not None and _uid_of(user) == uid


def _stop_stray(note: Note, name: str, pid: int, why: str = "is no longer in the config") -> None:
    note(logging.WARNING, f"{name}: pid {pid} of a previous daemon {why}; stopping it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    asyncio.get_running_loop().call_later(STRAY_KILL_AFTER, kill_group, pid)


def _uid_of(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
