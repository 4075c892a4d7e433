"""The daemon: a facade over the supervisor and the modules that each do one job.

It composes them (the supervisor and its event queue, the log sink, checks, hooks,
the notify socket, memory sampling, watches, requests, reload, re-exec, the
graceful shutdown) and answers the control API (see api/controller.py) by handing
each request to its owner and rendering documents. The CLI composes it with the
API server (cli/up.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from herdsman.core.herd import Say
from herdsman.core.plan import Plan
from herdsman.runtime import leftovers, recovery
from herdsman.runtime.background import Background
from herdsman.runtime.changelog import ChangeLog
from herdsman.runtime.documents import (
    DaemonDocument,
    EventDocument,
    InstanceDocument,
    LogDocument,
    ResultDocument,
    StatusColumns,
    StatusDocument,
    daemon_document,
)
from herdsman.runtime.followers import EventStream
from herdsman.runtime.hooks import Hooks
from herdsman.runtime.logsink import LineHook, LogSink
from herdsman.runtime.monitor import own_usage
from herdsman.runtime.notify import Notifications
from herdsman.runtime.plugins import Plugins
from herdsman.runtime.probes import Prober
from herdsman.runtime.reexec import Reexecutor
from herdsman.runtime.reload import Reload
from herdsman.runtime.requests import Requests
from herdsman.runtime.sampler import MemoryWatch, Sampler
from herdsman.runtime.shutdown import Shutdown
from herdsman.runtime.spawn import Spawner
from herdsman.runtime.statefile import StateWriter
from herdsman.runtime.status import StatusView
from herdsman.runtime.supervisor import Managed, Subscriber, Supervisor
from herdsman.runtime.systemd import Manager
from herdsman.runtime.tails import Tails
from herdsman.runtime.watches import Watches


class Daemon:
    def __init__(
        self,
        plan: Plan,
        *,
        log: logging.Logger,
        tasks: asyncio.TaskGroup,
        on_change: Subscriber | None = None,
        on_line: LineHook | None = None,
        on_note: Callable[[str], None] | None = None,
        manager: Manager | None = None,
        watch: bool = False,
        spawner: Spawner[Managed] | None = None,
    ) -> None:
        self.started_at = time.time()
        self._log = log
        self._on_note = on_note
        self.manager = manager or Manager({})
        self._loop = asyncio.get_running_loop()
        self.tails = Tails()
        # An unexpected error heals by a re-exec (the reexecutor is made below).
        self.background = Background(tasks, log, lambda why: self.reexecutor.heal(why))
        self.output = LogSink(
            plan.state_dir / "logs.pos", self.tails, log=log, note=self._note, on_line=on_line
        )
        self.supervisor = Supervisor(plan, sink=self.output.lines, spawner=spawner)
        self.sampler = Sampler(lambda: self.supervisor.instances.values(), self.background.run)
        self.plugins = Plugins(plan.plugins, log)
        self.prober = Prober(self.supervisor, self.background.run, log, self.plugins)
        self.output.probe = self.prober.lines
        self.supervisor.checks = self.prober
        self.supervisor.say = self._say
        self.memory = MemoryWatch(self.supervisor, self.sampler, self.background.run)
        self.hooks = Hooks(self.supervisor, self.plugins, self.background.run, log)
        self.notify = Notifications(self.supervisor, self._loop, log, self._note)
        self._state = StateWriter(
            plan.state_dir / "state.json",
            self._loop,
            lambda: self.supervisor.instances,
            self.supervisor.record,
            lambda: {
                "config": str(self.plan.config_path),
                "daemon_pid": os.getpid(),
                "written_at": time.time(),
            },
            self._state_file_error,
        )
        self.supervisor.journal = self._state
        self.stopper = Shutdown(
            self.supervisor, self.hooks, self._state, self.manager, self._note, self.background.run
        )
        stopping = self.stopper.requested
        # The summary is asked of the view (made next, from the change log's `since`).
        self._change_log = ChangeLog(log, self._loop, self.manager, lambda: self.view.summary())
        self.view = StatusView(
            self.supervisor, self.sampler, self.prober, self.output, self.notify, self.since
        )
        self._event_stream = EventStream(self.view.document, self.supervisor.unpublished)
        # Every change, in order, to each of these (see supervisor.ChangeFeed).
        for subscriber in (
            lambda managed, _old, _new, _event: self._state.changed(managed.core.name),
            self.hooks.changed,
            self.notify.changed,
            self._change_log.changed,
            self._event_stream.changed,
            on_change,
        ):
            if subscriber is not None:
                self.supervisor.changes.subscribe(subscriber)
        self.supervisor.batches = self.output
        self.watches = Watches(self.supervisor, stopping, log, on=watch)
        self.requests = Requests(
            self.supervisor,
            stopping=stopping,
            documents=self.view.of,
            run_in_background=self.background.run,
        )
        self.reloader = Reload(
            self.supervisor,
            self._follow,
            manager=self.manager,
            stopping=stopping,
            summary=self.view.summary,
            note=self._note,
        )
        self.reexecutor = Reexecutor(
            self.supervisor,
            self.reloader,
            stopping=stopping,
            restarting=lambda: self.requests.restarting,
            run_in_background=self.background.run,
            note=self._note,
        )
        self._follow(plan)

    @property
    def exit_code(self) -> int:
        return 1 if self.reexecutor.gave_up else 0

    @property
    def plan(self) -> Plan:
        return self.supervisor.plan

    @property
    def since(self) -> dict[str, float]:
        return self._change_log.since

    def _follow(self, plan: Plan) -> None:
        """What follows the plan's instances follows `plan` (at start, and each reload)."""
        self.output.track(plan)
        self.prober.forget(set(self.supervisor.instances))
        self.hooks.track(plan)
        self.watches.track(plan)
        self.memory.track(plan)
        self.notify.track(plan)

    # --- running --------------------------------------------------------------

    def open(self, *, notify_fd: int | None = None) -> None:
        """Start watching: children's exits, the sd_notify socket (`notify_fd`: the one
        a previous image bound), signals; the loop's exception handler heals."""
        self._loop.set_exception_handler(self.background.loop_exception)
        try:
            self.plan.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._note(logging.ERROR, f"cannot create log_dir {self.plan.log_dir}: {err.strerror}")
        self.supervisor.open()
        self.output.open()
        self.notify.open(self.plan, notify_fd)
        self.stopper.listen(self.reload)

    def adopt(
        self, pipes: list[int] | None = None, census: leftovers.Census | None = None
    ) -> list[str]:
        """After a crash: take over what a dead daemon of this config left running
        (see recovery.py); the names of the instances adopted. `pipes`: output
        pipes a previous image left open (its hand-over was unreadable); `census`:
        the processes as `up` saw them while it waited for its plan."""
        return recovery.recover(
            self.supervisor,
            self._state,
            self.output,
            passed_fds=[*self.manager.passed_fds, *(pipes or ())],
            note=self._note,
            census=census,
        )

    async def wait_for_shutdown(self) -> bool:
        """Wait for a shutdown request, then stop everything; False if something was
        killed. A re-exec also ends the wait, and stops nothing (see shutdown.py)."""
        return await self.stopper.wait(lambda: self.reexecutor.reason is not None)

    def close(self) -> None:
        self.watches.close()
        self.prober.close()
        self.hooks.close()
        self.plugins.close()
        self.notify.close()
        self._change_log.close()
        self._state.file.close()
        self.output.close()
        self.background.cancel()
        self.stopper.close()
        self.tails.close()
        self._event_stream.end()
        self.supervisor.close()

    def _note(self, level: int, text: str) -> None:
        """A message about the daemon itself: to its log, and to the console if any."""
        self._log.log(level, text)
        if self._on_note is not None:
            self._on_note(text)

    # --- what the supervisor tells us -----------------------------------------

    def _say(self, said: Say) -> None:
        """What the herd has to say, in the daemon's log."""
        level = logging.WARNING if said.level == "warning" else logging.INFO
        if said.console:
            self._note(level, said.text)
        else:
            self._log.log(level, said.text)

    def _state_file_error(self, error: str | None) -> None:
        if error is None:
            self._note(logging.INFO, f"writing {self._state.file.path} again")
        else:
            self._note(logging.ERROR, f"{error}; crash recovery will not know the latest")

    # --- documents ------------------------------------------------------------

    def daemon_document(self) -> DaemonDocument:
        return daemon_document(
            pid=os.getpid(),
            config=str(self.plan.config_path),
            started_at=self.started_at,
            shutting_down=self.stopper.requested.is_set(),
            reexecs=self.reexecutor.reexecs,
            image_started_at=self.reexecutor.image_started_at,
        )

    def status(self) -> StatusDocument:
        return {"daemon": self.daemon_document(), "services": self.instances()}

    def instances(self) -> list[InstanceDocument]:
        return self.view.instances()

    def columns(self, keys: list[str]) -> StatusColumns:
        return {"daemon": self.daemon_document(), "columns": self.view.columns(keys)}

    def instance(self, name: str) -> InstanceDocument:
        return self.view.instance(name)

    # --- requests (see requests.py) --------------------------------------------

    async def start(self, pattern: str, wait: bool, timeout: float | None = None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        return await self.requests.start(pattern, wait, timeout)

    async def stop(self, pattern: str, wait: bool, timeout: float | None = None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        return await self.requests.stop(pattern, wait, timeout)

    async def restart(
        self,
        pattern: str,
        wait: bool,
        timeout: float | None = None,  # noqa: ASYNC109 -- the Controller's contract
    ) -> ResultDocument:
        return await self.requests.restart(pattern, wait, timeout)

    def signal(self, pattern: str, sig: str | int) -> ResultDocument:
        return self.requests.signal(pattern, sig)

    async def shutdown(self) -> None:
        self.stopper.request()

    # --- logs and events ------------------------------------------------------

    def _names(self, instance: str | None) -> list[str] | None:
        return None if instance is None else [m.name for m in self.requests.match(instance)]

    def logs(self, instance: str | None, n: int) -> list[LogDocument]:
        return self.tails.logs(self._names(instance), n)

    def follow_logs(self, instance: str | None) -> AsyncIterator[LogDocument]:
        names = self._names(instance)
        return self.tails.follow(None if names is None else set(names))

    def events(self) -> AsyncIterator[EventDocument]:
        """One document per state change from now on (subscribed at the call)."""
        return self._event_stream.follow()

    # --- reload -----------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        return await self.reloader.request()

    # --- re-exec (see reexec.py) ----------------------------------------------

    async def reexec(self) -> dict[str, Any]:
        return await self.reexecutor.request()

    async def begin_reexec(self) -> None:
        self.reexecutor.begin()

    # --- metrics ---------------------------------------------------------------

    def metrics(self) -> tuple[bytes, str]:
        from herdsman.runtime.metrics import render

        cpu, rss = own_usage()
        return render(self.instances(), self.daemon_document(), cpu, rss)
