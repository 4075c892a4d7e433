"""Re-exec: the daemon replaces its own process image with the code on disk.

`Reexecutor` decides when this image gives way to a new one: `request` (for
`herdsman reexec`) checks the new code and the config in a helper process and
`begin` ends the loop; `heal` does the same after an unexpected error, within the
heal budget. `hand_over` then puts everything the new image needs into plain data
(the pipes stay open for it), and `resume`, in the new image, takes every instance
over as it was. cli/resume.py carries the hand-over across the exec.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from herdsman.core.herd import HealBudget, TookOver
from herdsman.core.plan import Plan
from herdsman.runtime.control import ControlError, refuse_while_stopping
from herdsman.runtime.handover import DaemonHandover

if TYPE_CHECKING:
    from herdsman.runtime.notify import Notifications
    from herdsman.runtime.probes import Prober
    from herdsman.runtime.reload import Reload
    from herdsman.runtime.supervisor import Supervisor
    from herdsman.runtime.tails import Tails

RESTART_ONLY = ("state_dir", "socket", "tcp")
# Blocked from the moment a re-exec is decided until the new image handles them:
# none may end the daemon half-way through handing over.
HELD_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def restart_only(plan: Plan) -> dict[str, str]:
    """The settings a running daemon keeps (its lock and sockets), as plain values."""
    return {key: str(getattr(plan, key)) for key in RESTART_ONLY}


class Handed(Protocol):
    """What crosses the exec besides the re-exec's own history: the daemon's parts."""

    supervisor: Supervisor
    prober: Prober
    notify: Notifications
    tails: Tails
    started_at: float

    @property
    def since(self) -> dict[str, float]:
        """When each instance entered its state (unix time)."""
        ...


class Reexecutor:
    def __init__(
        self,
        supervisor: Supervisor,
        reload: Reload,
        *,
        stopping: asyncio.Event,
        restarting: Callable[[], bool],
        run_in_background: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
        note: Callable[[int, str], None],
    ) -> None:
        self._supervisor = supervisor
        self._reload = reload
        self._stopping = stopping  # set to end the loop: a re-exec, or giving up
        self._restarting = restarting  # whether a `restart` request is under way
        self._run_in_background = run_in_background
        self._note = note
        # Why the loop ends without stopping the services ("reexec" or "heal").
        self.reason: str | None = None
        self._plan: bytes | None = None  # for `reexec`: the one just compiled, pickled
        self._healing = False
        self._heals = HealBudget()  # self-healing re-execs, at most 3 within 60 s
        self.gave_up = False  # the heal budget is spent: everything stops, exit 1
        self.reexecs = 0  # of this daemon, carried across them
        self.image_started_at = time.time()
        # What cannot change under a running daemon (its lock, sockets): as it
        # started, carried across re-execs; a re-exec to a config that moved them
        # is refused.
        self.bound = restart_only(supervisor.plan)
        self._took_over: TookOver | None = None  # by resume(), for carry_on()

    async def request(self) -> dict[str, Any]:
        """Check the code on disk and the config, then have the loop end for a re-exec.

        The new image must import and validate the config; otherwise ControlError
        and nothing changes. A config that changed on disk is applied first (as a
        reload), so the new image starts from a plan its own code compiled.
        """
        refuse_while_stopping(self._stopping)
        reload = self._reload
        if reload.busy or self.reason is not None or self._healing:
            raise ControlError(409, "a reload or re-exec is already in progress")
        if self._restarting():
            raise ControlError(409, "a restart is in progress: re-exec once it is done")
        reload.busy = True
        try:
            new, data = await reload.compile(for_reexec=True)
            moved = [k for k, v in restart_only(new).items() if v != self.bound[k]]
            if moved:
                raise ControlError(
                    400,
                    f"the config changes {', '.join(moved)}, which a running daemon keeps: "
                    "restart herdsman (down, then up) to apply them, or change them back",
                )
            if new != self._supervisor.plan:
                self._note(logging.INFO, "the config changed on disk: applying it before re-exec")
                await reload.apply(new)
        finally:
            reload.busy = False
        self._plan = data
        self._note(logging.INFO, f"re-executing herdsman ({sys.executable}), services keep running")
        return {"pid": os.getpid(), "reexecs": self.reexecs + 1}

    def begin(self) -> None:
        """After `request()` was answered: end the loop (the caller execs)."""
        if self._plan is not None and not self._stopping.is_set():
            self._decide("reexec")

    def heal(self, why: str) -> None:
        """Re-exec the daemon keeping every service, unless it keeps failing at once."""
        if self.reason is not None or self._stopping.is_set() or self._healing:
            return
        budget = self._heals
        if not budget.spend(time.monotonic()):
            self._note(
                logging.CRITICAL,
                f"{why}: more than {budget.limit} re-execs within {budget.window:g}s to recover; "
                "stopping all services",
            )
            self.gave_up = True
            self._stopping.set()
            return
        self._note(logging.ERROR, f"{why}: re-executing herdsman, the services keep running")
        self._healing = True
        self._run_in_background(self._heal())

    async def _heal(self) -> None:
        """The heal's re-exec, once the code on disk passed the same check as `reexec`.

        The new image keeps the running plan (not the one just compiled): a config
        edited on disk but not reloaded must not change what runs behind its back.
        """
        try:
            await self._reload.compile(for_reexec=True)
        except ControlError as err:
            self._note(
                logging.ERROR,
                f"cannot re-exec to recover: {err.message}; carrying on in this image",
            )
            self._healing = False
            return
        self._decide("heal")

    def _decide(self, reason: str) -> None:
        # From here on no signal may end this image before the new one handles it.
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        self.reason = reason
        self._stopping.set()

    def hand_over(self, daemon: Handed) -> DaemonHandover:
        """Everything the new image needs of the daemon; the pipes stay open for it."""
        daemon.supervisor.settle()  # no spawn in flight: each record has its process
        daemon.prober.close()
        sup = daemon.supervisor
        herd = sup.herd
        watched = sorted(herd.watchdogs)  # armed by a READY=1 or WATCHDOG=1 already
        notify_fd = daemon.notify.hand_over()
        records = {name: sup.record(m) for name, m in sup.instances.items()}
        plan = self._plan or pickle.dumps(("ok", sup.plan))  # a heal: the running plan
        return DaemonHandover(
            plan=plan,
            records=records,
            pumps=sup.hand_over(),
            tails=daemon.tails.hand_over(),
            health=dict(herd.health),
            notify_fd=notify_fd,
            started_at=daemon.started_at,
            reexecs=self.reexecs + 1,
            heals=self._heals.times,
            notify_status=dict(daemon.notify.statuses),
            spawned_before=sorted(herd.spawned_before),
            restarted_deps=sorted(herd.restarted),
            watchdogs=watched,
            bound=self.bound,
            since=dict(daemon.since),
        )

    def resume(self, daemon: Handed, handover: DaemonHandover) -> None:
        """In the new image: take every instance over from the old one, as it was."""
        daemon.started_at = handover.started_at
        self.reexecs = handover.reexecs
        self._heals.times = list(handover.heals)
        daemon.notify.statuses.update(handover.notify_status)
        sup = daemon.supervisor
        herd = sup.herd
        herd.spawned_before.update(handover.spawned_before)
        herd.restarted.update(handover.restarted_deps)
        self.bound = handover.bound
        daemon.tails.resume(handover.tails)
        daemon.since.update(handover.since)
        health = handover.health
        pumps = handover.pumps
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
        self._took_over = TookOver(tuple(handover.records), tuple(set(handover.watchdogs)))
        self._note(
            logging.INFO,
            f"re-executed (image {self.reexecs}): took over {len(sup.instances)} instance(s)",
        )

    def carry_on(self) -> None:
        """After `resume()` and the daemon's `open()`: the instances taken over get
        their checks and watchdogs again (a full period from now), and what waits
        for dependencies that are met now starts."""
        if self._took_over is not None:
            self._supervisor.submit(self._took_over)
            self._took_over = None
