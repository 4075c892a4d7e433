"""Readiness probes and health checks of instances.

A readiness probe (`ready = {tcp|http|exec|log|notify}`) runs from the spawn until
it passes once, then feeds `Ready` to the lifecycle; a health check runs while the
instance is running and, after `failure_threshold` failures in a row, restarts it.
Each runs as one task per instance, cancelled when its process goes away; the
checks themselves never block the event loop (asyncio connections; exec through
the supervisor's spawner and reaper, with the probe's process group killed on
timeout). A probe plugin is called through runtime/plugins.py, which enforces its
timeout; once disabled, the instance's message says so and its probe stops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from herdsman.core.lifecycle import Event, Ready, Spawned, Stop
from herdsman.core.plan import CheckPlan
from herdsman.core.states import State
from herdsman.plugins import PROBES
from herdsman.runtime.httpclient import RequestFailed, reason, status_of
from herdsman.runtime.plugins import PluginDisabled, Plugins, PluginTimeout
from herdsman.runtime.supervisor import Managed, Supervisor

RunInBackground = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


async def check_tcp(address: tuple[str, int], timeout: float) -> str | None:  # noqa: ASYNC109 -- a failed check is a result naming the time it gave
    """None when a connection to (host, port) succeeds, else why not."""
    host, port = address
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no connection to {shown} within {timeout:g}s"
    except OSError as err:
        return f"cannot connect to {shown}: {reason(err)}"
    writer.close()
    return None


async def check_http(url: str, timeout: float) -> str | None:  # noqa: ASYNC109 -- as check_tcp
    """None when GET `url` answers 2xx or 3xx, else why not."""
    try:
        status = await status_of(url, timeout, agent="herdsman-probe")
    except RequestFailed as err:
        return str(err)
    return None if 200 <= status < 400 else f"{url} answered HTTP {status}"


class Prober:
    """Runs every instance's readiness probe and health check."""

    def __init__(
        self,
        supervisor: Supervisor,
        run_in_background: RunInBackground,
        log: Any,
        plugins: Plugins | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._background = run_in_background
        self._log = log
        self._plugins = plugins or Plugins((), log)
        self.problems: dict[str, str] = {}  # instance -> why its probe plugin stopped
        # instance -> the last failure of its probe still failing (`ready: ...`,
        # `health: ...`): its message says why it is not ready or healthy yet.
        self.failures: dict[str, str] = {}
        # instance -> {"ready" | "health": the last result, "passed" or why not}
        self.results: dict[str, dict[str, str]] = {}
        self._tasks: dict[str, list[asyncio.Task[Any]]] = {}
        self._log_patterns: dict[str, tuple[int, re.Pattern[bytes]]] = {}
        self.health: dict[str, str | None] = {}
        self.track(supervisor.instances)

    def track(self, instances: dict[str, Managed]) -> None:
        """Follow exactly these instances (after a reload: new ones in, removed ones out)."""
        for name in list(self.health):
            if name not in instances:
                self._cancel(name)
                del self.health[name]
                self.problems.pop(name, None)
                self._forget_results(name)
        for name, managed in instances.items():
            if managed.plan.health is None:
                self.health[name] = None
            else:
                self.health.setdefault(name, "unknown")

    def changed(self, managed: Managed, old: State, event: Event) -> None:
        name, core, plan = managed.name, managed.core, managed.plan
        if isinstance(event, Spawned):
            self._cancel(name)
            self.problems.pop(name, None)
            self._forget_results(name)
            if plan.health is not None:
                self.health[name] = "unknown"
            self._probe_readiness(managed, event.pid)
        elif core.pid is None:
            self._cancel(name)
            self.failures.pop(name, None)  # its exit says why now
            return
        # Also right after a spawn: with start_seconds = 0 it is running at once.
        running = core.state is State.RUNNING and old is not State.RUNNING
        if running and plan.health and core.pid is not None:
            self._start(name, self._watch_health(managed, plan.health, core.pid))

    def resume(self, managed: Managed) -> None:
        """Probes for an instance taken over with its process (re-exec, adoption)."""
        core, plan = managed.core, managed.plan
        if core.pid is None:
            return
        if not core.ready:
            self._probe_readiness(managed, core.pid)
        if core.state is State.RUNNING and plan.health:
            self._start(managed.name, self._watch_health(managed, plan.health, core.pid))

    def _probe_readiness(self, managed: Managed, pid: int) -> None:
        ready = managed.plan.ready
        if ready is not None and ready.kind in ("tcp", "http", "exec", "plugin"):
            self._start(managed.name, self._until_ready(managed, ready, pid))
        elif ready is not None and ready.kind == "log":
            self._log_patterns[managed.name] = (pid, re.compile(ready.target.encode()))

    def lines(self, instance: str, lines: bytes) -> None:
        """Output of an instance (lines joined by \\n): a `ready = { log = ... }`
        probe passes when one line matches. Split only while a probe waits."""
        waiting = self._log_patterns.get(instance)
        if waiting is None:
            return
        pid, pattern = waiting
        if any(pattern.search(line) for line in lines.split(b"\n")):
            del self._log_patterns[instance]
            managed = self._supervisor.instances[instance]
            self._supervisor.feed(managed, Ready(pid))

    def notify_ready(self, managed: Managed) -> None:
        """`READY=1` arrived from the instance (sd_notify)."""
        if managed.core.pid is not None:
            self._supervisor.feed(managed, Ready(managed.core.pid))

    def close(self) -> None:
        for name in list(self._tasks):
            self._cancel(name)

    def _forget_results(self, name: str) -> None:
        self.failures.pop(name, None)
        self.results.pop(name, None)

    def _record(self, name: str, role: str, why: str | None) -> None:
        """The result of one check: kept for `status NAME`; a failure is the
        instance's message until the same check passes."""
        self.results.setdefault(name, {})[role] = "passed" if why is None else why
        if why is not None:
            self.failures[name] = f"{role}: {why}"
        elif self.failures.get(name, "").startswith(f"{role}: "):
            del self.failures[name]

    def _start(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._background(coro)
        self._tasks.setdefault(name, []).append(task)
        task.add_done_callback(lambda t: self._forget(name, t))

    def _forget(self, name: str, task: asyncio.Task[Any]) -> None:
        tasks = self._tasks.get(name)
        if tasks and task in tasks:
            tasks.remove(task)

    def _cancel(self, name: str) -> None:
        self._log_patterns.pop(name, None)
        for task in self._tasks.pop(name, []):
            task.cancel()

    async def _check(self, managed: Managed, check: CheckPlan) -> str | None:
        if check.kind == "tcp" and check.address is not None:
            return await check_tcp(check.address, check.timeout)
        if check.kind == "http":
            return await check_http(check.target, check.timeout)
        code, why = await self._supervisor.run_command(managed.plan, check.argv, check.timeout)
        if code == 0:
            return None
        command = " ".join(check.argv)
        if code is None:
            return f"{command!r} {why}" if why.startswith("timed out") else why
        return f"{command!r} exited with code {code}" + (f": {why}" if why else "")

    def _checker(
        self, managed: Managed, check: CheckPlan, role: str
    ) -> Callable[[], Awaitable[str | None]]:
        """One check, as a function of nothing: None when it passed, else why not."""
        if check.kind == "plugin":
            return _PluginCheck(self._plugins, managed, check, role)
        return lambda: self._check(managed, check)

    async def _until_ready(self, managed: Managed, check: CheckPlan, pid: int) -> None:
        try:
            await self._ready_loop(managed, check, pid)
        except PluginDisabled as err:
            self._stopped_by_plugin(managed, "readiness probe", err)

    def _stopped_by_plugin(self, managed: Managed, what: str, err: PluginDisabled) -> None:
        self.problems[managed.name] = f"{what} stopped: {err}"
        self._log.warning("%s: %s stopped: %s", managed.name, what, err)

    async def _ready_loop(self, managed: Managed, check: CheckPlan, pid: int) -> None:
        checker = self._checker(managed, check, "ready")
        await asyncio.sleep(check.initial_delay)
        while managed.core.pid == pid:
            why = await checker()
            if managed.core.pid != pid:
                return  # a result about a process that is gone says nothing
            self._record(managed.name, "ready", why)
            if why is None:
                self._supervisor.feed(managed, Ready(pid))
                return
            self._log.debug("%s: not ready yet: %s", managed.name, why)
            await asyncio.sleep(check.interval)

    async def _watch_health(self, managed: Managed, check: CheckPlan, pid: int) -> None:
        try:
            await self._health_loop(managed, check, pid)
        except PluginDisabled as err:
            self._stopped_by_plugin(managed, "health check", err)

    async def _health_loop(self, managed: Managed, check: CheckPlan, pid: int) -> None:
        checker = self._checker(managed, check, "health")
        await asyncio.sleep(check.initial_delay)
        failures = successes = 0
        while managed.core.pid == pid:
            why = await checker()
            if managed.core.pid != pid:
                return
            self._record(managed.name, "health", why)
            if why is None:
                failures, successes = 0, successes + 1
                if successes >= check.success_threshold:
                    self.health[managed.name] = "healthy"
            else:
                failures, successes = failures + 1, 0
                self._log.warning(
                    "%s: health check failed (%d/%d): %s",
                    managed.name,
                    failures,
                    check.failure_threshold,
                    why,
                )
                if failures >= check.failure_threshold:
                    self.health[managed.name] = "unhealthy"
                    reason = f"health check failed: {why}"
                    self._supervisor.feed(managed, Stop(restart=True, reason=reason))
                    return
            await asyncio.sleep(check.interval)


class _PluginCheck:
    """A probe plugin's check of one process (a plugin class is made once per process).

    The protocol: called with a dict about the instance (`instance`, `service`,
    `replica`, `pid`, `check` = "ready" or "health") and the probe's `options` as
    keyword arguments, it returns True or None (passed), False (failed), a string
    (failed, and why) or a `(passed, message)` pair.
    """

    def __init__(self, plugins: Plugins, managed: Managed, check: CheckPlan, role: str) -> None:
        self._plugins = plugins
        self._managed = managed
        self._check = check
        self._role = role
        self._probe: Any = None

    async def __call__(self) -> str | None:
        name, check, plugins = self._check.target, self._check, self._plugins
        obj = plugins.load(PROBES, name)
        fn, kwargs = obj, check.options
        if isinstance(obj, type):
            if self._probe is None:
                self._probe = await plugins.call(
                    PROBES, name, obj, (), check.options, check.timeout
                )
            fn, kwargs = self._probe, {}
        managed = self._managed
        info = {
            "instance": managed.name,
            "service": managed.service,
            "replica": managed.plan.replica,
            "pid": managed.core.pid,
            "check": self._role,
        }
        try:
            result = await plugins.call(PROBES, name, fn, (info,), kwargs, check.timeout)
        except PluginTimeout as err:
            return f"probe plugin {name!r} {err}"
        return self._verdict(name, result)

    def _verdict(self, name: str, result: object) -> str | None:
        if result is None or result is True:
            return None
        if result is False:
            return f"probe plugin {name!r} failed"
        if isinstance(result, str):
            return result or f"probe plugin {name!r} failed"
        if (
            isinstance(result, tuple)
            and len(result) == 2
            and isinstance(result[0], bool)
            and isinstance(result[1], str)
        ):
            passed, message = result
            return None if passed else message or f"probe plugin {name!r} failed"
        raise self._plugins.fail(
            PROBES,
            name,
            f"it returned {result!r}; a probe returns True, False, None, a message"
            " or (passed, message)",
        )
