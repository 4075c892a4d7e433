"""The plan: a validated config resolved into exactly what the runtime needs.

The config layer (pydantic) produces it; the daemon consumes it. Keeping it as
plain dataclasses means the daemon never has to import pydantic: it receives a
plan from a short-lived validating process (see config/plan.py), which keeps the
long-running process small.

A plan is a value: compared by its fields (a reload's diff), never changed once
made (a reload replaces it whole), never hashed. Its classes are not `frozen`
all the same: frozen's generated __setattr__, __delattr__ and __hash__ (three
execs of source text per class) were over a third of what this module costs to
import, before `up` can fork its validating helper, and its __init__ (which sets
each field through object.__setattr__) runs for every instance, in the helper and
again as the plan is unpickled. For the same reason __eq__ and __repr__ are
written once, in _Fields, rather than generated per class: the source text
dataclasses execs for them was 11M of the 27M instructions of this import.
"""

from __future__ import annotations

import operator
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from herdsman.core.graph import Condition

RestartMode = Literal["always", "on-failure", "never"]


class _Fields:
    """Pickled as the list of its fields' values in order, as dataclasses pickles a
    frozen class with slots (an unfrozen one gets no such state): images of other
    releases write and read plans so, in a re-exec's hand-over. A plan of an older
    image may lack the fields added last."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        # As dataclasses' own: the same class, then the fields in order. (Python
        # leaves the classes unhashable, as dataclasses' eq did.)
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(cast(Any, self)))
        return f"{self.__class__.__qualname__}({shown})"

    def __getstate__(self) -> list[Any]:
        return list(_values(self))

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip(fields(cast(Any, self)), state, strict=False):
            setattr(self, f.name, value)


def _values(plan: _Fields) -> tuple[Any, ...]:
    return tuple(getattr(plan, f.name) for f in fields(cast(Any, plan)))


@dataclass(slots=True, eq=False, repr=False)
class Policy(_Fields):
    """What the config says about restarting and stopping one service."""

    restart: RestartMode = "always"
    backoff_initial: float = 0.1
    backoff_max: float = 30.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.1
    burst: int = 5
    interval: float = 60.0
    start_seconds: float = 1.0
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 10.0
    needs_ready: bool = False  # a readiness probe must pass before `running`

    def backoff_delay(self, attempt: int, rand: float) -> float:
        """Delay before restart number `attempt` (0-based), jittered, within [initial, max]."""
        if self.backoff_initial <= 0:
            return 0.0
        try:
            grown = self.backoff_initial * self.backoff_factor**attempt
        except OverflowError:  # a long crash loop with a steep factor: far past max anyway
            grown = self.backoff_max
        base = min(self.backoff_max, grown)
        jittered = base * (1.0 + self.backoff_jitter * (2.0 * rand - 1.0))
        return min(self.backoff_max, max(self.backoff_initial, jittered))


@dataclass(slots=True, eq=False, repr=False)
class CheckPlan(_Fields):
    """A readiness probe or health check of one instance, `{replica}` substituted."""

    kind: str  # "tcp", "http", "exec", "notify", "log" or "plugin"
    target: str = ""  # host:port, URL, regex or plugin name, as written (for messages)
    address: tuple[str, int] | None = None  # tcp: the target parsed
    argv: tuple[str, ...] = ()  # for exec
    interval: float = 1.0
    timeout: float = 1.0
    initial_delay: float = 0.0
    failure_threshold: int = 1
    success_threshold: int = 1
    watchdog: float | None = None  # notify: seconds allowed between WATCHDOG=1 pings
    options: dict[str, Any] = field(default_factory=dict)  # plugin: its keyword arguments


@dataclass(slots=True, eq=False, repr=False)
class HookPlan(_Fields):
    """What to do when an instance enters one of the states in `on`."""

    on: frozenset[str]
    kind: str  # "exec", "webhook" or "plugin"
    where: str  # its key path in the config (`services.web.hooks[0]`), for messages
    argv: tuple[str, ...] = ()  # exec
    url: str = ""  # webhook
    plugin: str = ""  # plugin: its name
    options: dict[str, Any] = field(default_factory=dict)
    timeout: float = 10.0


@dataclass(slots=True, eq=False, repr=False)
class WatchPlan(_Fields):
    """Restart on file changes: patterns compiled to regular expressions (see
    config/watch.py) over paths relative to the service's cwd."""

    patterns: tuple[str, ...]  # as written
    match: tuple[tuple[str, bool], ...]  # (regex, include): the last that matches decides
    ignore: tuple[tuple[str, bool], ...]
    # (path relative to the cwd, literal): a literal path is watched itself (a whole
    # tree if it is a directory); a glob's tree is watched from this directory.
    roots: tuple[tuple[str, bool], ...]
    debounce: float  # seconds of quiet after the last change before restarting


