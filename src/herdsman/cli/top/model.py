"""What `herdsman top` shows, without the screen: the instances as the daemon last
told us (a status snapshot, then every event), sorted and filtered, as table rows.

Snapshots (the status document, fetched every few seconds for CPU and memory) and
events travel on different connections, so a snapshot can be older than an event
already applied. Each snapshot is tagged with the number of events seen when it
was asked for; an instance changed by a later event keeps the event's state and
takes only the resource samples from the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from herdsman.cli import table
from herdsman.core.patterns import GLOB, matches

Instance = dict[str, Any]
SAMPLED = ("cpu_percent", "rss_bytes", "processes", "open_fds", "uptime")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    right: bool = False  # numbers align right, as in `status`


COLUMNS = (
    Column("name", "INSTANCE"),
    Column("state", "STATE"),
    Column("pid", "PID", right=True),
    Column("uptime", "UPTIME", right=True),
    Column("restarts", "RESTARTS", right=True),
    Column("ready", "READY/HEALTH"),
    Column("cpu", "CPU", right=True),
    Column("mem", "MEM", right=True),
    Column("message", "MESSAGE"),
)
SORTABLE = tuple(c.key for c in COLUMNS if c.key != "message")


def cells(inst: Mapping[str, Any]) -> tuple[str, ...]:
    """An instance's row, as `herdsman status` writes it."""
    return (
        str(inst["name"]),
        str(inst["state"]),
        "-" if inst.get("pid") is None else str(inst["pid"]),
        table.uptime(inst.get("uptime")),
        str(inst.get("restarts", 0)),
        table.ready_health(inst),
        table.cpu(inst.get("cpu_percent")),
        table.memory(inst.get("rss_bytes")),
        table.message(inst),
    )


def sort_value(inst: Mapping[str, Any], key: str) -> tuple[Any, ...]:
    """Numbers sort as numbers, with the missing ones (`-`) first."""
    value = {
        "name": inst.get("name"),
        "state": inst.get("state"),
        "pid": inst.get("pid"),
        "uptime": inst.get("uptime"),
        "restarts": inst.get("restarts"),
        "ready": table.ready_health(inst),
        "cpu": inst.get("cpu_percent"),
        "mem": inst.get("rss_bytes"),
    }[key]
    return (value is not None, value if value is not None else 0)


def matches_filter(pattern: str, inst: Mapping[str, Any]) -> bool:
    """A pattern with `*?[` is a glob on the instance or service name; other text is
    looked for in the name and the state (`fail` shows the failed ones)."""
    if not pattern:
        return True
    name, service, state = str(inst["name"]), str(inst.get("service", "")), str(inst["state"])
    if not GLOB.isdisjoint(pattern):
        return matches(pattern, name, service)
    needle = pattern.lower()
    return needle in name.lower() or needle in state.lower()


@dataclass
class Model:
    instances: dict[str, Instance] = field(default_factory=dict)
    daemon: dict[str, Any] = field(default_factory=dict)
    events_seen: int = 0
    sort_key: str | None = None  # None: the config's order
    reverse: bool = False
    pattern: str = ""
    _changed_at: dict[str, int] = field(default_factory=dict)

    def snapshot(self, status: Mapping[str, Any], events_seen: int) -> None:
        """A status document asked for when `events_seen` events had been applied."""
        self.daemon = dict(status.get("daemon") or {})
        fresh: dict[str, Instance] = {}
        for inst in status.get("services") or []:
            name = str(inst["name"])
            mine = self.instances.get(name)
            if mine is not None and self._changed_at.get(name, 0) > events_seen:
                fresh[name] = {**mine, **{k: inst.get(k) for k in SAMPLED if k in inst}}
                if mine.get("pid") != inst.get("pid"):
                    fresh[name]["uptime"] = mine.get("uptime")  # a newer process than sampled
            else:
                fresh[name] = dict(inst)
        # An instance only an event knows (a reload added it after the snapshot) stays.
        for name, mine in self.instances.items():
            if name not in fresh and self._changed_at.get(name, 0) > events_seen:
                fresh[name] = mine
        self.instances = fresh

    def apply(self, event: Mapping[str, Any]) -> None:
        """An event carries the instance's whole state but its resource samples."""
        self.events_seen += 1
        name = str(event["instance"])
        known = self.instances.get(name, {})
        updated: Instance = {**known, **event, "name": name}
        updated.pop("instance", None)
        updated.pop("time", None)
        updated.pop("previous", None)
        if event.get("pid") is None:
            for key in SAMPLED:
                updated[key] = None  # nothing runs: nothing to measure
        elif event.get("pid") != known.get("pid"):
            updated.update(cpu_percent=None, rss_bytes=None)
        self.instances[name] = updated
        self._changed_at[name] = self.events_seen

    def rows(self) -> list[Instance]:
        """The instances shown, in the order shown."""
        shown = [i for i in self.instances.values() if matches_filter(self.pattern, i)]
        if self.sort_key is not None:
            key = self.sort_key
            shown.sort(key=lambda i: sort_value(i, key), reverse=self.reverse)
        elif self.reverse:
            shown.reverse()
        return shown

    def cycle_sort(self) -> str:
        """The next sort column (after the last one, the config's order again)."""
        order: Sequence[str | None] = (None, *SORTABLE)
        self.sort_key = order[(order.index(self.sort_key) + 1) % len(order)]
        return self.sort_key or "config order"

    def sort_by(self, key: str) -> None:
        """Sort by `key`; asked again, the other way round."""
        if self.sort_key == key:
            self.reverse = not self.reverse
        else:
            self.sort_key, self.reverse = key, False

    def counts(self) -> str:
        """`5 instances: 3 running, 1 failed, 1 stopped`."""
        by_state: dict[str, int] = {}
        for inst in self.instances.values():
            by_state[str(inst["state"])] = by_state.get(str(inst["state"]), 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        total = len(self.instances)
        return f"{total} instance{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")
