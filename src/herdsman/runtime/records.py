"""An instance as a typed record of plain values, and its one timer.

A record written by one version of herdsman is read by the next: the in-place
re-exec hands records to the new code (see handover.py), and after a crash the
next daemon reads them from state.json (statefile.py). A pid alone proves nothing
after a crash (pids are reused), so a record also carries the process's start
time (clock ticks since boot, from /proc), and the inodes of its output pipes, so
they can be opened again from /proc.

As data a record is the dict every release since state.json's format 1 writes:
the lifecycle's fields always, the process's (`start_time`, `pipes`, `foreign`,
`stop_signal`) while there is one, `timer` while one is set. Reading checks the
type of every key present and says what is wrong in one sentence (RecordError).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

from herdsman.core.lifecycle import (
    BackoffElapsed,
    Event,
    Instance,
    SetTimer,
    Spawned,
    StartSecondsPassed,
    StopTimeout,
    on_event,
)
from herdsman.core.plan import Policy
from herdsman.core.states import State

# (due time, kind, pid): what the instance's one timer feeds when it fires.
Timer = tuple[float, str, int | None]


class RecordError(ValueError):
    """A record that is not what herdsman writes; the message is one sentence."""


@dataclass(slots=True)
class InstanceRecord:
    """One instance as state.json and a re-exec carry it; defaults as a new one has."""

    state: State = State.STOPPED
    # The lifecycle's fields (core.lifecycle.Instance), by the same names.
    pid: int | None = None
    ready: bool = False
    restarts: int = 0
    attempt: int = 0
    restart_times: list[float] = field(default_factory=list)
    spawned_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    exit_said: str = ""
    message: str = ""
    start_passed: bool = False
    restart_after_stop: bool = False
    automatic_restart: bool = False
    limited_restart: bool = False
    killed: bool = False
    # Its process, while there is one.
    start_time: int | None = None  # clock ticks since boot
    pipes: list[tuple[str, int]] = field(default_factory=list)  # (stream, inode)
    foreign: bool = False  # adopted after a crash: not the daemon's child
    stop_signal: int | None = None  # for `down` without a daemon
    timer: Timer | None = None
    # How a crash recovery knows of it: a spawn journalled after the last
    # state.json, or a process found by its environment only.
    journalled: bool = False
    found_by_environment: bool = False

    @classmethod
    def of(cls, core: Instance) -> InstanceRecord:
        return cls(
            core.state,
            core.pid,
            core.ready,
            core.restarts,
            core.attempt,
            list(core.restart_times),
            core.spawned_at,
            core.exit_code,
            core.exit_signal,
            core.exit_said,
            core.message,
            core.start_passed,
            core.restart_after_stop,
            core.automatic_restart,
            core.limited_restart,
            core.killed,
        )

    def restore(self, core: Instance) -> None:
        """Put the record's lifecycle values into `core`."""
        core.state = self.state
        for name in LIFECYCLE:
            value = getattr(self, name)
            setattr(core, name, list(value) if isinstance(value, list) else value)

    def to_data(self) -> dict[str, Any]:
        # Written out, not a loop over LIFECYCLE: state.json encodes a record per
        # change, thousands at a herd's start.
        data: dict[str, Any] = {
            "state": self.state.value,
            "pid": self.pid,
            "ready": self.ready,
            "restarts": self.restarts,
            "attempt": self.attempt,
            "restart_times": list(self.restart_times),
            "spawned_at": self.spawned_at,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "exit_said": self.exit_said,
            "message": self.message,
            "start_passed": self.start_passed,
            "restart_after_stop": self.restart_after_stop,
            "automatic_restart": self.automatic_restart,
            "limited_restart": self.limited_restart,
            "killed": self.killed,
        }
        if self.pid is not None:
            data["start_time"] = self.start_time
            data["pipes"] = [list(pipe) for pipe in self.pipes]
            data["foreign"] = self.foreign
            if self.stop_signal is not None:
                data["stop_signal"] = self.stop_signal
        if self.timer is not None:
            data["timer"] = list(self.timer)
        if self.journalled:
            data["journalled"] = True
        if self.found_by_environment:
            data["found_by_environment"] = True
        return data

    def to_json(self) -> str:
        """`json.dumps(self.to_data())`, the same text (a test holds them together),
        written out: state.json is rewritten with every record after a start wave,
        and the encoder's walk of the dict, a key at a time, took twice as long
        (thousands of records: 5.9 against 2.6 us each)."""
        pid = self.pid
        text = (
            f'{{"state": "{self.state.value}", "pid": {_NULL if pid is None else pid}, '
            f'"ready": {_JSON_BOOL[self.ready]}, "restarts": {self.restarts}, '
            f'"attempt": {self.attempt}, '
            f'"restart_times": [{", ".join(map(_json_float, self.restart_times))}], '
            f'"spawned_at": {_NULL if self.spawned_at is None else _json_float(self.spawned_at)}, '
            f'"exit_code": {_NULL if self.exit_code is None else self.exit_code}, '
            f'"exit_signal": {_NULL if self.exit_signal is None else self.exit_signal}, '
            f'"exit_said": {encode_basestring_ascii(self.exit_said)}, '
            f'"message": {encode_basestring_ascii(self.message)}, '
            f'"start_passed": {_JSON_BOOL[self.start_passed]}, '
            f'"restart_after_stop": {_JSON_BOOL[self.restart_after_stop]}, '
            f'"automatic_restart": {_JSON_BOOL[self.automatic_restart]}, '
            f'"limited_restart": {_JSON_BOOL[self.limited_restart]}, '
            f'"killed": {_JSON_BOOL[self.killed]}'
        )
        if pid is not None:
            start_time = self.start_time
            pipes = ", ".join(
                [f"[{encode_basestring_ascii(stream)}, {inode}]" for stream, inode in self.pipes]
            )
            text += (
                f', "start_time": {_NULL if start_time is None else start_time}, '
                f'"pipes": [{pipes}], "foreign": {_JSON_BOOL[self.foreign]}'
            )
            if self.stop_signal is not None:
                text += f', "stop_signal": {self.stop_signal}'
        if self.timer is not None:
            at, kind, timer_pid = self.timer
            text += (
                f', "timer": [{_json_float(at)}, {encode_basestring_ascii(kind)}, '
                f"{_NULL if timer_pid is None else timer_pid}]"
            )
        if self.journalled:
            text += ', "journalled": true'
        if self.found_by_environment:
            text += ', "found_by_environment": true'
        return text + "}"

    @classmethod
    def from_data(cls, data: object, where: str, *, complete: bool) -> InstanceRecord:
        """The record `data` holds; RecordError naming `where` and the key when a key
        has the wrong type, or (`complete`: a record a daemon wrote whole, as in a
        hand-over) when one of the lifecycle's fields is missing or its state is
        unknown. state.json holds partial records too (a spawn known from the journal
        only), and may come from another release: keys it lacks keep their defaults,
        keys it has that this release does not know are left alone."""
        if not isinstance(data, Mapping):
            raise RecordError(f"{where} is {_show(data)}, not a record")
        if complete:
            missing = [key for key in ("state", *LIFECYCLE) if key not in data]
            if missing:
                raise RecordError(f"{where} has no {', '.join(missing)}")
        for key, (check, what) in _CHECKS.items():
            if key in data and not check(data[key]):
                raise RecordError(f"{where}: {key} is {_show(data[key])}, not {what}")
        record = cls()
        for key in _CHECKS:
            if key in data:
                setattr(record, key, data[key])
        try:
            record.state = State(data.get("state", "stopped"))
        except ValueError:
            if complete:
                raise RecordError(
                    f"{where}: state is {_show(data['state'])}, not a state"
                ) from None
            # A state of a newer release in state.json (a downgrade): what it meant is
            # unknown, the process (if any) is still adopted.
            record.state = State.STOPPED
        record.restart_times = [float(t) for t in record.restart_times]
        record.pipes = [(str(stream), int(inode)) for stream, inode in record.pipes]
        if record.timer is not None:
            at, kind, pid = record.timer
            record.timer = (float(at), kind, pid)
        return record