@dataclass(slots=True, eq=False, repr=False)
class InstancePlan(_Fields):
    """One process to run: `{replica}` already substituted, units already parsed."""

    name: str
    service: str
    replica: int
    argv: tuple[str, ...]
    env: dict[str, str]  # the service's own variables (env_file + env)
    cwd: Path
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    ready: CheckPlan | None = None
    health: CheckPlan | None = None

    def __reduce__(self) -> tuple[type[InstancePlan], tuple[Any, ...]]:
        # Pickled as a call with the fields in order, as the plan crosses from the
        # validating helper at every start (and images at a re-exec): unpickling runs
        # __init__, not dataclasses' generic restore field by field, which took 65 ms
        # each way for 8,000 instances (20 and 12 ms so). A pickle of the generic
        # kind (an older image's) is still read.
        return InstancePlan, _instance_fields(self)


_instance_fields = operator.attrgetter(*(f.name for f in fields(InstancePlan)))


@dataclass(slots=True, eq=False, repr=False)
class ServicePlan(_Fields):
    """One service as validated: its policy, instances and settings."""

    name: str
    policy: Policy
    instances: tuple[InstancePlan, ...]
    autostart: bool
    depends_on: dict[str, Condition]
    memory_limit: int | None = None  # bytes, for the instance's whole process tree
    restart_with: tuple[str, ...] = ()  # restart after one of these came back from a restart
    log_max_bytes: int = 10 * 1024 * 1024  # rotate `<instance>.log` past this size
    log_backups: int = 5
    hooks: tuple[HookPlan, ...] = ()  # for this service's instances only
    watch: WatchPlan | None = None  # restart on file changes (under `up --watch`)


@dataclass(slots=True, eq=False, repr=False)
class Plan(_Fields):
    """The validated config, as the daemon runs it."""

    config_path: Path
    state_dir: Path
    log_dir: Path
    socket: Path
    shutdown_timeout: float
    services: dict[str, ServicePlan]
    socket_mode: int = 0o600
    socket_group: str | None = None
    max_connections: int = 128  # concurrent API connections per listener
    tcp: tuple[str, int] | None = None  # (host, port) of the optional TCP listener
    token_file: Path | None = None
    log_format: str = "text"  # of herdsman.log: "text" or "json"
    daemon_log_max_bytes: int = 10 * 1024 * 1024  # rotate herdsman.log past this size
    daemon_log_backups: int = 5
    allow_shared_state_dir: bool = False  # else one others can write is refused
    notify_socket: Path | None = None  # bound when some instance reports readiness by sd_notify
    plugins: tuple[str, ...] = ()  # `package.module:object` references (settings.plugins)
    hooks: tuple[HookPlan, ...] = ()  # for every instance
    # Last: a pickled plan crosses images field by field, in order (a re-exec from
    # an older image reads a newer one's and back); one without it lacks it.
    memory_interval: float = 5.0  # seconds between samples of instances with a memory_limit

    def dependency_map(self) -> dict[str, dict[str, Condition]]:
        return {name: svc.depends_on for name, svc in self.services.items()}
