"""The herd: every instance's lifecycle, and the rules that span instances.

Theory of operation: `core.lifecycle` decides for one instance; this module decides
for all of them and for the daemon as a whole. The runtime puts every event on one
queue (a process spawned or exited, a timer fired, a check passed or failed, a
memory sample, an sd_notify message, a user's request, files changed, a new plan)
and feeds them one at a time to `Herd.on_event()` with the current time and a
uniform random sample. The answer is a list of actions for small executors: spawn,
signal a group, set or cancel a timer, start or stop a check, say something in the
daemon's log, forget a removed instance, and publish a change `(instance, old
state, event)` to the subscribers (hooks, state.json, /v1/events, ...). Results of
actions (Spawned, SpawnFailed) come back as events on the queue, never by a call
back into the herd.

The herd owns the plan: a reload hands it the new one in one event, and every rule
reads its settings from it when it acts, so everything that applies in place does
(memory_limit, health thresholds, the watchdog period, backoff, start_limit, ...).

The rules it owns, each beside the event that triggers it (see TABLE for every
pair of instance state and event, the ignored ones too):

- dependency conditions: an instance whose dependencies are unmet waits (`starting`
  without a process) and is spawned once they hold; one that can never start is
  `blocked` (core/blocked.py), which `blocked()` reports.
- the spawn queue: an instance the herd has decided to start (its dependencies
  held then) is `queued` (`starting` without a process) until the runtime has room
  for its spawn (`SpawnRoom`), first decided first spawned: a wave of thousands
  goes out a slice at a time, and the runtime serves everything else in between.
  A stop drops a queued instance (it is `stopped` without ever being spawned), a
  start leaves it where it is, and nothing else concerns it: it has no process.
- start waves (`start_order`) and reverse stop waves (`stop_waves`).
- what a reload's diff turns into (`reload_steps`, then `NewPlan`).
- restart_with: once every instance of a restarted service runs again, the services
  that restart with it are restarted, once per restart of what they follow.
- the watchdog deadline, armed by READY=1 or WATCHDOG=1, for the process it was
  armed for only.
- the memory verdict: two samples in a row over the limit restart the instance.
- health thresholds: `failure_threshold` failures in a row restart it, and
  `success_threshold` passes make it healthy.
- the start limit: restarts for health, memory or a watchdog count like crashes
  (the lifecycle's `Stop(limited=True)`); restart_with and file changes do not.
- the heal budget of the daemon (`HealBudget`).

Nothing here reads a clock, touches a process or does I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from herdsman.core import graph
from herdsman.core import lifecycle as lc
from herdsman.core.blocked import blocked
from herdsman.core.diff import PlanDiff, diff_plans
from herdsman.core.lifecycle import Instance
from herdsman.core.plan import CheckPlan, InstancePlan, Plan, ServicePlan
from herdsman.core.states import State

Role = Literal["ready", "health"]
TimerKind = Literal["lifecycle", "watchdog"]
Level = Literal["info", "warning"]

# Readiness probes the runtime runs (the others are passive: notify is told by
# the instance, and a `log` probe watches its output, both started as a check too).
ACTIVE_PROBES = frozenset({"tcp", "http", "exec", "plugin", "log"})
# States in which the memory of an instance is watched.
SAMPLED_STATES = (State.STARTING, State.RUNNING)


# --- events -------------------------------------------------------------------------

# Values, like the lifecycle's, and not `frozen` for the same reason (see there).


@dataclass(slots=True)
class ToInstance:
    """A lifecycle event for one instance: its process spawned, could not be
    spawned or exited; its lifecycle timer fired."""

    name: str
    event: lc.Event


@dataclass(slots=True)
class StartRequest:
    """Start instances; with `dependencies`, also what they depend on that is down
    (stopped, exited or failed), as `up SERVICE` does."""

    names: tuple[str, ...]
    manual: bool = True
    dependencies: bool = True


@dataclass(slots=True)
class StopRequest:
    """Stop instances; `kill`: SIGKILL their groups at once."""

    names: tuple[str, ...]
    kill: bool = False


@dataclass(slots=True)
class CheckResult:
    """One run of an instance's readiness probe or health check: `why` is None when
    it passed, else why not. About process `pid` only."""

    name: str
    pid: int
    role: Role
    why: str | None


@dataclass(slots=True)
class MemorySample:
    """The RSS of an instance's process tree (None: it could not be read)."""

    name: str
    pid: int
    rss: int | None


