"""What the daemon says of each change, a subscriber of the change feed (supervisor.py).

Its log line (`web.1: spawned pid 42`, `web.1: running -> restarting: exited with
code 1`), counted rather than written one by one in a crash loop; when each instance
entered its state (the documents' `since`); and, under systemd, the STATUS= summary
and the fd store that keeps a new process's pipes across a crash of the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from herdsman.core.lifecycle import Event, Spawned
from herdsman.core.states import State
from herdsman.runtime.logfile import Lines
from herdsman.runtime.systemd import Manager
from herdsman.runtime.throttle import Throttle

if TYPE_CHECKING:
    from herdsman.runtime.supervisor import Managed


class ChangeLog:
    def __init__(
        self,
        log: logging.Logger,
        loop: asyncio.AbstractEventLoop,
        manager: Manager,
        summary: Callable[[], str],
    ) -> None:
        self._manager = manager
        self._summary = summary
        # Per instance: a crash loop's lines are counted, not written one by one.
        # Two or three lines per instance started: written without a LogRecord.
        self._repeats = Throttle(Lines(log), loop)
        self.since: dict[str, float] = {}  # instance -> when it entered its state (unix time)

    def changed(self, managed: Managed, old: State, new: State, event: Event) -> None:
        core = managed.core
        name = core.name
        if isinstance(event, Spawned):
            self._repeats.log(name, logging.INFO, f"{name}: spawned pid {event.pid}")
            if self._manager.fdstore:
                self._manager.store_fds([pump.fd for pump in managed.pumps if not pump.closed])
        if new is not old:
            self.since[name] = time.time()
            # The message is the instance's latest: it belongs to the last change of
            # a burst (stopped -> starting -> failed: the spawn's failure).
            why = f": {core.message}" if core.message and new is core.state else ""
            # A State is a StrEnum: its `_value_` (an attribute, where `.value` is a
            # property) is a plain str, which an f-string takes as it is, where the
            # member itself goes through format() (half the time of the line's text).
            self._repeats.log(name, logging.INFO, f"{name}: {old._value_} -> {new._value_}{why}")
            self._manager.status_changed(self._summary)

    def close(self) -> None:
        self._repeats.close()
