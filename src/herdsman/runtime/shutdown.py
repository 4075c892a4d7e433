"""The daemon's graceful stop, and the signals that ask for it.

The first SIGINT or SIGTERM (or the API's shutdown) stops every instance in reverse
dependency waves, then waits for what left its process group and for the hooks
still reporting the last changes; a second signal kills everything at once. SIGHUP
reloads the config; an invalid one is logged and changes nothing. A re-exec also
ends the wait, and stops nothing: the services carry on under the new image.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from herdsman.runtime.control import ControlError
from herdsman.runtime.hooks import Hooks
from herdsman.runtime.statefile import StateWriter
from herdsman.runtime.supervisor import Supervisor
from herdsman.runtime.systemd import Manager

HOOK_DRAIN_TIMEOUT = 5.0  # at shutdown, for hooks still handling the last state changes
ESCAPES_DRAIN_TIMEOUT = 5.0  # at shutdown, for processes that left their groups to die
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Shutdown:
    def __init__(
        self,
        supervisor: Supervisor,
        hooks: Hooks,
        state: StateWriter,
        manager: Manager,
        note: Callable[[int, str], None],
        run_in_background: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self._supervisor = supervisor
        self._hooks = hooks
        self._state = state
        self._manager = manager
        self._note = note
        self._run_in_background = run_in_background
        # Set to end the loop: a shutdown, or (by the reexecutor) a re-exec. Whoever
        # refuses new work while stopping reads it.
        self.requested = asyncio.Event()
        self._signals = 0

    def listen(self, reload: Callable[[], Awaitable[object]]) -> None:
        # Through the supervisor's Signals, never loop.add_signal_handler: one wake-up
        # fd for the process, whose overflow loses no signal (see signals.py).
        signals = self._supervisor.signals
        for signum in (signal.SIGINT, signal.SIGTERM):
            signals.add(signum, functools.partial(self._on_signal, signum))
        signals.add(signal.SIGHUP, functools.partial(self._on_hangup, reload))

    def close(self) -> None:
        for signum in SIGNALS:
            self._supervisor.signals.remove(signum)

    def request(self) -> None:
        """The API's shutdown: as a first signal."""
        if not self.requested.is_set():
            self._note(logging.INFO, "shutdown requested: stopping all services")
            self.requested.set()

    async def wait(self, handing_over: Callable[[], bool]) -> bool:
        """Wait for a shutdown request, then stop everything; False if something was
        killed. A re-exec (`handing_over`) ends the wait too, and stops nothing."""
        await self.requested.wait()
        if handing_over():
            return True
        self._manager.stopping()
        supervisor = self._supervisor
        stopped = await supervisor.stop_all(supervisor.plan.shutdown_timeout)
        # Nothing of theirs may run on: what left their process groups, too.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ESCAPES_DRAIN_TIMEOUT):
                await supervisor.escapes.drain()
        if not supervisor.any_live():
            self._state.remove()  # nothing left to adopt
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HOOK_DRAIN_TIMEOUT):
                await self._hooks.drain()
        return stopped

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            self._note(logging.INFO, f"{signal.Signals(signum).name}: stopping all services")
            self.requested.set()
        else:
            self._note(logging.WARNING, "second signal: killing all services now")
            self._supervisor.kill_all()

    def _on_hangup(self, reload: Callable[[], Awaitable[object]]) -> None:
        self._run_in_background(self._reload_quietly(reload))

    async def _reload_quietly(self, reload: Callable[[], Awaitable[object]]) -> None:
        try:
            await reload()
        except ControlError as err:
            self._note(logging.ERROR, f"reload refused, nothing changed: {err.message}")