@dataclass(slots=True)
class Notified:
    """An sd_notify message from an instance's process (its fields)."""

    name: str
    fields: Mapping[str, str]


@dataclass(slots=True)
class WatchdogExpired:
    """Instance `name`'s process `pid` sent no WATCHDOG=1 in time."""

    name: str
    pid: int


@dataclass(slots=True)
class FilesChanged:
    """A service's watched files changed (and have been quiet since)."""

    service: str
    paths: tuple[str, ...]


@dataclass(slots=True)
class SpawnRoom:
    """The runtime can begin `count` more spawns now: the instances queued first
    get theirs."""

    count: int = 1


@dataclass(slots=True)
class NewPlan:
    """A reload: `plan` is the truth from now on; `start` the instances to start
    then, in order (see `reload_steps`)."""

    plan: Plan
    start: tuple[str, ...] = ()


@dataclass(slots=True)
class TookOver:
    """These instances were taken over with their processes (a re-exec, or adopted
    after a crash): their checks start again, the watchdogs of `watchdogs` get a
    full period from now, and what waits for dependencies is looked at again."""

    names: tuple[str, ...]
    watchdogs: tuple[str, ...] = ()


Event = (
    ToInstance
    | StartRequest
    | StopRequest
    | CheckResult
    | MemorySample
    | Notified
    | WatchdogExpired
    | FilesChanged
    | SpawnRoom
    | NewPlan
    | TookOver
)


# --- actions ------------------------------------------------------------------------


@dataclass(slots=True)
class Spawn:
    """Start instance `name`'s process."""

    name: str


@dataclass(slots=True)
class SignalGroup:
    """Send `signal` to instance `name`'s process group."""

    name: str
    signal: int


@dataclass(slots=True)
class SetTimer:
    """Feed `event` at `at`; replaces the instance's timer of the same kind."""

    name: str
    kind: TimerKind
    at: float
    event: Event


@dataclass(slots=True)
class CancelTimer:
    """Cancel instance `name`'s pending timer of this `kind`."""

    name: str
    kind: TimerKind


@dataclass(slots=True)
class StartCheck:
    """Run the instance's `role` check (as its plan says now) on process `pid` until
    stopped (a readiness probe: until it passes once), reporting CheckResults."""

    name: str
    role: Role
    pid: int


@dataclass(slots=True)
class StopCheck:
    """Stop the instance's `role` check (None: every check of it)."""

    name: str
    role: Role | None = None


@dataclass(slots=True)
class Changed:
    """Publish: the instance changed (state, process or readiness) on `event`, from
    state `old` to `new` (the same when only its process or readiness changed)."""

    name: str
    old: State
    new: State
    event: lc.Event


@dataclass(slots=True)
class Say:
    """A line for the daemon's log (`console`: also for whoever watches `up`)."""

    level: Level
    text: str
    console: bool = False


@dataclass(slots=True)
class Forget:
    """A reload removed the instance (it has no process): release what it holds."""

    name: str


Action = (
    Spawn | SignalGroup | SetTimer | CancelTimer | StartCheck | StopCheck | Changed | Say | Forget
)


# --- the table of (state, event) ------------------------------------------------------

