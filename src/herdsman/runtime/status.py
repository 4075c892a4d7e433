"""What the API shows of the herd: each instance's document, gathered from the parts
that know its fields (the supervisor and the herd, the sampler, the prober, the
change log's `since`, the log sink, the notify socket) and built by documents.py;
the one-line summary and whether the herd has settled, for the service manager."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from herdsman.core.states import State
from herdsman.runtime.control import ControlError
from herdsman.runtime.documents import (
    SAMPLED,
    InstanceDocument,
    Parts,
    instance_columns,
    instance_document,
    summary,
)
from herdsman.runtime.logsink import LogSink
from herdsman.runtime.notify import Notifications
from herdsman.runtime.probes import Prober
from herdsman.runtime.sampler import Sampler
from herdsman.runtime.supervisor import Managed, Supervisor


class StatusView:
    def __init__(
        self,
        supervisor: Supervisor,
        sampler: Sampler,
        prober: Prober,
        output: LogSink,
        notify: Notifications,
        since: Mapping[str, float],
    ) -> None:
        self._supervisor = supervisor
        self._sampler = sampler
        self._prober = prober
        self._output = output
        self._notify = notify
        self._since = since  # when each instance entered its state
        self._loop = asyncio.get_running_loop()

    def instances(self) -> list[InstanceDocument]:
        """Every instance, with fresh samples."""
        self._sampler.refresh()
        parts = self._parts(self._blocked())
        return [instance_document(m, parts) for m in self._supervisor.instances.values()]

    def columns(self, keys: list[str]) -> dict[str, list[Any]]:
        """The values of `keys` of every instance (see documents.instance_columns),
        sampled afresh only when a key is a sample's."""
        if SAMPLED.intersection(keys):
            self._sampler.refresh()
        instances = list(self._supervisor.instances.values())
        return instance_columns(instances, keys, self._parts(self._blocked()))

    def instance(self, name: str) -> InstanceDocument:
        """One instance by exact name, with a fresh sample; ControlError(404) if none."""
        managed = self._supervisor.instances.get(name)
        if managed is None:
            raise ControlError(404, f"no instance named {name!r}")
        self._sampler.refresh()
        return self.document(managed)

    def of(self, managed: list[Managed]) -> list[InstanceDocument]:
        """Of `managed`, for a request's answer (with fresh samples)."""
        self._sampler.refresh()
        parts = self._parts(self._blocked(managed))
        return [instance_document(m, parts) for m in managed]

    def document(self, managed: Managed, reasons: dict[str, str] | None = None) -> InstanceDocument:
        """`managed` as `status` shows it, with the samples it has; `reasons`: why the
        waiting instances cannot start (default: asked of the herd for this one)."""
        if reasons is None:
            reasons = self._blocked([managed])
        return instance_document(managed, self._parts(reasons))

    def _parts(self, reasons: dict[str, str]) -> Parts:
        """Where the documents' pieces come from; `reasons`: why instances are blocked."""
        prober = self._prober
        return Parts(
            now=self._loop.time(),
            sample=self._sampler.get,
            health=self._supervisor.herd.health.get,
            checks=lambda name: prober.results.get(name, {}),
            blocked=reasons,
            since=self._since.get,
            log_errors=self._output.errors,
            problems=prober.problems,
            failures=prober.failures,
            notify_statuses=self._notify.statuses,
        )

    def summary(self) -> str:
        return summary(m.state for m in self._supervisor.instances.values())

    def settled(self) -> bool:
        """Whether no instance is on its way up any more (starting or restarting):
        each runs (past start_seconds, and ready if it has a probe), has exited, has
        failed, or is stopped (not started, or waiting for a dependency that failed)."""
        return not any(
            m.state in (State.STARTING, State.RESTARTING)
            for m in self._supervisor.instances.values()
        )

    def _blocked(self, managed: list[Managed] | None = None) -> dict[str, str]:
        """Why waiting instances (of `managed`'s services, default all) cannot start."""
        names = None if managed is None else [m.name for m in managed]
        return self._supervisor.herd.blocked(names)
