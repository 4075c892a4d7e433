"""The documents the daemon answers with, built here and nowhere else.

Each is a TypedDict that matches its schema in the OpenAPI document
(api/openapi.py; tests/api/test_documents.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from herdsman import __version__
from herdsman.core.logline import timestamp, unmark
from herdsman.core.signals import signal_name
from herdsman.core.states import State

if TYPE_CHECKING:
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


@dataclass(frozen=True, slots=True)
class Parts:
    """Where an instance document's pieces come from besides the instance itself,
    each looked up by the instance's name. `now` is the loop's time (for uptime)."""

    now: float
    sample: Callable[[str], Sample | None]  # its last resource sample
    health: Callable[[str], str | None]
    checks: Callable[[str], Mapping[str, str]]
    blocked: Callable[[str], str | None]  # why it cannot start
    since: Callable[[str], float | None]  # when it entered its state (unix time)
    log_error: Callable[[str], str | None]  # what is wrong with its log file
    problem: Callable[[str], str | None]  # a probe that cannot run
    failure: Callable[[str], str | None]  # its last failed check
    notify_status: Callable[[str], str | None]  # what it said with sd_notify STATUS=


def instance_document(managed: Managed, parts: Parts) -> InstanceDocument:
    """`managed` as `status` shows it."""
    core, name = managed.core, managed.name
    sample = parts.sample(name) if core.pid is not None else None
    since = parts.since(name)
    blocked = parts.blocked(name)
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
        "uptime": _uptime(managed, parts.now),
        "cpu_percent": sample.cpu_percent if sample else None,
        "rss_bytes": sample.rss_bytes if sample else None,
        "processes": sample.processes if sample else None,
        "open_fds": sample.open_fds if sample else None,
        "message": _message(managed, parts, blocked),
        "blocked": blocked,
        "since": iso(since) if since is not None else None,
        "command": list(managed.plan.argv),
        "checks": dict(parts.checks(name)),
    }


def _uptime(managed: Managed, now: float) -> float | None:
    core = managed.core
    if core.pid is None or core.spawned_at is None:
        return None
    return round(now - core.spawned_at, 3)


def _message(managed: Managed, parts: Parts, blocked: str | None) -> str:
    """The most pressing of what is wrong: its log file, a probe that cannot run, a
    dependency that blocks it, a failed check, then what the lifecycle or the service
    itself (sd_notify STATUS=) said."""
    name = managed.name
    return (
        parts.log_error(name)
        or parts.problem(name)
        or (f"cannot start: {blocked}" if blocked else "")
        or parts.failure(name)
        or managed.core.message
        or parts.notify_status(name)
        or ""
    )


def _samples(instances: Sequence[Managed], parts: Parts) -> list[Sample | None]:
    return [parts.sample(m.name) if m.core.pid is not None else None for m in instances]


def _sampled(key: str) -> Callable[[Sequence[Managed], Parts], list[Any]]:
    def column(instances: Sequence[Managed], parts: Parts) -> list[Any]:
        return [getattr(s, key) if s else None for s in _samples(instances, parts)]

    return column


def _since_column(instances: Sequence[Managed], parts: Parts) -> list[str | None]:
    return [iso(t) if (t := parts.since(m.name)) is not None else None for m in instances]


# How each key of an instance document is made for all instances at once: the same
# values as instance_document's (tests/api/test_documents.py compares them).
_COLUMNS: dict[str, Callable[[Sequence[Managed], Parts], list[Any]]] = {
    "name": lambda ms, p: [m.core.name for m in ms],
    "service": lambda ms, p: [m.plan.service for m in ms],
    "replica": lambda ms, p: [m.plan.replica for m in ms],
    "state": lambda ms, p: [m.core.state.value for m in ms],
    "pid": lambda ms, p: [m.core.pid for m in ms],
    "ready": lambda ms, p: [m.core.ready for m in ms],
    "health": lambda ms, p: [p.health(m.core.name) for m in ms],
    "restarts": lambda ms, p: [m.core.restarts for m in ms],
    "exit_code": lambda ms, p: [m.core.exit_code for m in ms],
    "exit_signal": lambda ms, p: [
        signal_name(m.core.exit_signal) if m.core.exit_signal else None for m in ms
    ],
    "uptime": lambda ms, p: [_uptime(m, p.now) for m in ms],
    "cpu_percent": _sampled("cpu_percent"),
    "rss_bytes": _sampled("rss_bytes"),
    "processes": _sampled("processes"),
    "open_fds": _sampled("open_fds"),
    "message": lambda ms, p: [_message(m, p, p.blocked(m.core.name)) for m in ms],
    "blocked": lambda ms, p: [p.blocked(m.core.name) for m in ms],
    "since": _since_column,
    "command": lambda ms, p: [list(m.plan.argv) for m in ms],
    "checks": lambda ms, p: [dict(p.checks(m.core.name)) for m in ms],
}
COLUMNS = tuple(_COLUMNS)  # every key of an instance document, in its order


def instance_columns(
    instances: Sequence[Managed], keys: Iterable[str], parts: Parts
) -> dict[str, list[Any]]:
    """The values of `keys` (each one of COLUMNS) of every instance's document."""
    return {key: _COLUMNS[key](instances, parts) for key in keys}


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