# The herd's events that concern one instance, by the state the instance is in
# (`waiting`: starting without a process, waiting for its dependencies; `queued`:
# starting without a process, its spawn decided and waiting for room). Every pair
# is written down; IGNORED means no action and no change. The lifecycle's own
# events (spawned, exited, timers) are core/lifecycle.py's and not repeated here.
# Checks run for a live process only, and stop once it is being stopped: a result
# about a process on its way out says nothing.
IGNORED = "ignored"
STATES = (
    State.STOPPED.value,
    "waiting",
    "queued",
    *(s.value for s in State if s is not State.STOPPED),
)
_ = IGNORED
TABLE: dict[str, dict[str, str]] = {
    "ready passed": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="Ready to the lifecycle: running once past start_seconds",
        running=_,
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "ready failed": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting=_,
        running=_,
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),  # the probe tries again; its message says why
    "health passed": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting=_,
        running="count a pass: success_threshold in a row is healthy",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "health failed": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting=_,
        running="count a failure: failure_threshold in a row is unhealthy, and a restart that counts toward start_limit",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "memory over limit": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="remember it; the second sample over it in a row restarts (counts toward start_limit)",
        running="remember it; the second sample over it in a row restarts (counts toward start_limit)",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "memory under limit": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="forget a sample over it",
        running="forget a sample over it",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "notify READY=1": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="arm the watchdog; Ready to the lifecycle",
        running="arm the watchdog again",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "notify WATCHDOG=1": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="arm the watchdog again",
        running="arm the watchdog again",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "watchdog expired": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="restart (counts toward start_limit)",
        running="restart (counts toward start_limit)",
        stopping=_,
        restarting=_,
        exited=_,
        failed=_,
    ),
    "files changed": dict(
        stopped=_,
        waiting=_,
        queued=_,
        starting="restart (does not count toward start_limit)",
        running="restart (does not count toward start_limit)",
        stopping=_,
        restarting="spawn (queued now, without the rest of the backoff)",
        exited="start again",
        failed="start again",
    ),
    "start": dict(
        stopped="start, or wait for unmet dependencies",
        waiting=_,
        queued="held for after its spawn (then as in starting: a user's start resets the start limit)",
        starting=_,
        running=_,
        stopping="start again once stopped",
        restarting="spawn (a user's start: queued now, without the rest of the backoff)",
        exited="start, or wait for unmet dependencies",
        failed="start, or wait for unmet dependencies",
    ),
    "stop": dict(
        stopped=_,
        waiting="stopped",
        queued="stopped, never spawned: it leaves the queue",
        starting="stop_signal, SIGKILL after stop_timeout",
        running="stop_signal, SIGKILL after stop_timeout",
        stopping=_,
        restarting="stopped",
        exited=_,
        failed=_,
    ),
}
del _


# --- the heal budget --------------------------------------------------------------


@dataclass(slots=True, eq=False)
class HealBudget:
    """Self-healing re-execs the daemon at most `limit` times within `window` seconds;
    past that the daemon gives up (stops everything) rather than loop."""

    limit: int = 3
    window: float = 60.0
    times: list[float] = field(default_factory=list)  # carried across re-execs

    def spend(self, now: float) -> bool:
        """Count a heal at `now`: whether it is within the budget."""
        self.times = [t for t in self.times if t > now - self.window] + [now]
        return len(self.times) <= self.limit


# --- a reload's steps ---------------------------------------------------------------


@dataclass(slots=True)
class ReloadSteps:
    """What a reload turns into: stop `stop_waves` one after the other (dependents
    first, by the old graph), then `NewPlan(plan, start)`."""

    diff: PlanDiff
    stop_waves: tuple[tuple[str, ...], ...]
    start: tuple[str, ...]


# --- the herd ---------------------------------------------------------------------


