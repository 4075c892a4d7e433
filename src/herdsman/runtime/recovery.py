"""Recovery after a crash: the next daemon adopts what a dead one left running.

An instance whose recorded process still runs (state.json and its journal, or
found by the environment herdsman gave it: see leftovers.py) keeps it, watched
by pidfd, its output pipes opened again; a process of an instance the config no
longer has, or a second one of an instance, is stopped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from typing import TYPE_CHECKING

from herdsman.core.herd import TookOver
from herdsman.core.lifecycle import describe_exit
from herdsman.runtime import leftovers
from herdsman.runtime.adoption import pipes_by_inode, reopen_pipes
from herdsman.runtime.procfs import zombie_status
from herdsman.runtime.reaper import decode_status
from herdsman.runtime.records import just_spawned
from herdsman.runtime.supervisor import kill_group

if TYPE_CHECKING:
    from herdsman.runtime.daemon import Daemon

STRAY_KILL_AFTER = 5.0  # a stray process from a crashed daemon: SIGTERM, then SIGKILL


def recover(daemon: Daemon) -> list[str]:
    """After a crash: adopt the services a dead daemon left running (state.json).

    An instance whose recorded process still runs (same pid and start time, so
    not a reused pid) keeps it: watched by pidfd, its output pipes opened again
    from /proc. A process of an instance the config no longer has is stopped.
    Returns the names of the adopted instances.
    """
    stored = pipes_by_inode(daemon.manager.passed_fds)
    try:
        return _adopt(daemon, stored)
    finally:
        for fd in stored.values():  # pipes of instances that are gone
            os.close(fd)
        # Before anything is spawned: a journal of spawns needs a state.json
        # of this daemon to belong to.
        daemon._state.write()


def _adopt(daemon: Daemon, stored: dict[int, int]) -> list[str]:
    may_run_as = functools.partial(_may_run_as, daemon)
    found, problems = leftovers.left_by(daemon._state.file, daemon.plan.config_path, may_run_as)
    for problem in problems:
        daemon._note(logging.WARNING, problem)
    adopted: list[str] = []
    for name, (pid, record) in found.mains.items():
        status = zombie_status(pid)
        if status is not None:
            how = describe_exit(*decode_status(status))
            daemon._note(logging.INFO, f"{name}: pid {pid} ended while no daemon ran ({how})")
            continue
        managed = daemon.supervisor.instances.get(name)
        if managed is None:
            _stop_stray(daemon, name, pid)
            continue
        pumps = list(reopen_pipes(pid, record.pipes, stored))
        daemon.output.settle(name, pumps)
        record.foreign = True
        if record.journalled:  # spawned after the last state.json: as new
            just_spawned(record, managed.core.policy, pid)
        elif record.found_by_environment:
            ready = managed.plan.ready
            record.ready = ready is None or ready.kind == "notify"  # cannot be asked again
        if daemon.supervisor.restore(managed, record, pumps):
            adopted.append(name)
            daemon.supervisor.herd.spawned_before.add(name)  # its next spawn is a restart
    for name, pid, why in found.extras:
        _stop_stray(daemon, name, pid, why)
    for name, pid in found.strays:
        # Its main process is gone, or is being stopped as a second one.
        daemon._note(logging.WARNING, f"{name}: pid {pid} of a previous daemon; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if adopted:
        daemon._note(
            logging.INFO,
            f"adopted {len(adopted)} running instance(s) of a previous daemon: "
            + ", ".join(adopted),
        )
    daemon.supervisor.submit(TookOver(tuple(adopted)))
    return adopted


def _may_run_as(daemon: Daemon, instance: str, uid: int) -> bool:
    """Whether a process running as `uid` may be `instance`'s: herdsman's own
    user, or the one the instance is configured to run as."""
    if uid == os.geteuid():
        return True
    managed = daemon.supervisor.instances.get(instance)
    user = managed.plan.user if managed is not None else None
    return user is not None and _uid_of(user) == uid


def _stop_stray(
    daemon: Daemon, name: str, pid: int, why: str = "is no longer in the config"
) -> None:
    daemon._note(logging.WARNING, f"{name}: pid {pid} of a previous daemon {why}; stopping it")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    daemon._loop.call_later(STRAY_KILL_AFTER, kill_group, pid)


def _uid_of(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
