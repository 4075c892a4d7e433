"""The daemon: one Supervisor plus what the control API needs of it.

It answers control requests (status, start/stop/restart by pattern, signals,
recent log lines, event streams, metrics, reload), writes every instance's log
file and keeps its last lines in memory, samples resources on demand, enforces
`memory_limit`, `restart_with` and sd_notify readiness and watchdogs, and owns
the graceful shutdown. The CLI composes it with the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from herdsman.core.herd import (
    FilesChanged,
    Say,
    StartRequest,
)
from herdsman.core.patterns import matches, no_match
from herdsman.core.plan import Plan
from herdsman.core.signals import parse_signal
from herdsman.core.states import State
from herdsman.runtime import recovery
from herdsman.runtime.changelog import ChangeLog
from herdsman.runtime.control import ControlError
from herdsman.runtime.documents import (
    SAMPLED,
    DaemonDocument,
    EventDocument,
    InstanceDocument,
    LogDocument,
    Parts,
    ResultDocument,
    StatusColumns,
    StatusDocument,
    daemon_document,
    instance_columns,
    instance_document,
    summary,
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
from herdsman.runtime.sampler import MemoryWatch, Sampler
from herdsman.runtime.statefile import StateWriter
from herdsman.runtime.supervisor import Managed, Subscriber, Supervisor
from herdsman.runtime.systemd import Manager
from herdsman.runtime.tails import Tails

if TYPE_CHECKING:
    from herdsman.runtime.watcher import Watcher

HOOK_DRAIN_TIMEOUT = 5.0  # at shutdown, for hooks still handling the last state changes
ESCAPES_DRAIN_TIMEOUT = 5.0  # at shutdown, for processes that left their groups to die

# Settled states of a start request: it worked, or herdsman gave up on it.
START_DONE = (State.RUNNING, State.EXITED, State.FAILED, State.STOPPED)


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
    ) -> None:
        self.started_at = time.time()
        self._log = log
        self._tasks = tasks
        self._on_note = on_note
        self.manager = manager or Manager({})
        self._loop = asyncio.get_running_loop()
        self.tails = Tails()
        self._shutdown = asyncio.Event()
        self._signals = 0
        self._background: set[asyncio.Task[Any]] = set()
        self.output = LogSink(
            plan.state_dir / "logs.pos", self.tails, log=log, note=self._note, on_line=on_line
        )
        self.supervisor = Supervisor(plan, sink=self.output.lines)
        self.sampler = Sampler(lambda: self.supervisor.instances.values(), self._run_in_background)
        self.plugins = Plugins(plan.plugins, log)
        self.prober = Prober(self.supervisor, self._run_in_background, log, self.plugins)
        self.output.probe = self.prober.lines
        self.supervisor.checks = self.prober
        self.supervisor.say = self._say
        self.memory = MemoryWatch(self.supervisor, self.sampler, self._run_in_background)
        self.hooks = Hooks(self.supervisor, self.plugins, self._run_in_background, log)
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
        self._change_log = ChangeLog(log, self._loop, self.manager, self.summary)
        self._event_stream = EventStream(
            lambda m: self._document(m, self._blocked([m])), self.supervisor.unpublished
        )
        # Every change, in order, to each of these (see supervisor.ChangeFeed).
        for subscriber in (
            lambda managed, _old, _new, _event: self._state.changed(managed.name),
            self.hooks.changed,
            self.notify.changed,
            self._change_log.changed,
            self._event_stream.changed,
            on_change,
        ):
            if subscriber is not None:
                self.supervisor.changes.subscribe(subscriber)
        self.supervisor.batches = self.output
        self._restarts_in_flight: set[asyncio.Task[Any]] = set()
        # `up --watch`: services that declare `watch` restart when their files change.
        self.watching = watch
        self._watcher: Watcher | None = None
        self._told_watch_is_off = False
        self.reloader = Reload(
            self.supervisor,
            self._follow,
            manager=self.manager,
            stopping=self._shutdown,
            summary=self.summary,
            note=self._note,
        )
        self.reexecutor = Reexecutor(
            self.supervisor,
            self.reloader,
            stopping=self._shutdown,
            restarting=lambda: bool(self._restarts_in_flight),
            run_in_background=self._run_in_background,
            note=self._note,
        )
        self._follow(plan)

    @property
    def exit_code(self) -> int:
        return 1 if self.reexecutor.gave_up else 0

    @property
    def plan(self) -> Plan:
        return self.supervisor.plan

    def _follow(self, plan: Plan) -> None:
        """What follows the plan's instances follows `plan` (at start, and each reload)."""
        self.output.track(plan)
        self.prober.forget(set(self.supervisor.instances))
        self.hooks.track(plan)
        self._track_watches(plan)
        self.memory.track(plan)
        self.notify.track(plan)

    def _track_watches(self, plan: Plan) -> None:
        """Watch the files of the services that declare `watch`, if watching is on. The
        watcher (and inotify) exists only while one does: others pay nothing."""
        # getattr: a plan pickled by an image older than `watch` (a heal after an upgrade)
        declared = [name for name, svc in plan.services.items() if getattr(svc, "watch", None)]
        if declared and self.watching:
            if self._watcher is None:
                from herdsman.runtime.watcher import Watcher

                self._watcher = Watcher(self._loop, self._files_changed, self._log)
            self._watcher.sync(plan)
            return
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if declared and not self._told_watch_is_off:
            self._told_watch_is_off = True
            self._log.info(
                "%s declare%s watch, and watch is off: start with `herdsman up --watch`"
                " to restart them when their files change",
                ", ".join(declared),
                "s" if len(declared) == 1 else "",
            )

    def _files_changed(self, service: str, paths: list[str]) -> None:
        """A service's watched files changed (and have been quiet since): restart its
        instances, or start again those a crash or an exit left down."""
        if self.shutting_down:
            return  # nothing is started again while everything stops
        self.supervisor.submit(FilesChanged(service, tuple(paths)))

    # --- running --------------------------------------------------------------

    def open(self, *, notify_fd: int | None = None) -> None:
        """Start watching: children's exits, the sd_notify socket (`notify_fd`: the one
        a previous image bound), signals; the loop's exception handler heals."""
        self._loop.set_exception_handler(self.loop_exception)
        try:
            self.plan.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self._note(logging.ERROR, f"cannot create log_dir {self.plan.log_dir}: {err.strerror}")
        self.supervisor.open()
        self.output.open()
        self.notify.open(self.plan, notify_fd)
        # Through the supervisor's Signals, never loop.add_signal_handler: one wake-up
        # fd for the process, whose overflow loses no signal (see signals.py).
        signals = self.supervisor.signals
        for signum in (signal.SIGINT, signal.SIGTERM):
            signals.add(signum, functools.partial(self._on_signal, signum))
        signals.add(signal.SIGHUP, self._on_hangup)

    def adopt(self) -> list[str]:
        """After a crash: take over what a dead daemon of this config left running
        (see recovery.py); the names of the instances adopted."""
        return recovery.recover(
            self.supervisor,
            self._state,
            self.output,
            passed_fds=self.manager.passed_fds,
            note=self._note,
        )

    def start_services(self, services: list[str] | None) -> None:
        self.supervisor.start_services(services)

    async def wait_for_shutdown(self) -> bool:
        """Wait for a shutdown request, then stop everything; False if something was killed.

        A re-exec also ends the wait, and stops nothing: the services carry on.
        """
        await self._shutdown.wait()
        if self.reexecutor.reason is not None:
            return True
        self.manager.stopping()
        stopped = await self.supervisor.stop_all(self.plan.shutdown_timeout)
        # Nothing of theirs may run on: what left their process groups, too.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ESCAPES_DRAIN_TIMEOUT):
                await self.supervisor.escapes.drain()
        if not self.supervisor.any_live():
            self._state.remove()  # nothing left to adopt
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOOK_DRAIN_TIMEOUT):
                await self.hooks.drain()
        return stopped

    def _run_in_background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the daemon's task group, cancelled when the daemon closes.

        An unexpected error in it does not tear the daemon down (which would leave
        the services unmanaged): it is logged and answered by a re-exec (`heal`).
        """
        task = self._tasks.create_task(self._guarded(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it began
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("unexpected error in a daemon task")
            self.reexecutor.heal("an unexpected error in a daemon task")
            return None

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: an error escaping a callback (a pump, a timer,
        a signal handler) leaves the supervision state in doubt, so heal."""
        error = context.get("exception")
        message = context.get("message", "unexpected error")
        if error is None:
            self._log.error("event loop: %s", message)
            return
        self._log.error("event loop: %s", message, exc_info=error)
        self.reexecutor.heal(f"an unexpected error in the event loop ({error!r})")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
        self.prober.close()
        self.hooks.close()
        self.plugins.close()
        self.notify.close()
        self._change_log.close()
        self._state.file.close()
        self.output.close()
        for task in list(self._background):
            task.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.supervisor.signals.remove(signum)
        self.tails.close()
        self._event_stream.end()
        self.supervisor.close()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self._note(logging.INFO, f"{signal.Signals(signum).name}: stopping all services")
            self._shutdown.set()
        else:
            self._note(logging.WARNING, "second signal: killing all services now")
            self.supervisor.kill_all()

    def _on_hangup(self) -> None:
        self._run_in_background(self._reload_quietly())

    async def _reload_quietly(self) -> None:
        """SIGHUP: reload; an invalid config is logged and changes nothing."""
        try:
            await self.reload()
        except ControlError as err:
            self._note(logging.ERROR, f"reload refused, nothing changed: {err.message}")

    def _note(self, level: int, text: str) -> None:
        """A message about the daemon itself: to its log, and to the console if any."""
        self._log.log(level, text)
        if self._on_note is not None:
            self._on_note(text)

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

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

    def _blocked(self, managed: list[Managed] | None = None) -> dict[str, str]:
        """Why waiting instances (of `managed`'s services, default all) cannot start."""
        names = None if managed is None else [m.name for m in managed]
        return self.supervisor.herd.blocked(names)

    def _parts(self, reasons: dict[str, str]) -> Parts:
        """Where the documents' pieces come from; `reasons`: why instances are blocked."""
        prober = self.prober
        return Parts(
            now=self._loop.time(),
            sample=self.sampler.get,
            health=self.supervisor.herd.health.get,
            checks=lambda name: prober.results.get(name, {}),
            blocked=reasons.get,
            since=self._change_log.since.get,
            log_error=self.output.error,
            problem=prober.problems.get,
            failure=prober.failures.get,
            notify_status=self.notify.statuses.get,
        )

    def _document(self, managed: Managed, reasons: dict[str, str]) -> InstanceDocument:
        return instance_document(managed, self._parts(reasons))

    def summary(self) -> str:
        return summary(m.state for m in self.supervisor.instances.values())

    def settled(self) -> bool:
        """Whether no instance is on its way up any more (starting or restarting):
        each runs (past start_seconds, and ready if it has a probe), has exited, has
        failed, or is stopped (not started, or waiting for a dependency that failed)."""
        return not any(
            m.state in (State.STARTING, State.RESTARTING)
            for m in self.supervisor.instances.values()
        )

    def daemon_document(self) -> DaemonDocument:
        return daemon_document(
            pid=os.getpid(),
            config=str(self.plan.config_path),
            started_at=self.started_at,
            shutting_down=self.shutting_down,
            reexecs=self.reexecutor.reexecs,
            image_started_at=self.reexecutor.image_started_at,
        )

    def status(self) -> StatusDocument:
        return {"daemon": self.daemon_document(), "services": self.instances()}

    def instances(self) -> list[InstanceDocument]:
        self.sampler.refresh()
        parts = self._parts(self._blocked())
        return [instance_document(m, parts) for m in self.supervisor.instances.values()]

    def columns(self, keys: list[str]) -> StatusColumns:
        if SAMPLED.intersection(keys):
            self.sampler.refresh()
        instances = list(self.supervisor.instances.values())
        columns = instance_columns(instances, keys, self._parts(self._blocked()))
        return {"daemon": self.daemon_document(), "columns": columns}

    def instance(self, name: str) -> InstanceDocument:
        managed = self.supervisor.instances.get(name)
        if managed is None:
            raise ControlError(404, f"no instance named {name!r}")
        self.sampler.refresh()
        return self._document(managed, self._blocked([managed]))

    # --- requests -------------------------------------------------------------

    def match(self, pattern: str) -> list[Managed]:
        """The instances `pattern` names (see core/patterns.py), in their order."""
        sup = self.supervisor
        # An exact name is looked up, not matched against thousands of instances: no
        # name holds a glob character, so nothing else could match it.
        if pattern in sup.instances:
            return [sup.instances[pattern]]
        if pattern in sup.by_service:
            return list(sup.by_service[pattern])
        matched = [m for m in sup.instances.values() if matches(pattern, m.name, m.service)]
        if not matched:
            raise ControlError(404, no_match(pattern))
        return matched

    def _refuse_while_stopping(self) -> None:
        if self.shutting_down:
            raise ControlError(409, "herdsman is shutting down")

    def _result(
        self, managed: list[Managed], failed: list[str], *, timed_out: bool = False
    ) -> ResultDocument:
        self.sampler.refresh()
        why = self._blocked(managed)
        return {
            "instances": [self._document(m, why) for m in managed],
            "failed": failed,
            "timed_out": timed_out,
        }

    def _start(self, managed: list[Managed]) -> None:
        # What they depend on and is not running comes up first (like `up SERVICE`).
        self.supervisor.submit(StartRequest(tuple(m.name for m in managed)))

    def _hopeless(self, managed: list[Managed]) -> bool:
        """Whether one of `managed` can no longer get to running without someone
        asking again: it ended (failed, exited, stopped), or it is blocked."""
        if any(m.state in START_DONE and m.state is not State.RUNNING for m in managed):
            return True
        return any(m.core.waiting for m in managed) and bool(self._blocked(managed))

    async def _settled(
        self, managed: list[Managed], deadline: float | None
    ) -> tuple[list[str], bool]:
        """Wait until every one of `managed` runs, or one cannot get there, or the
        deadline (loop time) passes: the names not running, and whether time ran out."""

        def answered() -> bool:
            return all(m.state is State.RUNNING for m in managed) or self._hopeless(managed)

        remaining = None if deadline is None else max(0.0, deadline - self._loop.time())
        in_time = await self.supervisor.wait_until(answered, remaining)
        return [m.name for m in managed if m.state is not State.RUNNING], not in_time

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self._loop.time() + timeout

    async def start(self, pattern: str, wait: bool, timeout: float | None = None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        self._refuse_while_stopping()
        managed = self.match(pattern)
        self._start(managed)
        if not wait:
            return self._result(managed, [])
        failed, timed_out = await self._settled(managed, self._deadline(timeout))
        return self._result(managed, failed, timed_out=timed_out)

    async def stop(self, pattern: str, wait: bool, timeout: float | None = None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        managed = self.match(pattern)
        for m in managed:
            self.supervisor.stop(m)
        if wait and not await self.supervisor.wait_stopped(managed, timeout):
            live = [m.name for m in managed if m.core.live]
            return self._result(managed, live, timed_out=True)
        return self._result(managed, [])

    async def restart(
        self,
        pattern: str,
        wait: bool,
        timeout: float | None = None,  # noqa: ASYNC109 -- the Controller's contract
    ) -> ResultDocument:
        self._refuse_while_stopping()
        managed = self.match(pattern)
        deadline = self._deadline(timeout)

        async def stop_then_start() -> tuple[list[str], bool]:
            for m in managed:
                self.supervisor.stop(m)
            await self.supervisor.wait_stopped(managed, None)
            self._start(managed)
            return await self._settled(managed, deadline)

        task = self._run_in_background(stop_then_start())
        self._restarts_in_flight.add(task)
        task.add_done_callback(self._restarts_in_flight.discard)
        if not wait:
            return self._result(managed, [])
        remaining = None if deadline is None else max(0.0, deadline - self._loop.time())
        try:
            # The restart itself goes on: only the wait for it has a limit.
            failed, timed_out = await asyncio.wait_for(asyncio.shield(task), remaining)
        except TimeoutError:
            failed, timed_out = [m.name for m in managed if m.state is not State.RUNNING], True
        return self._result(managed, failed, timed_out=timed_out)

    def signal(self, pattern: str, sig: str | int) -> ResultDocument:
        try:
            number = parse_signal(sig)
        except ValueError as err:
            raise ControlError(400, str(err)) from None
        managed = self.match(pattern)
        for m in managed:
            self.supervisor.signal_group(m, number)
        return self._result(managed, [])

    async def shutdown(self) -> None:
        if not self._shutdown.is_set():
            self._note(logging.INFO, "shutdown requested: stopping all services")
            self._shutdown.set()

    # --- logs and events ------------------------------------------------------

    def _names(self, instance: str | None) -> list[str] | None:
        return None if instance is None else [m.name for m in self.match(instance)]

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