_NULL = "null"
_JSON_BOOL = {False: "false", True: "true"}


def _json_float(value: float) -> str:
    """A float as json.dumps writes it."""
    if math.isfinite(value):
        return repr(value)
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


# The lifecycle's fields a record carries (besides its state).
LIFECYCLE = (
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


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return _integer(value) or isinstance(value, float)


def _flag(value: object) -> bool:
    return isinstance(value, bool)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _pipes(value: object) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(pipe, list | tuple) and len(pipe) == 2 and _text(pipe[0]) and _integer(pipe[1])
        for pipe in value
    )


def _timer(value: object) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and _number(value[0])
        and _text(value[1])
        and (value[2] is None or _integer(value[2]))
    )


_CHECKS: dict[str, tuple[Callable[[object], bool], str]] = {
    "pid": (_optional(_integer), "a pid or null"),
    "ready": (_flag, "true or false"),
    "restarts": (_integer, "an integer"),
    "attempt": (_integer, "an integer"),
    "restart_times": (
        lambda v: isinstance(v, list | tuple) and all(map(_number, v)),
        "a list of times",
    ),
    "spawned_at": (_optional(_number), "a time or null"),
    "exit_code": (_optional(_integer), "an integer or null"),
    "exit_signal": (_optional(_integer), "a signal number or null"),
    "exit_said": (_text, "a string"),
    "message": (_text, "a string"),
    "start_passed": (_flag, "true or false"),
    "restart_after_stop": (_flag, "true or false"),
    "automatic_restart": (_flag, "true or false"),
    "limited_restart": (_flag, "true or false"),
    "killed": (_flag, "true or false"),
    "start_time": (_optional(_integer), "clock ticks or null"),
    "pipes": (_pipes, "a list of [stream, inode] pairs"),
    "foreign": (_flag, "true or false"),
    "stop_signal": (_optional(_integer), "a signal number or null"),
    "timer": (_optional(_timer), "[due time, kind, pid] or null"),
    "journalled": (_flag, "true or false"),
    "found_by_environment": (_flag, "true or false"),
}


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def timer_record(at: float, event: Event) -> Timer | None:
    match event:
        case StartSecondsPassed(pid=pid):
            return (at, "start_seconds", pid)
        case BackoffElapsed():
            return (at, "backoff", None)
        case StopTimeout(pid=pid):
            return (at, "stop_timeout", pid)
    return None


def timer_event(timer: Timer) -> tuple[float, Event] | None:
    at, kind, pid = timer
    if kind == "start_seconds" and pid is not None:
        return at, StartSecondsPassed(pid)
    if kind == "backoff":
        return at, BackoffElapsed()
    if kind == "stop_timeout" and pid is not None:
        return at, StopTimeout(pid)
    return None


def just_spawned(record: InstanceRecord, policy: Policy, pid: int) -> None:
    """Complete a journalled spawn's record as the lifecycle has an instance right
    after it spawned `pid` at the record's `spawned_at` (the lifecycle decides it)."""
    core = Instance("", policy)
    record.pid = None
    record.restore(core)
    at = record.spawned_at or 0.0
    for action in on_event(core, Spawned(pid), at):
        if isinstance(action, SetTimer):
            record.timer = timer_record(action.at, action.event)
    fresh = InstanceRecord.of(core)
    record.state = fresh.state
    for name in LIFECYCLE:
        setattr(record, name, getattr(fresh, name))