class Herd:
    """Every instance of the plan and the rules between them (see the module doc)."""

    __slots__ = (
        "_checks",
        "_deps",
        "_followed",
        "_health_counts",
        "_over_limit",
        "_restarted",
        "_services",
        "_spawning",
        "_waiting",
        "by_service",
        "health",
        "instances",
        "plan",
        "plans",
        "queued",
        "spawned_before",
        "watchdogs",
    )

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.instances: dict[str, Instance] = {}
        self.by_service: dict[str, list[Instance]] = {}
        self.plans: dict[str, InstancePlan] = {}
        self._services: dict[str, ServicePlan] = {}  # instance -> its service's plan
        self._deps: dict[str, dict[str, graph.Condition]] = {}
        self._followed: frozenset[str] = frozenset()
        # instance -> None while `health` has a check: unknown, healthy, unhealthy
        self.health: dict[str, str | None] = {}
        self._health_counts: dict[str, tuple[int, int]] = {}  # (failures, passes) in a row
        self._over_limit: set[str] = set()  # one sample over its memory limit
        self.watchdogs: dict[str, int] = {}  # instance -> the pid its watchdog is armed for
        self._waiting: dict[str, None] = {}  # an ordered set
        # Decided to spawn, in order, until the runtime has room (see SpawnRoom), with
        # the events held for after the spawn (as `_spawning`'s). An OrderedDict:
        # taking from the front of a dict walks the slots the ones taken before left,
        # which makes a wave of thousands quadratic.
        self.queued: OrderedDict[str, list[lc.Event] | None] = OrderedDict()
        self._spawning: dict[str, list[lc.Event]] = {}  # events held until the spawn's result
        self._checks: dict[str, set[Role]] = {}  # checks running per instance
        self.spawned_before: set[str] = set()  # a next spawn is a restart (restart_with)
        self._restarted: set[str] = set()  # services back from a restart, for restart_with
        self._take(plan)

    # --- reading ------------------------------------------------------------------

    def service(self, name: str) -> ServicePlan:
        return self._services[name]

    @property
    def restarted(self) -> set[str]:
        return self._restarted

    def state_of(self, name: str) -> str:
        """The instance's column in TABLE."""
        inst = self.instances[name]
        if not inst.waiting:
            return inst.state.value
        return "queued" if name in self.queued or name in self._spawning else "waiting"

    def blocked(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Why waiting instances (of the services of `names`, default all) can no
        longer start: `depends on db, which failed (...)`."""
        services = None
        if names is not None:
            services = list(dict.fromkeys(self.plans[n].service for n in names))
        found = blocked(self.by_service, self._deps, services)
        # Those on their way (their start was decided) have no process yet, and look
        # like the waiting ones.
        queued, spawning = self.queued, self._spawning
        return {n: why for n, why in found.items() if n not in queued and n not in spawning}

    def stop_waves(self, names: Iterable[str] | None = None) -> list[list[str]]:
        """`names` (default all) in the order to stop them: dependents first."""
        wanted = None if names is None else set(names)
        waves = graph.members_by_wave(
            graph.stop_waves(self._deps),
            self.by_service,
            lambda inst: wanted is None or inst.name in wanted,
        )
        return [[inst.name for inst in wave] for wave in waves if wave]

    def start_order(self, services: Iterable[str] | None = None) -> list[str]:
        """The instances of `services` (default: every autostart one) and of all they
        depend on, in start waves: to start one by one (`up`)."""
        if services is None:
            services = [n for n, svc in self.plan.services.items() if svc.autostart]
        wanted = set(graph.closure(self._deps, services))
        # Kept or left by service, not looked up per instance: this comes before a
        # start's first spawn (2.2M instructions at 2,000 instances, 0.2M so).
        by_service = self.by_service
        return [
            inst.name
            for wave in graph.start_waves(self._deps)
            for service in wave
            if service in wanted
            for inst in by_service[service]
        ]

    def memory_watched(self) -> list[tuple[str, int, int]]:
        """(instance, pid, limit) of every live instance that has a memory_limit now."""
        watched = []
        for svc in self.plan.services.values():
            limit = svc.memory_limit
            if limit:
                for inst in self.by_service[svc.name]:
                    if inst.pid is not None and inst.state in SAMPLED_STATES:
                        watched.append((inst.name, inst.pid, limit))
        return watched

    def reload_steps(self, new: Plan) -> ReloadSteps:
        """What reloading to `new` does: stop what goes or changes (dependents first,
        by the old graph), then start what is new (if autostart) and what changed
        while it was up (by the new graph)."""
        change = diff_plans(self.plan, new)
        leaving = set(change.removed) | set(change.changed)
        waves = tuple(tuple(w) for w in self.stop_waves(leaving))
        was_up = {n for n in change.changed if self.instances[n].state in _UP}
        starting = was_up | {n for n in change.added if _service_of(new, n).autostart}
        return ReloadSteps(change, waves, _in_start_order(new, starting))

    # --- events -------------------------------------------------------------------

    def on_event(self, ev: Event, now: float, rand: float = 0.5) -> list[Action]:
        out: list[Action] = []
        match ev:
            case ToInstance(name=name, event=event):
                self._feed(name, event, now, rand, out)
            case SpawnRoom(count=count):  # second: one per few spawns of a wave
                queued = self.queued
                for _ in range(min(count, len(queued))):
                    name, held = queued.popitem(last=False)
                    self._spawning[name] = held or []
                    out.append(Spawn(name))
                if not queued:
                    queued.clear()  # a wave's thousands of slots go with it (a dict keeps them)
            case StartRequest():
                self._start_request(ev, now, rand, out)
            case StopRequest(names=names, kill=kill):
                for name in names:
                    self._feed(name, lc.Stop(), now, rand, out)
                    inst = self.instances.get(name)
                    if kill and inst is not None and inst.state is State.STOPPING:
                        assert inst.pid is not None
                        self._feed(name, lc.StopTimeout(inst.pid), now, rand, out)
            case CheckResult():
                self._check_result(ev, now, rand, out)
            case MemorySample():
                self._memory(ev, now, rand, out)
            case Notified(name=name, fields=fields):
                self._notified(name, fields, now, rand, out)
            case WatchdogExpired(name=name, pid=pid):
                inst = self.instances.get(name)
                if self.watchdogs.get(name) == pid and inst is not None and inst.pid == pid:
                    del self.watchdogs[name]
                    if inst.state in SAMPLED_STATES:
                        period = _watchdog_period(self.plans[name])
                        reason = f"watchdog: no WATCHDOG=1 within {period:g}s"
                        out.append(Say("warning", f"{name}: {reason}; restarting", console=True))
                        self._feed(name, lc.Stop(restart=True, reason=reason), now, rand, out)
            case FilesChanged(service=service, paths=paths):
                self._files_changed(service, paths, now, rand, out)
            case NewPlan(plan=plan, start=start):
                self._new_plan(plan, out)
                for name in start:
                    self._start(name, False, now, rand, out)
            case TookOver(names=names, watchdogs=watchdogs):
                self._took_over(names, watchdogs, now, rand, out)
        return out

    # --- one instance -------------------------------------------------------------

    def _feed(self, name: str, event: lc.Event, now: float, rand: float, out: list[Action]) -> None:
        inst = self.instances.get(name)
        if inst is None:
            return  # a late event of an instance a reload removed
        queued = self.queued
        if queued and name in queued and not isinstance(event, lc.Stop):
            # On its way, where it is in the queue: what comes meanwhile (a start)
            # waits for the spawn's result, as below; a stop drops it.
            queued[name] = [*(queued[name] or ()), event]
            return
        spawning = self._spawning.get(name)
        if spawning is not None:
            # Between a Spawn and its result the instance has no pid yet and would
            # look waiting to the lifecycle: what comes meanwhile waits for the result.
            if not isinstance(event, lc.Spawned | lc.SpawnFailed):
                spawning.append(event)
                return
            del self._spawning[name]
        old, pid, ready = inst.state, inst.pid, inst.ready
        for action in lc.on_event(inst, event, now, rand):
            match action:  # the most frequent first: every spawn cancels a timer
                case lc.Spawn():
                    if name not in queued:  # a stop that restarts leaves it in its place
                        queued[name] = None
                    self._waiting.pop(name, None)
                case lc.CancelTimer():
                    out.append(CancelTimer(name, "lifecycle"))
                case lc.SetTimer(at=at, event=timed):
                    out.append(SetTimer(name, "lifecycle", at, ToInstance(name, timed)))
                case lc.SignalGroup(signal=sig):
                    out.append(SignalGroup(name, sig))
        if queued and not inst.waiting:
            queued.pop(name, None)  # stopped before its spawn: it never has one
        if inst.state is not old or inst.pid != pid or inst.ready != ready:
            self._changed(inst, old, event, now, rand, out)
        if spawning:
            for later in spawning:
                self._feed(name, later, now, rand, out)

    def _changed(
        self,
        inst: Instance,
        old: State,
        event: lc.Event,
        now: float,
        rand: float,
        out: list[Action],
    ) -> None:
        name = inst.name
        if inst.waiting and name not in self._spawning and name not in self.queued:
            self._waiting[name] = None
        else:
            self._waiting.pop(name, None)
        out.append(Changed(name, old, inst.state, event))
        plan = self.plans[name]
        if isinstance(event, lc.Spawned):
            self._forget_process(name, out)
            if plan.health is not None:
                self.health[name] = "unknown"
            if plan.ready is not None and plan.ready.kind in ACTIVE_PROBES:
                self._start_check(name, "ready", event.pid, out)
        elif inst.pid is None or inst.state is State.STOPPING:
            self._forget_process(name, out)
        # Also right after a spawn: with start_seconds = 0 it is running at once.
        up = inst.state is State.RUNNING and old is not State.RUNNING
        if up and inst.pid is not None and plan.health is not None:
            self._start_check(name, "health", inst.pid, out)
        if self._restarted or isinstance(event, lc.Spawned):  # else it has nothing to do
            self._follow_restarts(inst, event, now, rand, out)
        if self._waiting:
            self._recheck_waiting(now, rand, out)

    def _start(self, name: str, manual: bool, now: float, rand: float, out: list[Action]) -> None:
        waiting_for = tuple(self._unmet(name))
        self._feed(name, lc.Start(waiting_for, manual=manual), now, rand, out)

    def _unmet(self, name: str) -> list[str]:
        deps = self._services[name].depends_on
        if not deps:
            return []
        views = {dep: [_view(i) for i in self.by_service[dep]] for dep in deps}
        return graph.unmet(deps, views)

    def _recheck_waiting(self, now: float, rand: float, out: list[Action]) -> None:
        for name in list(self._waiting):
            inst = self.instances[name]
            if not inst.waiting:
                continue
            unmet = self._unmet(name)
            if unmet:
                message = "waiting for " + ", ".join(unmet)
                if inst.message != message:  # refreshes the message only
                    self._feed(name, lc.Start(tuple(unmet)), now, rand, out)
            else:
                self._feed(name, lc.DependenciesMet(), now, rand, out)

    def _took_over(
        self,
        names: tuple[str, ...],
        watchdogs: tuple[str, ...],
        now: float,
        rand: float,
        out: list[Action],
    ) -> None:
        for name in names:
            inst = self.instances.get(name)
            if inst is None:
                continue
            if inst.waiting and name not in self.queued:
                self._waiting[name] = None
            if inst.pid is None:
                continue
            plan = self.plans[name]
            if not inst.ready and plan.ready is not None and plan.ready.kind in ACTIVE_PROBES:
                self._start_check(name, "ready", inst.pid, out)
            if inst.state is State.RUNNING and plan.health is not None:
                self._start_check(name, "health", inst.pid, out)
        for name in watchdogs:
            self.arm_watchdog(name, now, out)
        if self._waiting:
            self._recheck_waiting(now, rand, out)

    # --- requests -----------------------------------------------------------------

    def _start_request(self, ev: StartRequest, now: float, rand: float, out: list[Action]) -> None:
        names = [n for n in ev.names if n in self.instances]
        if ev.dependencies:
            # What they depend on and is down comes up first (like `up SERVICE`).
            services = {self.plans[n].service for n in names}
            for svc in graph.closure(self._deps, services):
                if svc not in services:
                    for dep in self.by_service[svc]:
                        if dep.state in (State.STOPPED, State.EXITED, State.FAILED):
                            self._start(dep.name, ev.manual, now, rand, out)
        for name in names:
            self._start(name, ev.manual, now, rand, out)

    # --- checks -------------------------------------------------------------------

    def _start_check(self, name: str, role: Role, pid: int, out: list[Action]) -> None:
        self._checks.setdefault(name, set()).add(role)
        if role == "health":
            self._health_counts[name] = (0, 0)
        out.append(StartCheck(name, role, pid))

    def _forget_process(self, name: str, out: list[Action]) -> None:
        """What watched the instance's last process: its checks, its watchdog, a
        sample over its memory limit. (Looked up here first: most changes have no
        check and no watchdog to stop.)"""
        if name in self._checks:
            self._stop_checks(name, out)
        if name in self.watchdogs:
            self._disarm_watchdog(name, out)
        self._over_limit.discard(name)

    def _stop_checks(self, name: str, out: list[Action], role: Role | None = None) -> None:
        running = self._checks.get(name)
        if running is None:
            return
        if role is None:  # also when none runs: the runtime forgets their last failure
            del self._checks[name]
        elif role in running:
            running.discard(role)
        else:
            return
        out.append(StopCheck(name, role))

    def _check_result(self, ev: CheckResult, now: float, rand: float, out: list[Action]) -> None:
        name = ev.name
        inst = self.instances.get(name)
        if inst is None or inst.pid != ev.pid or ev.role not in self._checks.get(name, ()):
            return  # about a process that is gone, or a check that was stopped
        if ev.role == "ready":
            if ev.why is None:
                self._stop_checks(name, out, "ready")
                self._feed(name, lc.Ready(ev.pid), now, rand, out)
            return
        check = self.plans[name].health
        if check is None:  # pragma: no cover - a reload that removes it stops the check
            return
        failures, passes = self._health_counts.get(name, (0, 0))
        if ev.why is None:
            failures, passes = 0, passes + 1
            if passes >= check.success_threshold:
                self.health[name] = "healthy"
            self._health_counts[name] = (failures, passes)
            return
        failures, passes = failures + 1, 0
        self._health_counts[name] = (failures, passes)
        out.append(
            Say(
                "warning",
                f"{name}: health check failed ({failures}/{check.failure_threshold}): {ev.why}",
            )
        )
        if failures >= check.failure_threshold and inst.state in SAMPLED_STATES:
            self.health[name] = "unhealthy"
            self._stop_checks(name, out, "health")
            reason = f"health check failed: {ev.why}"
            self._feed(name, lc.Stop(restart=True, reason=reason), now, rand, out)

    # --- memory ---------------------------------------------------------------------

    def _memory(self, ev: MemorySample, now: float, rand: float, out: list[Action]) -> None:
        name = ev.name
        inst = self.instances.get(name)
        if inst is None or inst.pid != ev.pid or inst.state not in SAMPLED_STATES:
            return
        limit = self._services[name].memory_limit
        if not limit or ev.rss is None or ev.rss <= limit:
            self._over_limit.discard(name)
        elif name not in self._over_limit:
            self._over_limit.add(name)  # once could be a spike; twice is not
        else:
            self._over_limit.discard(name)
            reason = f"memory limit exceeded ({ev.rss / 2**20:.0f} MiB > {limit / 2**20:.0f} MiB)"
            out.append(Say("warning", f"{name}: {reason}; restarting"))
            self._feed(name, lc.Stop(restart=True, reason=reason), now, rand, out)

    # --- sd_notify and the watchdog ---------------------------------------------------

    def _notified(
        self, name: str, fields: Mapping[str, str], now: float, rand: float, out: list[Action]
    ) -> None:
        inst = self.instances.get(name)
        if inst is None or inst.pid is None:
            return
        if inst.state in SAMPLED_STATES:  # not once it is being stopped
            if fields.get("WATCHDOG") == "1" or fields.get("READY") == "1":
                self.arm_watchdog(name, now, out)
            if fields.get("READY") == "1":
                self._feed(name, lc.Ready(inst.pid), now, rand, out)
        for flag in ("STOPPING", "RELOADING"):
            if fields.get(flag) == "1":
                out.append(Say("info", f"{name}: reports {flag.lower()}"))

    def arm_watchdog(self, name: str, now: float, out: list[Action]) -> None:
        """(Re)start the instance's watchdog: a full period from `now` (also when a
        new image takes an instance over whose watchdog was armed)."""
        inst = self.instances.get(name)
        period = _watchdog_period(self.plans[name]) if inst is not None else None
        if inst is None or inst.pid is None or period is None:
            return
        self.watchdogs[name] = inst.pid
        out.append(SetTimer(name, "watchdog", now + period, WatchdogExpired(name, inst.pid)))

    def _disarm_watchdog(self, name: str, out: list[Action]) -> None:
        if self.watchdogs.pop(name, None) is not None:
            out.append(CancelTimer(name, "watchdog"))

    # --- restart_with ---------------------------------------------------------------

    def _follow_restarts(
        self, inst: Instance, event: lc.Event, now: float, rand: float, out: list[Action]
    ) -> None:
        """Once every instance of a restarted service runs again, restart the services
        that have it in restart_with (once per restart of it)."""
        service = self.plans[inst.name].service
        if isinstance(event, lc.Spawned):
            # Only a service something restarts with is looked at as a whole after
            # each change (below): for the others, a crash loop would scan every replica.
            if inst.name in self.spawned_before and service in self._followed:
                self._restarted.add(service)
            self.spawned_before.add(inst.name)
        if service not in self._restarted or inst.state is not State.RUNNING:
            return
        if any(m.state is not State.RUNNING for m in self.by_service[service]):
            return
        self._restarted.discard(service)
        reason = f"restarted with {service}"
        for svc in self.plan.services.values():
            if service in svc.restart_with:
                for dependent in self.by_service[svc.name]:
                    if dependent.live and dependent.state is not State.STOPPING:
                        stop = lc.Stop(restart=True, reason=reason, limited=False)
                        self._feed(dependent.name, stop, now, rand, out)

    # --- files changed --------------------------------------------------------------

    def _files_changed(
        self, service: str, paths: tuple[str, ...], now: float, rand: float, out: list[Action]
    ) -> None:
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        reason = f"restart: {paths[0]}{more} changed"
        for inst in list(self.by_service.get(service, ())):
            if inst.live and inst.state is not State.STOPPING:
                out.append(Say("info", f"{inst.name}: {reason}"))
                # Not counted toward start_limit: the user changed something.
                stop = lc.Stop(restart=True, reason=reason, limited=False)
                self._feed(inst.name, stop, now, rand, out)
            elif inst.state in (State.EXITED, State.FAILED, State.RESTARTING):
                out.append(Say("info", f"{inst.name}: {reason}; starting it again"))
                self._start(inst.name, True, now, rand, out)

    # --- the plan ---------------------------------------------------------------------

    def _new_plan(self, plan: Plan, out: list[Action]) -> None:
        """Take `plan` as the truth. Instances that stay keep their process and
        lifecycle with the new settings; removed ones (stopped before) are forgotten;
        checks whose settings changed start again for the running process."""
        old_plans = self.plans
        old_instances = self.instances
        self._take(plan)
        for name, inst in old_instances.items():
            if name not in self.instances:
                self._forget_process(name, out)
                self._waiting.pop(name, None)
                self.queued.pop(name, None)
                self.spawned_before.discard(name)
                self.health.pop(name, None)
                self._health_counts.pop(name, None)
                if inst.pid is None:
                    out.append(CancelTimer(name, "lifecycle"))
                out.append(Forget(name))
        for name, inst in self.instances.items():
            before = old_plans.get(name)
            if before is None or inst.pid is None:
                continue
            now_plan = self.plans[name]
            if before.ready != now_plan.ready and not inst.ready:
                self._stop_checks(name, out, "ready")
                if now_plan.ready is not None and now_plan.ready.kind in ACTIVE_PROBES:
                    self._start_check(name, "ready", inst.pid, out)
            if before.health != now_plan.health:
                self._stop_checks(name, out, "health")
                if now_plan.health is not None and inst.state is State.RUNNING:
                    self._start_check(name, "health", inst.pid, out)
            if _watchdog_period(now_plan) is None:
                self._disarm_watchdog(name, out)
            if not self._services[name].memory_limit:
                self._over_limit.discard(name)

    def _take(self, plan: Plan) -> None:
        old = self.instances
        self.plan = plan
        self.instances, self.by_service, self.plans, self._services = {}, {}, {}, {}
        for svc_name, svc in plan.services.items():
            members = []
            for inst_plan in svc.instances:
                inst = old.get(inst_plan.name)
                if inst is None:
                    inst = Instance(inst_plan.name, svc.policy)
                else:
                    inst.policy = svc.policy
                members.append(inst)
                self.instances[inst_plan.name] = inst
                self.plans[inst_plan.name] = inst_plan
                self._services[inst_plan.name] = svc
                if inst_plan.health is None:
                    self.health[inst_plan.name] = None
                elif self.health.get(inst_plan.name) is None:
                    self.health[inst_plan.name] = "unknown"
            self.by_service[svc_name] = members
        self._deps = plan.dependency_map()
        self._followed = frozenset(n for svc in plan.services.values() for n in svc.restart_with)


_UP = (State.STARTING, State.RUNNING, State.RESTARTING, State.STOPPING)


def _service_of(plan: Plan, name: str) -> ServicePlan:
    for svc in plan.services.values():
        for inst in svc.instances:
            if inst.name == name:
                return svc
    raise KeyError(name)


def _in_start_order(plan: Plan, names: set[str]) -> tuple[str, ...]:
    members = {name: svc.instances for name, svc in plan.services.items()}
    waves = graph.members_by_wave(graph.start_waves(plan.dependency_map()), members)
    return tuple(inst.name for wave in waves for inst in wave if inst.name in names)


def _watchdog_period(plan: InstancePlan) -> float | None:
    ready: CheckPlan | None = plan.ready
    return ready.watchdog if ready is not None and ready.kind == "notify" else None


def _view(inst: Instance) -> graph.DependencyView:
    exited_ok = inst.state is State.EXITED and inst.exit_code == 0
    return graph.DependencyView(
        live=inst.live and inst.state in (State.STARTING, State.RUNNING),
        ready=inst.ready,
        completed=exited_ok,
        gave_up=inst.state is State.FAILED or (inst.state is State.EXITED and not exited_ok),
    )
