"""What one image of the daemon hands the next across a re-exec (see cli/resume.py).

Typed and versioned. Across the exec it is a dict of plain values (pickled: it
holds bytes) with a `version`; a dict without one is what the images before
version 2 hand over (version 1: the same keys, and `format` = 1), and reads the
same way, so `herdsman reexec` from an older release into this one keeps every
service. A key that is missing or of the wrong type is said in one sentence
(HandoverError), never replaced by a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from herdsman.runtime.records import InstanceRecord, RecordError

VERSION = 2

# (unix time, instance, stream, line): a line of an instance's recent output.
TailEntry = tuple[float, str, str, bytes]
# (stream, fd, the line it had begun): an output pipe kept open across the exec.
PumpEntry = tuple[str, int, bytes]


class HandoverError(ValueError):
    """A hand-over this image cannot take; the message is one sentence."""


@dataclass(slots=True)
class DaemonHandover:
    """The daemon's part: the plan, every instance, and what it remembers."""

    plan: bytes  # pickled ("ok", Plan), as the validating helper answers
    records: dict[str, InstanceRecord]
    pumps: dict[str, list[PumpEntry]]
    tails: dict[str, list[TailEntry]]
    health: dict[str, str | None]
    notify_fd: int | None  # the sd_notify socket, bound
    started_at: float
    reexecs: int  # counting the one being made
    heals: list[float]  # monotonic times of the recent heals (the heal budget)
    notify_status: dict[str, str]  # STATUS= per instance
    spawned_before: list[str]
    restarted_deps: list[str]
    watchdogs: list[str]  # instances whose sd_notify watchdog was armed
    bound: dict[str, str]  # the settings only a restart changes, as the daemon started
    # When each instance entered its state (unix time); an image before it hands
    # over none, and `since` starts afresh there.
    since: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Handover:
    """Everything a new image needs: the daemon's part and its process's."""

    daemon: DaemonHandover
    listen_fds: list[int]
    lock_fd: int
    services: list[str]  # what `up` was asked to start
    detached: bool
    watch: bool
    token: str | None
    version: int = VERSION  # as read: an older image hands over an older version

    def to_data(self) -> dict[str, Any]:
        d = self.daemon
        return {
            "version": VERSION,
            "plan": d.plan,
            "records": {name: record.to_data() for name, record in d.records.items()},
            "pumps": d.pumps,
            "tails": d.tails,
            "health": d.health,
            "notify_fd": d.notify_fd,
            "started_at": d.started_at,
            "reexecs": d.reexecs,
            "heals": d.heals,
            "notify_status": d.notify_status,
            "spawned_before": d.spawned_before,
            "restarted_deps": d.restarted_deps,
            "watchdogs": d.watchdogs,
            "bound": d.bound,
            "since": d.since,
            "listen_fds": self.listen_fds,
            "lock_fd": self.lock_fd,
            "services": self.services,
            "detached": self.detached,
            "watch": self.watch,
            "token": self.token,
        }

    @classmethod
    def from_data(cls, data: object) -> Handover:
        if not isinstance(data, Mapping):
            raise HandoverError(f"the hand-over is {type(data).__name__}, not a mapping")
        version = data.get("version", 1)
        if version not in (1, VERSION):
            raise HandoverError(
                f"the hand-over is of version {version!r}; this image reads 1 to {VERSION}"
            )
        get = _Reader(data)
        records = {}
        for name, record in get("records", _dict_of(lambda _: True), "a mapping").items():
            try:
                records[name] = InstanceRecord.from_data(
                    record, f"the hand-over's record of {name}", complete=True
                )
            except RecordError as err:
                raise HandoverError(str(err)) from None
        daemon = DaemonHandover(
            plan=get("plan", _is(bytes), "bytes"),
            records=records,
            pumps=get("pumps", _dict_of(_list_of(_pump)), "a mapping of pipes"),
            tails=get("tails", _dict_of(_list_of(_tail_entry)), "a mapping of lines"),
            health=get("health", _dict_of(_optional(_is(str))), "a mapping of results"),
            notify_fd=get("notify_fd", _optional(_integer), "an fd or None"),
            started_at=float(get("started_at", _number, "a time")),
            reexecs=get("reexecs", _integer, "an integer"),
            heals=[float(t) for t in get("heals", _list_of(_number), "a list of times")],
            notify_status=get("notify_status", _dict_of(_is(str)), "a mapping of strings"),
            spawned_before=list(get("spawned_before", _list_of(_is(str)), "a list of names")),
            restarted_deps=list(get("restarted_deps", _list_of(_is(str)), "a list of names")),
            watchdogs=list(get("watchdogs", _list_of(_is(str)), "a list of names")),
            bound=get("bound", _dict_of(_is(str)), "a mapping of strings"),
            since=(
                {
                    k: float(t)
                    for k, t in get("since", _dict_of(_number), "a mapping of times").items()
                }
                if "since" in data
                else {}
            ),
        )
        # Version 1 images from before `watch` hand over none: it was off there.
        watch = get("watch", _is(bool), "true or false") if "watch" in data else False
        return cls(
            daemon=daemon,
            listen_fds=list(get("listen_fds", _list_of(_integer), "a list of fds")),
            lock_fd=get("lock_fd", _integer, "an fd"),
            services=list(get("services", _list_of(_is(str)), "a list of names")),
            detached=get("detached", _is(bool), "true or false"),
            watch=watch,
            token=get("token", _optional(_is(str)), "a string or None"),
            version=version,
        )


class _Reader:
    """`get(key, check, what)`: the value of `key`, or HandoverError saying why not."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __call__(self, key: str, check: Callable[[object], bool], what: str) -> Any:
        if key not in self._data:
            raise HandoverError(f"the hand-over has no {key!r}")
        value = self._data[key]
        if not check(value):
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            raise HandoverError(f"the hand-over's {key!r} is {shown}, not {what}")
        return value


def _is(kind: type) -> Callable[[object], bool]:
    return lambda value: isinstance(value, kind)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return _integer(value) or isinstance(value, float)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _list_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: isinstance(value, list | tuple) and all(map(check, value))


def _dict_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: (
        isinstance(value, dict)
        and all(isinstance(key, str) for key in value)
        and all(map(check, value.values()))
    )


def _pump(value: object) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 3
        and isinstance(value[0], str)
        and _integer(value[1])
        and isinstance(value[2], bytes)
    )


def _tail_entry(value: object) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 4
        and _number(value[0])
        and isinstance(value[1], str)
        and isinstance(value[2], str)
        and isinstance(value[3], bytes)
    )
