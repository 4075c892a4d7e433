"""The documents the daemon answers with, built here and nowhere else.

Each is a TypedDict that matches its schema in the OpenAPI document
(api/openapi.py; tests/api/test_documents.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from herdsman import __version__
from herdsman.core.logline import timestamp, unmark
from herdsman.core.signals import signal_name
from herdsman.core.states import State

if TYPE_CHECKING:
    from herdsman.core.lifecycle import Instance
    from herdsman.runtime.monitor import Sample
    from herdsman.runtime.supervisor import Managed

# What an instance's document holds from resource sampling: an event leaves it out
# (no state change makes a sample fresh).
SAMPLED = frozenset({"cpu_percent", "rss_bytes", "processes", "open_fds"})


# What is up first, what went wrong next, what was never started last.
SUMMARY_ORDER = (
    State.RUNNING,
    State.STARTING,
    State.RESTARTING,
    State.STOPPING,
    State.EXITED,
    State.FAILED,
    State.STOPPED,
)


class InstanceState(TypedDict):
    """What an instance document and an event both carry: its state, but neither its
    name (an event names it `instance`) nor the resource samples (SAMPLED), which no
    change makes fresh. NotRequired are the keys the API does not promise (a client
    must do without); the daemon sends every key."""

    service: str
    replica: int
    state: str
    pid: int | None
    ready: bool
    health: str | None
    restarts: int
    exit_code: int | None
    exit_signal: str | None
    uptime: float | None
    message: str | None
    blocked: NotRequired[str | None]
    since: NotRequired[str | None]
    command: NotRequired[list[str]]
    checks: NotRequired[dict[str, str]]


class InstanceDocument(InstanceState):
    """One instance as `status` shows it (Instance)."""

    name: str
    cpu_percent: float | None
    rss_bytes: int | None
    processes: NotRequired[int | None]
    open_fds: NotRequired[int | None]


class DaemonDocument(TypedDict):
    """The daemon itself (Daemon)."""

    pid: int
    version: str
    config: str
    started_at: str
    shutting_down: NotRequired[bool]
    reexecs: NotRequired[int]
    image_started_at: NotRequired[str]


class StatusDocument(TypedDict):
    """The daemon and every instance: `status --json` (Status)."""

    daemon: DaemonDocument
    services: list[InstanceDocument]


class StatusColumns(TypedDict):
    """The daemon and some keys of every instance's document, one list per key with
    a value per instance, in their order (StatusColumns): what `status` asks for to
    draw its table. Thousands of instances cost a tenth as much in lists of plain
    values as in a document each, to build, to encode and to decode."""

    daemon: DaemonDocument
    columns: dict[str, list[Any]]


class ResultDocument(TypedDict):
    """The answer to start, stop, restart and signal (ActionResult)."""

    instances: list[InstanceDocument]
    failed: list[str]
    timed_out: NotRequired[bool]


class EventDocument(InstanceState):
    """A state change, for `/v1/events` (Event)."""

    time: str
    instance: str
    previous: str


class LogDocument(TypedDict):
    """One line of output (LogLine)."""

    time: str
    instance: str
    stream: str
    line: str
    partial: NotRequired[bool]


def iso(ts: float) -> str:
    """The time form of the API, the same as in the log files."""
    return timestamp(ts).decode()


def log_document(ts: float, instance: str, stream: str, line: bytes) -> LogDocument:
    stream, partial = unmark(stream)
    document: LogDocument = {
        "time": iso(ts),
        "instance": instance,
        "stream": stream,
        "line": line.decode("utf-8", "replace"),
    }
    if partial:  # a piece of a longer line; the next line continues it
        document["partial"] = True
    return document


@dataclass(slots=True, eq=False)
class Parts:
    """Where an instance document's pieces come from besides the instance itself,
    each looked up by the instance's name. `now` is the loop's time (for uptime)."""

    now: float
    sample: Callable[[str], Sample | None]  # its last resource sample
    health: Callable[[str], str | None]
    checks: Callable[[str], Mapping[str, str]]
    since: Callable[[str], float | None]  # when it entered its state (unix time)
    # What the message is made of (see _message): mappings, so that the message
    # column sees at once when they are all empty.
    blocked: Mapping[str, str]  # why it cannot start
    log_errors: Mapping[str, str]  # what is wrong with its log file
    problems: Mapping[str, str]  # a probe that cannot run
    failures: Mapping[str, str]  # its last failed check
    notify_statuses: Mapping[str, str]  # what it said with sd_notify STATUS=


def instance_document(managed: Managed, parts: Parts) -> InstanceDocument:
    """`managed` as `status` shows it."""
    core, name = managed.core, managed.name
    sample = parts.sample(name) if core.pid is not None else None
    since = parts.since(name)
    blocked = parts.blocked.get(name)
    return {
        "name": name,
        "service": managed.service,
        "replica": managed.plan.replica,
        "state": core.state.value,
        "pid": core.pid,
        "ready": core.ready,
        "health": parts.health(name),
        "restarts": core.restarts,
        "exit_code": core.exit_code,
        "exit_signal": signal_name(core.exit_signal) if core.exit_signal else None,
        "uptime": _uptime(core, parts.now),
        "cpu_percent": sample.cpu_percent if sample else None,
        "rss_bytes": sample.rss_bytes if sample else None,
        "processes": sample.processes if sample else None,
        "open_fds": sample.open_fds if sample else None,
        "message": _message(core, parts, blocked),
        "blocked": blocked,
        "since": iso(since) if since is not None else None,
        "command": list(managed.plan.argv),
        "checks": dict(parts.checks(name)),
    }


def _uptime(core: Instance, now: float) -> float | None:
    if core.pid is None or core.spawned_at is None:
        return None
    # To the millisecond; round(x, 3) costs ten times as much (it goes through text).
    return round((now - core.spawned_at) * 1000) / 1000


def _message(core: Instance, parts: Parts, blocked: str | None) -> str:
    """The most pressing of what is wrong: its log file, a probe that cannot run, a
    dependency that blocks it, a failed check, then what the lifecycle or the service
    itself (sd_notify STATUS=) said."""
    name = core.name
    return (
        parts.log_errors.get(name)
        or parts.problems.get(name)
        or (f"cannot start: {blocked}" if blocked else "")
        or parts.failures.get(name)
        or core.message
        or parts.notify_statuses.get(name)
        or ""
    )


class _Rows:
    """The instances of one answer, as the column builders take them: their cores
    and names, and their samples, looked up once for all the sampled keys."""

    def __init__(self, instances: Sequence[Managed], parts: Parts) -> None:
        self.instances = instances
        self.parts = parts
        self.cores = [m.core for m in instances]
        self.names = [core.name for core in self.cores]
        self._samples: list[Sample | None] | None = None

    @property
    def samples(self) -> list[Sample | None]:
        if self._samples is None:
            sample = self.parts.sample
            self._samples = [sample(c.name) if c.pid is not None else None for c in self.cores]
        return self._samples


def _sampled(key: str) -> Callable[[_Rows], list[Any]]:
    value = attrgetter(key)
    return lambda rows: [value(s) if s else None for s in rows.samples]


def _message_column(rows: _Rows) -> list[str]:
    parts = rows.parts
    if not (
        parts.log_errors
        or parts.problems
        or parts.blocked
        or parts.failures
        or parts.notify_statuses
    ):
        # The usual herd: only the lifecycles have something to say, and _message
        # comes down to that (its call per instance costs more than the rest).
        return [core.message for core in rows.cores]
    blocked = parts.blocked.get
    return [_message(core, parts, blocked(core.name)) for core in rows.cores]


def _since_column(rows: _Rows) -> list[str | None]:
    since = rows.parts.since
    return [iso(t) if (t := since(name)) is not None else None for name in rows.names]


# How each key of an instance document is made for all instances at once: the same
# values as instance_document's (tests/api/test_documents.py compares them). A
# State is a str: str() gives its value without Enum's `.value`, a property that
# costs more than the rest of the column.
_COLUMNS: dict[str, Callable[[_Rows], list[Any]]] = {
    "name": lambda rows: rows.names,
    "service": lambda rows: [m.plan.service for m in rows.instances],
    "replica": lambda rows: [m.plan.replica for m in rows.instances],
    "state": lambda rows: [str(core.state) for core in rows.cores],
    "pid": lambda rows: [core.pid for core in rows.cores],
    "ready": lambda rows: [core.ready for core in rows.cores],
    "health": lambda rows: list(map(rows.parts.health, rows.names)),
    "restarts": lambda rows: [core.restarts for core in rows.cores],
    "exit_code": lambda rows: [core.exit_code for core in rows.cores],
    "exit_signal": lambda rows: [
        signal_name(core.exit_signal) if core.exit_signal else None for core in rows.cores
    ],
    "uptime": lambda rows: [_uptime(core, rows.parts.now) for core in rows.cores],
    "cpu_percent": _sampled("cpu_percent"),
    "rss_bytes": _sampled("rss_bytes"),
    "processes": _sampled("processes"),
    "open_fds": _sampled("open_fds"),
    "message": _message_column,
    "blocked": lambda rows: list(map(rows.parts.blocked.get, rows.names)),
    "since": _since_column,
    "command": lambda rows: [list(m.plan.argv) for m in rows.instances],
    "checks": lambda rows: [dict(rows.parts.checks(name)) for name in rows.names],
}
COLUMNS = tuple(_COLUMNS)  # every key of an instance document, in its order


def instance_columns(
    instances: Sequence[Managed], keys: Iterable[str], parts: Parts
) -> dict[str, list[Any]]:
    """The values of `keys` (each one of COLUMNS) of every instance's document."""
    rows = _Rows(instances, parts)
    return {key: _COLUMNS[key](rows) for key in keys}


