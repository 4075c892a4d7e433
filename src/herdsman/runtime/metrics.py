"""Prometheus text format for `/metrics`, built with prometheus-client.

Imported on the first scrape only: prometheus-client costs about 5 MB of
memory, which a daemon nobody scrapes should not pay.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from herdsman.core.states import State

if TYPE_CHECKING:
    from herdsman.runtime.documents import DaemonDocument, InstanceDocument


class _Snapshot:
    """A collector over one status snapshot (prometheus-client calls `collect`)."""

    def __init__(
        self, instances: list[InstanceDocument], daemon: DaemonDocument, cpu: float, rss: int
    ) -> None:
        self._instances = instances
        self._daemon = daemon
        self._cpu = cpu
        self._rss = rss

    def collect(self) -> Iterator[Metric]:
        labels = ["instance", "service"]
        state = GaugeMetricFamily(
            "herdsman_instance_state",
            "1 for the state the instance is in",
            labels=[*labels, "state"],
        )
        up = GaugeMetricFamily("herdsman_instance_up", "1 when running", labels=labels)
        ready = GaugeMetricFamily("herdsman_instance_ready", "1 when ready", labels=labels)
        restarts = CounterMetricFamily(
            "herdsman_instance_restarts", "automatic restarts", labels=labels
        )
        uptime = GaugeMetricFamily(
            "herdsman_instance_uptime_seconds", "seconds since spawned", labels=labels
        )
        cpu = GaugeMetricFamily(
            "herdsman_instance_cpu_percent", "CPU % of the process tree", labels=labels
        )
        rss = GaugeMetricFamily(
            "herdsman_instance_rss_bytes", "RSS of the process tree", labels=labels
        )
        for doc in self._instances:
            values = [doc["name"], doc["service"]]
            for name in State:
                state.add_metric([*values, name], 1.0 if doc["state"] == name else 0.0)
            up.add_metric(values, 1.0 if doc["state"] == "running" else 0.0)
            ready.add_metric(values, 1.0 if doc["ready"] else 0.0)
            restarts.add_metric(values, float(doc["restarts"]))
            uptime.add_metric(values, float(doc["uptime"] or 0.0))
            if doc["cpu_percent"] is not None:
                cpu.add_metric(values, float(doc["cpu_percent"]))
            if doc["rss_bytes"] is not None:
                rss.add_metric(values, float(doc["rss_bytes"]))
        yield from (state, up, ready, restarts, uptime, cpu, rss)
        info = GaugeMetricFamily(
            "herdsman_daemon_info", "version of the daemon", labels=["version", "config"]
        )
        info.add_metric([self._daemon["version"], self._daemon["config"]], 1.0)
        yield info
        yield CounterMetricFamily(
            "herdsman_daemon_cpu_seconds", "CPU seconds used by the daemon", value=self._cpu
        )
        yield GaugeMetricFamily("herdsman_daemon_rss_bytes", "RSS of the daemon", value=self._rss)
        yield GaugeMetricFamily(
            "herdsman_daemon_instances", "instances configured", value=len(self._instances)
        )


def render(
    instances: list[InstanceDocument], daemon: DaemonDocument, cpu: float, rss: int
) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(instances, daemon, cpu, rss))
    return generate_latest(registry), CONTENT_TYPE_LATEST
