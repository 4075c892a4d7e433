"""Calling plugin code from the daemon without letting it hurt supervision.

Plugins are loaded by name once (herdsman/plugins.py finds them) and called with a
timeout. Async callables run on the event loop; plain functions run on a few
worker threads, so one that blocks (a `requests.post`) cannot stall the loop. A
plugin that fails to load, raises, returns what its protocol does not allow, or
times out `TIMEOUTS_TO_DISABLE` times in a row is logged once with its traceback
and disabled until herdsman restarts; its callers then see `PluginDisabled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from herdsman import plugins
from herdsman.plugins import KIND_OF_GROUP, PluginError

TIMEOUTS_TO_DISABLE = 3
WORKER_THREADS = 4


class PluginDisabled(Exception):
    """The plugin was disabled; `str()` says why, in one sentence."""


class PluginTimeout(Exception):
    """One call did not finish within its timeout (not yet enough to disable it)."""


class Plugins:
    """The daemon's loaded plugins, by (group, name), and those it gave up on."""

    def __init__(self, listed: tuple[str, ...], log: logging.Logger) -> None:
        self._listed = listed
        self._log = log
        self._loaded: dict[tuple[str, str], Any] = {}
        self._disabled: dict[tuple[str, str], str] = {}
        self._timeouts: dict[tuple[str, str], int] = {}
        self._threads: WorkerThreads | None = None

    def use(self, listed: tuple[str, ...]) -> None:
        """After a reload: names resolve against the new `settings.plugins`."""
        if listed != self._listed:
            self._listed = listed
            self._loaded.clear()

    def load(self, group: str, name: str) -> Any:
        """The plugin object; PluginDisabled if it cannot be loaded or was disabled."""
        key = (group, name)
        if key in self._disabled:
            raise PluginDisabled(self._disabled[key])
        if key not in self._loaded:
            try:
                self._loaded[key] = plugins.resolve(name, group, self._listed)
            except PluginError as err:
                self.disable(group, name, str(err), err.__cause__ or err)
                raise PluginDisabled(self._disabled[key]) from None
        return self._loaded[key]

    def disable(self, group: str, name: str, why: str, error: BaseException | None) -> None:
        key = (group, name)
        if key in self._disabled:
            return
        kind = KIND_OF_GROUP[group]
        self._disabled[key] = f"{kind} plugin {name!r} is disabled: {why}"
        exc_info = (type(error), error, error.__traceback__) if error is not None else None
        self._log.error("%s plugin %r disabled: %s", kind, name, why, exc_info=exc_info)

    def disabled(self, group: str, name: str) -> str | None:
        return self._disabled.get((group, name))

    async def call(
        self,
        group: str,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,  # noqa: ASYNC109 -- its own timeouts count: the third in a row disables the plugin
    ) -> Any:
        """`fn(*args, **kwargs)` of plugin `name`, awaited if need be, within `timeout`.

        PluginTimeout when it was too slow (the third time in a row disables it);
        PluginDisabled when it raised (it is disabled now) or already was.
        """
        key = (group, name)
        if key in self._disabled:
            raise PluginDisabled(self._disabled[key])
        try:
            async with asyncio.timeout(timeout):
                if _is_async(fn):
                    result = await fn(*args, **kwargs)
                else:
                    result = await self._thread_pool().run(fn, args, kwargs)
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            count = self._timeouts[key] = self._timeouts.get(key, 0) + 1
            if count >= TIMEOUTS_TO_DISABLE:
                self.disable(group, name, f"timed out {count} times in a row ({timeout:g}s)", None)
                raise PluginDisabled(self._disabled[key]) from None
            raise PluginTimeout(f"timed out after {timeout:g}s") from None
        except (Exception, SystemExit) as err:  # a plugin's sys.exit() must not end the daemon
            self.disable(group, name, f"it raised {plugins.describe_error(err)}", err)
            raise PluginDisabled(self._disabled[key]) from None
        self._timeouts.pop(key, None)
        return result

    def fail(self, group: str, name: str, why: str) -> PluginDisabled:
        """Disable a plugin that broke its protocol (say, returned a wrong type)."""
        self.disable(group, name, why, None)
        return PluginDisabled(self._disabled[(group, name)])

    def _thread_pool(self) -> WorkerThreads:
        if self._threads is None:
            self._threads = WorkerThreads(asyncio.get_running_loop(), WORKER_THREADS)
        return self._threads

    def close(self) -> None:
        if self._threads is not None:
            self._threads.close()
            self._threads = None


def _is_async(fn: Callable[..., Any]) -> bool:
    if isinstance(fn, type):
        return False  # making an instance: its `async def __call__` is for later
    call = getattr(fn, "__call__", None)  # noqa: B004 (an instance with `async def __call__`)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


Job = tuple[asyncio.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerThreads:
    """A few daemon threads for plugins' plain functions.

    Not asyncio's default executor: its threads are joined at exit, so one plugin
    stuck in a blocking call would keep the daemon from ever exiting. A call that
    overruns its timeout keeps its thread until it returns; the others carry on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        import queue  # the threads are made only when a plain function must run
        import threading

        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"herdsman-plugin-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def run(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if future.cancelled():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as err:
                self._settle(future, None, err)
            else:
                self._settle(future, result, None)

    def _settle(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(settle)
