"""Re-exec: the daemon replaces its own process image with the code on disk.

`request` checks the new code and the config in a helper process, `begin` ends
the loop, `hand_over` puts everything the new image needs into plain data (the
pipes stay open for it), and `resume`, in the new image, takes every instance
over as it was. cli/resume.py carries the hand-over across the exec.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import TYPE_CHECKING, Any

from herdsman.core.herd import TookOver
from herdsman.core.plan import InstancePlan, Plan
from herdsman.runtime.control import ControlError
from herdsman.runtime.handover import DaemonHandover
from herdsman.runtime.planner import PlanError, helper_argv, unpickle_plan

if TYPE_CHECKING:
    from herdsman.runtime.daemon import Daemon

RELOAD_TIMEOUT = 60.0  # for the validating helper process
RESTART_ONLY = ("state_dir", "socket", "tcp")


def restart_only(plan: Plan) -> dict[str, str]:
    """The settings a running daemon keeps (its lock and sockets), as plain values."""
    return {key: str(getattr(plan, key)) for key in RESTART_ONLY}


async def compile_plan(daemon: Daemon, *, for_reexec: bool = False) -> tuple[Plan, bytes]:
    """The new plan, validated by a helper process (pydantic stays out of the daemon),
    and its pickle. `for_reexec`: the helper is the code now on disk, which must
    also import everything a new image of the daemon needs."""
    out = daemon.plan.state_dir / "reload.plan"
    argv = helper_argv(daemon.plan.config_path, out)
    if for_reexec:
        argv = (sys.executable, "-P", "-m", "herdsman.cli.resume", "--check", *argv[4:])
    runner = InstancePlan("reload", "herdsman", 0, argv, {}, daemon.plan.config_path.parent)
    code, why = await daemon.supervisor.run_command(runner, argv, RELOAD_TIMEOUT)
    try:
        data = out.read_bytes()
    except OSError:
        what = "the new code" if for_reexec else "the config validator"
        raise ControlError(500, f"{what} failed: {why or f'exit code {code}'}") from None
    finally:
        out.unlink(missing_ok=True)
    try:
        return unpickle_plan(data, f"exit code {code}"), data
    except PlanError as err:
        raise ControlError(400, "\n".join(err.errors)) from None


async def request(daemon: Daemon) -> dict[str, Any]:
    """Check the code on disk and the config, then have the loop end for a re-exec.

    The new image must import and validate the config; otherwise ControlError
    and nothing changes. A config that changed on disk is applied first (as a
    reload), so the new image starts from a plan its own code compiled.
    """
    daemon._refuse_while_stopping()
    if daemon._reloading or daemon.reexec_reason is not None or daemon._healing:
        raise ControlError(409, "a reload or re-exec is already in progress")
    if daemon._restarts_in_flight:
        raise ControlError(409, "a restart is in progress: re-exec once it is done")
    daemon._reloading = True
    try:
        new, data = await compile_plan(daemon, for_reexec=True)
        moved = [k for k, v in restart_only(new).items() if v != daemon.bound[k]]
        if moved:
            raise ControlError(
                400,
                f"the config changes {', '.join(moved)}, which a running daemon keeps: "
                "restart herdsman (down, then up) to apply them, or change them back",
            )
        if new != daemon.plan:
            daemon._note(logging.INFO, "the config changed on disk: applying it before re-exec")
            await daemon._apply(new)
    finally:
        daemon._reloading = False
    daemon._reexec_plan = data
    daemon._note(logging.INFO, f"re-executing herdsman ({sys.executable}), services keep running")
    return {"pid": os.getpid(), "reexecs": daemon.reexecs + 1}


async def begin(daemon: Daemon) -> None:
    """After `reexec()` was answered: end the loop (the caller execs)."""
    if daemon._reexec_plan is not None and not daemon.shutting_down:
        daemon._decide_reexec("reexec")


def hand_over(daemon: Daemon) -> DaemonHandover:
    """Everything the new image needs of the daemon; the pipes stay open for it."""
    daemon.supervisor.settle()  # no spawn in flight: each record has its process
    daemon.prober.close()
    herd = daemon.supervisor.herd
    watched = sorted(herd.watchdogs)  # armed by a READY=1 or WATCHDOG=1 already
    notify_fd = daemon._notify.hand_over() if daemon._notify is not None else None
    daemon._notify = None
    sup = daemon.supervisor
    records = {name: sup.record(m) for name, m in sup.instances.items()}
    plan = daemon._reexec_plan or pickle.dumps(("ok", daemon.plan))  # a heal: the running plan
    return DaemonHandover(
        plan=plan,
        records=records,
        pumps=sup.hand_over(),
        tails=daemon.tails.hand_over(),
        health=dict(herd.health),
        notify_fd=notify_fd,
        started_at=daemon.started_at,
        reexecs=daemon.reexecs + 1,
        heals=daemon._heals.times,
        notify_status=dict(daemon._notify_status),
        spawned_before=sorted(herd.spawned_before),
        restarted_deps=sorted(herd.restarted),
        watchdogs=watched,
        bound=daemon.bound,
    )


def resume(daemon: Daemon, handover: DaemonHandover) -> None:
    """In the new image: take every instance over from the old one, as it was."""
    daemon.started_at = handover.started_at
    daemon.reexecs = handover.reexecs
    daemon._heals.times = list(handover.heals)
    daemon._notify_status.update(handover.notify_status)
    herd = daemon.supervisor.herd
    herd.spawned_before.update(handover.spawned_before)
    herd.restarted.update(handover.restarted_deps)
    daemon.bound = handover.bound
    daemon.tails.resume(handover.tails)
    health = handover.health
    watchdogs = set(handover.watchdogs)
    pumps = handover.pumps
    sup = daemon.supervisor
    for name, record in handover.records.items():
        managed = sup.instances.get(name)
        if managed is None:  # cannot happen: the plan is the one they ran under
            for _stream, fd, _partial in pumps.get(name, []):
                os.close(fd)
            continue
        sup.restore(managed, record, pumps.get(name, []))
        if health.get(name) is not None and herd.health.get(name) is not None:
            herd.health[name] = health[name]
    # Checks and watchdogs (a full period from now) start again once it is open.
    daemon._took_over = TookOver(tuple(handover.records), tuple(watchdogs))
    daemon._note(
        logging.INFO,
        f"re-executed (image {daemon.reexecs}): took over {len(sup.instances)} instance(s)",
    )
