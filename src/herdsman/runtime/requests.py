"""Control requests by pattern: start, stop, restart or signal the instances a
pattern names (see core/patterns.py), wait for the outcome when asked to, and
answer with their documents. Each request becomes events on the supervisor's
queue; the herd decides what happens."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from herdsman.core.herd import StartRequest
from herdsman.core.patterns import matches, no_match
from herdsman.core.signals import parse_signal
from herdsman.core.states import State
from herdsman.runtime.control import ControlError, refuse_while_stopping
from herdsman.runtime.documents import InstanceDocument, ResultDocument
from herdsman.runtime.supervisor import Managed, Supervisor

# Settled states of a start request: it worked, or herdsman gave up on it.
START_DONE = (State.RUNNING, State.EXITED, State.FAILED, State.STOPPED)


class Requests:
    def __init__(
        self,
        supervisor: Supervisor,
        *,
        stopping: asyncio.Event,
        documents: Callable[[list[Managed]], list[InstanceDocument]],
        run_in_background: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self._supervisor = supervisor
        self._stopping = stopping
        self._documents = documents  # of some instances, for the answer
        self._run_in_background = run_in_background
        self._loop = asyncio.get_running_loop()
        self._restarts: set[asyncio.Task[Any]] = set()  # in flight (a re-exec waits for them)

    @property
    def restarting(self) -> bool:
        return bool(self._restarts)

    def match(self, pattern: str) -> list[Managed]:
        """The instances `pattern` names (see core/patterns.py), in their order."""
        sup = self._supervisor
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

    async def start(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        refuse_while_stopping(self._stopping)
        managed = self.match(pattern)
        self._start(managed)
        if not wait:
            return self._result(managed, [])
        failed, timed_out = await self._settled(managed, self._deadline(timeout))
        return self._result(managed, failed, timed_out=timed_out)

    async def stop(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        managed = self.match(pattern)
        for m in managed:
            self._supervisor.stop(m)
        if wait and not await self._supervisor.wait_stopped(managed, timeout):
            live = [m.name for m in managed if m.core.live]
            return self._result(managed, live, timed_out=True)
        return self._result(managed, [])

    async def restart(self, pattern: str, wait: bool, timeout: float | None) -> ResultDocument:  # noqa: ASYNC109 -- the Controller's contract
        refuse_while_stopping(self._stopping)
        managed = self.match(pattern)
        deadline = self._deadline(timeout)

        async def stop_then_start() -> tuple[list[str], bool]:
            for m in managed:
                self._supervisor.stop(m)
            await self._supervisor.wait_stopped(managed, None)
            self._start(managed)
            return await self._settled(managed, deadline)

        task = self._run_in_background(stop_then_start())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)
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
            self._supervisor.signal_group(m, number)
        return self._result(managed, [])

    def _result(
        self, managed: list[Managed], failed: list[str], *, timed_out: bool = False
    ) -> ResultDocument:
        return {"instances": self._documents(managed), "failed": failed, "timed_out": timed_out}

    def _start(self, managed: list[Managed]) -> None:
        # What they depend on and is not running comes up first (like `up SERVICE`).
        self._supervisor.submit(StartRequest(tuple(m.name for m in managed)))

    def _hopeless(self, managed: list[Managed]) -> bool:
        """Whether one of `managed` can no longer get to running without someone
        asking again: it ended (failed, exited, stopped), or it is blocked."""
        if any(m.state in START_DONE and m.state is not State.RUNNING for m in managed):
            return True
        return any(m.core.waiting for m in managed) and bool(
            self._supervisor.herd.blocked([m.name for m in managed])
        )

    async def _settled(
        self, managed: list[Managed], deadline: float | None
    ) -> tuple[list[str], bool]:
        """Wait until every one of `managed` runs, or one cannot get there, or the
        deadline (loop time) passes: the names not running, and whether time ran out."""

        def answered() -> bool:
            return all(m.state is State.RUNNING for m in managed) or self._hopeless(managed)

        remaining = None if deadline is None else max(0.0, deadline - self._loop.time())
        in_time = await self._supervisor.wait_until(answered, remaining)
        return [m.name for m in managed if m.state is not State.RUNNING], not in_time

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self._loop.time() + timeout
