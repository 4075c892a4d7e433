"""Reload: the config is validated again by a helper process, and the difference applied.

What goes or changes is stopped first, dependents first (by the old graph); then the
new plan replaces the old one in the supervisor (the one owner of the plan), and
everything that follows the plan's instances (log files, checks, hooks, watches,
memory sampling, the notify socket's access) is told. A re-exec applies a config that
changed on disk the same way before it hands over.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

from herdsman.core.plan import InstancePlan, Plan
from herdsman.runtime import tasklimit
from herdsman.runtime.control import ControlError, refuse_while_stopping
from herdsman.runtime.fdlimit import shortfall, soft_limit
from herdsman.runtime.planner import HELPER_ENVIRONMENT, PlanError, helper_argv, unpickle_plan
from herdsman.runtime.supervisor import Supervisor
from herdsman.runtime.systemd import Manager

RELOAD_TIMEOUT = 60.0  # for the validating helper process
# What a reload cannot change under a running daemon (they apply when it restarts).
NOT_APPLIED = ("state_dir", "log_dir", "socket", "socket_mode", "socket_group", "tcp")


class Reload:
    def __init__(
        self,
        supervisor: Supervisor,
        follow: Callable[[Plan], None],
        *,
        manager: Manager,
        stopping: asyncio.Event,
        summary: Callable[[], str],
        note: Callable[[int, str], None],
    ) -> None:
        self._supervisor = supervisor
        self._follow = follow  # what follows the plan's instances, told of a new plan
        self._manager = manager
        self._stopping = stopping
        self._summary = summary
        self._note = note
        # A reload, or a re-exec's check and reload, is under way: one at a time.
        self.busy = False

    async def request(self) -> dict[str, Any]:
        """Re-read the config and apply the difference; ControlError(400) if invalid."""
        refuse_while_stopping(self._stopping)
        if self.busy:
            raise ControlError(409, "a reload is already in progress")
        self.busy = True
        self._manager.reloading()
        try:
            new, _ = await self.compile()
            return await self.apply(new)
        finally:
            self.busy = False
            self._manager.ready(self._summary())

    async def compile(self, *, for_reexec: bool = False) -> tuple[Plan, bytes]:
        """The new plan, validated by a helper process (pydantic stays out of the daemon),
        and its pickle. `for_reexec`: the helper is the code now on disk, which must
        also import everything a new image of the daemon needs."""
        plan = self._supervisor.plan
        out = plan.state_dir / "reload.plan"
        argv = helper_argv(plan.config_path, out)
        if for_reexec:
            argv = (sys.executable, "-P", "-m", "herdsman.cli.resume", "--check", *argv[4:])
        runner = InstancePlan(
            "reload", "herdsman", 0, argv, dict(HELPER_ENVIRONMENT), plan.config_path.parent
        )
        code, why = await self._supervisor.run_command(runner, argv, RELOAD_TIMEOUT)
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

    async def apply(self, new: Plan) -> dict[str, Any]:
        """Make `new` the plan: what the reload did, as `herdsman reload` prints it."""
        sup = self._supervisor
        old = sup.plan
        steps = sup.herd.reload_steps(new)
        change = steps.diff
        # Stop what goes or changes, dependents first (by the old graph).
        for wave in steps.stop_waves:
            for name in wave:
                sup.stop(sup.instances[name])
            await sup.wait_stopped([sup.instances[name] for name in wave], None)
        sup.replace_plan(new, steps.start)
        self._follow(new)
        summary = {
            "added": list(change.added),
            "removed": list(change.removed),
            "changed": list(change.changed),
            "unchanged": list(change.unchanged),
        }
        self._note(
            logging.INFO,
            "reloaded: " + "; ".join(f"{k} {', '.join(v) or '-'}" for k, v in summary.items()),
        )
        needs_restart = [key for key in NOT_APPLIED if getattr(old, key) != getattr(new, key)]
        if needs_restart:
            self._note(
                logging.WARNING,
                f"settings {', '.join(needs_restart)} changed: they apply when herdsman restarts",
            )
        # As `up` says at start: more instances than the fd or process limits hold
        # start as there is room, and whoever reloaded must hear why (the listeners
        # stay the old).
        count = sum(len(svc.instances) for svc in new.services.values())
        listeners = 1 + (old.tcp is not None)
        warnings = []
        for problem in (
            shortfall(count, soft_limit(), listeners, new.max_connections),
            # Those running are counted by the limits already.
            tasklimit.shortfall(
                len(change.added) + len(change.changed), "instances the reload starts"
            ),
        ):
            if problem is not None:
                self._note(logging.WARNING, problem)
                warnings.append(problem)
        return {**summary, "not_applied": needs_restart, "warnings": warnings}
