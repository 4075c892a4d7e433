"""The documents the daemon answers with, built here and nowhere else.

Each is a TypedDict that matches its schema in the OpenAPI document
(api/openapi.py; tests/api/test_documents.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NotRequired, TypedDict

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


def instance_document(
    managed: Managed,
    *,
    now: float,
    sample: Sample | None,
    health: str | None,
    checks: Mapping[str, str],
    blocked: str | None,
    since: float | None,
    log_error: str | None,
    problem: str | None,
    failure: str | None,
    notify_status: str | None,
) -> InstanceDocument:
    """`managed` as `status` shows it. `now` is the loop's time (uptime); `sample`
    its last resource sample; the message is the most pressing of what is wrong:
    its log file, a probe that cannot run, a dependency that blocks it, a failed
    check, then what the lifecycle or the service itself (sd_notify STATUS=) said."""
    core = managed.core
    if core.pid is None:
        sample = None
    uptime = None
    if core.pid is not None and core.spawned_at is not None:
        uptime = round(now - core.spawned_at, 3)
    return {
        "name": managed.name,
        "service": managed.service,
        "replica": managed.plan.replica,
        "state": core.state.value,
        "pid": core.pid,
        "ready": core.ready,
        "health": health,
        "restarts": core.restarts,
        "exit_code": core.exit_code,
        "exit_signal": signal_name(core.exit_signal) if core.exit_signal else None,
        "uptime": uptime,
        "cpu_percent": sample.cpu_percent if sample else None,
        "rss_bytes": sample.rss_bytes if sample else None,
        "processes": sample.processes if sample else None,
        "open_fds": sample.open_fds if sample else None,
        "message": log_error
        or problem
        or (f"cannot start: {blocked}" if blocked else "")
        or failure
        or core.message
        or notify_status
        or "",
        "blocked": blocked,
        "since": iso(since) if since is not None else None,
        "command": list(managed.plan.argv),
        "checks": dict(checks),
    }


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
