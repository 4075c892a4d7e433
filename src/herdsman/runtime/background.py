"""The daemon's background tasks, and what an unexpected error leads to.

Every task belongs to the daemon's task group and is cancelled when the daemon
closes. An unexpected error in one, or one escaping a callback of the event loop
(a pump, a timer, a signal handler), leaves the supervision state in doubt: it is
logged and answered by `on_error` (the daemon heals with a re-exec), never by
tearing the daemon down, which would leave the services unmanaged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any


class Background:
    def __init__(
        self, tasks: asyncio.TaskGroup, log: logging.Logger, on_error: Callable[[str], None]
    ) -> None:
        self._tasks = tasks
        self._log = log
        self._on_error = on_error
        self._running: set[asyncio.Task[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the daemon's task group, cancelled when the daemon closes."""
        task = self._tasks.create_task(self._guarded(coro))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it began
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("unexpected error in a daemon task")
            self._on_error("an unexpected error in a daemon task")
            return None

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: an error escaping a callback (a pump, a timer,
        a signal handler) leaves the supervision state in doubt."""
        error = context.get("exception")
        message = context.get("message", "unexpected error")
        if error is None:
            self._log.error("event loop: %s", message)
            return
        self._log.error("event loop: %s", message, exc_info=error)
        self._on_error(f"an unexpected error in the event loop ({error!r})")

    def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()
