"""An instance as a record of plain values (no classes), and its one timer.

A record written by one version of herdsman is read by the next: the in-place
re-exec hands records to the new code, and after a crash the next daemon reads
them from state.json. A pid alone proves nothing after a crash (pids are reused),
so a record also carries the process's start time (clock ticks since boot, from
/proc), and the inodes of its output pipes, so they can be opened again from /proc.
"""

from __future__ import annotations

from typing import Any

from herdsman.core.lifecycle import (
    BackoffElapsed,
    Event,
    Instance,
    Policy,
    SetTimer,
    Spawned,
    StartSecondsPassed,
    StopTimeout,
    on_event,
)
from herdsman.core.states import State

# Instance fields a record carries, all plain values.
_FIELDS = (
    "pid",
    "ready",
    "restarts",
    "attempt",
    "restart_times",
    "spawned_at",
    "exit_code",
    "exit_signal",
    "exit_said",
    "message",
    "start_passed",
    "restart_after_stop",
    "automatic_restart",
    "limited_restart",
    "killed",
)


def timer_record(at: float, event: Event) -> list[Any] | None:
    match event:
        case StartSecondsPassed(pid=pid):
            return [at, "start_seconds", pid]
        case BackoffElapsed():
            return [at, "backoff", None]
        case StopTimeout(pid=pid):
            return [at, "stop_timeout", pid]
    return None


def timer_event(record: list[Any]) -> tuple[float, Event] | None:
    at, kind, pid = record
    if kind == "start_seconds":
        return float(at), StartSecondsPassed(int(pid))
    if kind == "backoff":
        return float(at), BackoffElapsed()
    if kind == "stop_timeout":
        return float(at), StopTimeout(int(pid))
    return None


def instance_record(core: Instance) -> dict[str, Any]:
    record: dict[str, Any] = {"state": core.state.value}
    for name in _FIELDS:
        value = getattr(core, name)
        record[name] = list(value) if isinstance(value, list) else value
    return record


def restore_instance(core: Instance, record: dict[str, Any]) -> None:
    """Put a record's values into `core` (fields it lacks keep their defaults)."""
    try:
        core.state = State(record.get("state", "stopped"))
    except ValueError:
        core.state = State.STOPPED
    for name in _FIELDS:
        if name in record:
            value = record[name]
            setattr(core, name, list(value) if isinstance(value, list) else value)


def just_spawned(record: dict[str, Any], policy: Policy, pid: int) -> None:
    """Complete a journalled spawn's record as the lifecycle has an instance right
    after it spawned `pid` at the record's `spawned_at` (the lifecycle decides it)."""
    core = Instance("", policy)
    restore_instance(core, {**record, "pid": None})
    at = float(record.get("spawned_at") or 0.0)
    for action in on_event(core, Spawned(pid), at):
        if isinstance(action, SetTimer):
            record["timer"] = timer_record(action.at, action.event)
    record.update(instance_record(core))
