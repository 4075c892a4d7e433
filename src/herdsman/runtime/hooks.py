"""Event hooks: when an instance enters a chosen state, run a command, POST the event
as JSON to a webhook, or call a hook plugin.

Hooks never delay supervision: a subscriber of the change feed (supervisor.ChangeFeed), they
get each change as `(old, new, event)`, in order, and hand it to the hooks that want
the state entered. Each configured hook has one worker task, owned by the
daemon's task group, and a bounded queue, so its events are handled in order and a
slow webhook holds at most `QUEUE_LIMIT` of them (later ones are dropped, and the
log says so). Nothing a hook does escapes its worker: failures are logged, and a
hook plugin that raises is disabled (runtime/plugins.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from herdsman.core.lifecycle import Event, Exited
from herdsman.core.logline import timestamp
from herdsman.core.plan import HookPlan, InstancePlan, Plan
from herdsman.core.signals import signal_name
from herdsman.core.states import State
from herdsman.plugins import HOOKS
from herdsman.runtime.httpclient import RequestFailed, status_of
from herdsman.runtime.plugins import PluginDisabled, Plugins, PluginTimeout
from herdsman.runtime.supervisor import Managed, Supervisor

QUEUE_LIMIT = 100  # events waiting per hook
RunInBackground = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


def event_document(managed: Managed, old: State, new: State, event: Event) -> dict[str, Any]:
    """What a hook is told about one state change."""
    core = managed.core
    pid = event.pid if isinstance(event, Exited) else core.pid  # the one that just ended
    return {
        "time": timestamp(time.time()).decode(),
        "instance": managed.name,
        "service": managed.service,
        "replica": managed.plan.replica,
        "state": new.value,
        "previous": old.value,
        "pid": pid,
        "ready": core.ready,
        "exit_code": core.exit_code,
        "exit_signal": signal_name(core.exit_signal) if core.exit_signal else None,
        "message": core.message,
    }


def event_environment(doc: dict[str, Any]) -> dict[str, str]:
    """`HERDSMAN_EVENT` (the JSON document) and one `HERDSMAN_EVENT_<KEY>` per field."""
    env = {"HERDSMAN_EVENT": json.dumps(doc)}
    for key, value in doc.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        env[f"HERDSMAN_EVENT_{key.upper()}"] = text
    return env


async def post_json(url: str, body: bytes, timeout: float) -> str | None:  # noqa: ASYNC109 -- as status_of
    """POST `body` as JSON to `url`; None on a 2xx answer, else why not."""
    try:
        status = await status_of(url, timeout, agent="herdsman-hook", method="POST", json_body=body)
    except RequestFailed as err:
        return str(err)
    return None if 200 <= status < 300 else f"{url} answered HTTP {status}"


class Hooks:
    """Every configured hook of the current plan, fed the daemon's state changes."""

    def __init__(
        self,
        supervisor: Supervisor,
        plugins: Plugins,
        run_in_background: RunInBackground,
        log: logging.Logger,
    ) -> None:
        self._supervisor = supervisor
        self._plugins = plugins
        self._background = run_in_background
        self._log = log
        self._runners: list[_Runner] = []
        self._cwd = Path("/")
        self._closed = False

    def track(self, plan: Plan) -> None:
        """Use the hooks of `plan` (after a reload: a hook that stayed the same keeps
        its queue and worker)."""
        self._plugins.use(plan.plugins)
        self._cwd = plan.config_path.parent
        wanted: list[tuple[str | None, HookPlan]] = [(None, hook) for hook in plan.hooks]
        for svc in plan.services.values():
            wanted += [(svc.name, hook) for hook in svc.hooks]
        old, self._runners = self._runners, []
        for service, hook in wanted:
            same = next((r for r in old if (r.service, r.plan) == (service, hook)), None)
            if same is not None:
                old.remove(same)
            self._runners.append(same or _Runner(self, service, hook))
        for runner in old:
            runner.close()

    def changed(self, managed: Managed, old: State, new: State, event: Event) -> None:
        # Closed: no new workers, the daemon's task group could never end.
        if new is old or self._closed:
            return
        doc: dict[str, Any] | None = None
        for runner in self._runners:
            if new.value in runner.plan.on and runner.service in (None, managed.service):
                doc = doc or event_document(managed, old, new, event)
                runner.offer(managed, doc)

    async def drain(self) -> None:
        """Until queued events are handled (at shutdown; the caller bounds how long)."""
        for runner in self._runners:
            await runner.idle()

    def close(self) -> None:
        self._closed = True
        for runner in self._runners:
            runner.close()