def event_document(
    instance: InstanceDocument, previous: State, state: State, ts: float
) -> EventDocument:
    """The change of `instance` from `previous` to `state`, at `ts` (unix time). The
    state is the change's own: changes go out once the runner is idle, when the
    instance may already be further on (a spawn that failed: starting, then failed)."""
    return {
        "time": iso(ts),
        "instance": instance["name"],
        "previous": previous.value,
        "service": instance["service"],
        "replica": instance["replica"],
        "state": state.value,
        "pid": instance["pid"],
        "ready": instance["ready"],
        "health": instance["health"],
        "restarts": instance["restarts"],
        "exit_code": instance["exit_code"],
        "exit_signal": instance["exit_signal"],
        "uptime": instance["uptime"],
        "message": instance["message"],
        "blocked": instance["blocked"],
        "since": instance["since"],
        "command": instance["command"],
        "checks": instance["checks"],
    }


def daemon_document(
    *,
    pid: int,
    config: str,
    started_at: float,
    shutting_down: bool,
    reexecs: int,
    image_started_at: float,
) -> DaemonDocument:
    return {
        "pid": pid,
        "version": __version__,
        "config": config,
        "started_at": iso(started_at),
        "shutting_down": shutting_down,
        "reexecs": reexecs,
        "image_started_at": iso(image_started_at),
    }


def summary(states: Iterable[State]) -> str:
    """One line for a service manager's STATUS=: how many instances are in which
    state (`12 running, 1 restarting, 1 failed`), in a fixed order so that the text
    changes only with the counts."""
    counts = dict.fromkeys(SUMMARY_ORDER, 0)
    for state in states:
        counts[state] += 1
    return ", ".join(f"{n} {state.value}" for state, n in counts.items() if n) or "no instances"
