"""`herdsman up --watch`: which services' files are watched, by the one Watcher.

The watcher (watcher.py, and inotify with it) is loaded and exists only while a
service declares `watch` and watching is on: a daemon without it pays nothing. A
change, once the files have been quiet, is an event for the herd, which restarts
the service's instances (or starts again those a crash or an exit left down).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from herdsman.core.herd import FilesChanged
from herdsman.core.plan import Plan

if TYPE_CHECKING:
    from herdsman.runtime.supervisor import Supervisor
    from herdsman.runtime.watcher import Watcher


class Watches:
    def __init__(
        self,
        supervisor: Supervisor,
        stopping: asyncio.Event,
        log: logging.Logger,
        *,
        on: bool,
    ) -> None:
        self._supervisor = supervisor
        self._stopping = stopping
        self._log = log
        self._on = on  # `up --watch`
        self._watcher: Watcher | None = None
        self._told_it_is_off = False

    def track(self, plan: Plan) -> None:
        """Watch the files of the services of `plan` that declare `watch`, if watching
        is on (at start, and each reload)."""
        # getattr: a plan pickled by an image older than `watch` (a heal after an upgrade)
        declared = [name for name, svc in plan.services.items() if getattr(svc, "watch", None)]
        if declared and self._on:
            if self._watcher is None:
                from herdsman.runtime.watcher import Watcher

                self._watcher = Watcher(asyncio.get_running_loop(), self._changed, self._log)
            self._watcher.sync(plan)
            return
        self.close()
        if declared and not self._told_it_is_off:
            self._told_it_is_off = True
            self._log.info(
                "%s declare%s watch, and watch is off: start with `herdsman up --watch`"
                " to restart them when their files change",
                ", ".join(declared),
                "s" if len(declared) == 1 else "",
            )

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    def _changed(self, service: str, paths: list[str]) -> None:
        """A service's watched files changed (and have been quiet since)."""
        if self._stopping.is_set():
            return  # nothing is started again while everything stops
        self._supervisor.submit(FilesChanged(service, tuple(paths)))