class _Runner:
    """One configured hook: its queue and the worker that empties it."""

    def __init__(self, hooks: Hooks, service: str | None, plan: HookPlan) -> None:
        self._hooks = hooks
        self.service = service
        self.plan = plan
        self._queue: asyncio.Queue[tuple[Managed, dict[str, Any]]] = asyncio.Queue(QUEUE_LIMIT)
        self._worker: asyncio.Task[Any] | None = None
        self._dropping = False
        self._instance: Any = None  # a plugin class's instance, made on first use

    async def idle(self) -> None:
        await self._queue.join()

    def offer(self, managed: Managed, doc: dict[str, Any]) -> None:
        log = self._hooks._log
        if self.plan.kind == "plugin" and self._hooks._plugins.disabled(HOOKS, self.plan.plugin):
            return
        try:
            self._queue.put_nowait((managed, dict(doc)))
        except asyncio.QueueFull:
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "hook %s is %d events behind: dropping new events until it catches up",
                    self.plan.where,
                    QUEUE_LIMIT,
                )
            return
        self._dropping = False
        if self._worker is None:
            work = self._work()
            try:
                self._worker = self._hooks._background(work)
            except RuntimeError:  # the daemon's task group is closing
                work.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    async def _work(self) -> None:
        while True:
            managed, doc = await self._queue.get()
            try:
                await self._fire(managed, doc)
            except Exception:  # a bug here must not end the daemon's task group
                self._hooks._log.exception("hook %s failed", self.plan.where)
            finally:
                self._queue.task_done()

    async def _fire(self, managed: Managed, doc: dict[str, Any]) -> None:
        plan, log = self.plan, self._hooks._log
        what = f"hook {plan.where} ({doc['instance']} {doc['state']})"
        if plan.kind == "exec":
            runner = InstancePlan(
                name=managed.name,
                service=managed.service,
                replica=managed.plan.replica,
                argv=plan.argv,
                env=event_environment(doc),
                cwd=self._hooks._cwd,
            )
            code, why = await self._hooks._supervisor.run_command(runner, plan.argv, plan.timeout)
            if code == 0:
                log.info("%s: ran %r", what, " ".join(plan.argv))
            elif code is None:
                log.warning("%s: %r %s", what, " ".join(plan.argv), why)
            else:
                tail = f": {why}" if why else ""
                log.warning("%s: %r exited with code %d%s", what, " ".join(plan.argv), code, tail)
        elif plan.kind == "webhook":
            failure = await post_json(plan.url, json.dumps(doc).encode(), plan.timeout)
            if failure is None:
                log.info("%s: posted to %s", what, plan.url)
            else:
                log.warning("%s: %s", what, failure)
        else:
            await self._call_plugin(what, doc)

    async def _call_plugin(self, what: str, doc: dict[str, Any]) -> None:
        plan, plugins = self.plan, self._hooks._plugins
        try:
            obj = plugins.load(HOOKS, plan.plugin)
            if isinstance(obj, type):
                # A class: made once with the options, then called with each event.
                if self._instance is None:
                    self._instance = await plugins.call(
                        HOOKS, plan.plugin, obj, (), plan.options, plan.timeout
                    )
                await plugins.call(HOOKS, plan.plugin, self._instance, (doc,), {}, plan.timeout)
            else:
                await plugins.call(HOOKS, plan.plugin, obj, (doc,), plan.options, plan.timeout)
        except PluginTimeout as err:
            self._hooks._log.warning("%s: plugin %r %s", what, plan.plugin, err)
        except PluginDisabled:
            pass  # logged once, with its traceback, when it was disabled
