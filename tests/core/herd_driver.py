"""Playing the runtime for `core.herd` in tests: plans built by hand, a clock, fake
pids, timers, and every action carried out as the runtime would (a Spawn answered
by Spawned on the queue), with no process and no real second."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from herdsman.core import lifecycle as lc
from herdsman.core.graph import Condition
from herdsman.core.herd import (
    Action,
    CancelTimer,
    Changed,
    Event,
    Forget,
    Herd,
    Say,
    SetTimer,
    SignalGroup,
    Spawn,
    SpawnRoom,
    StartCheck,
    StartRequest,
    StopCheck,
    ToInstance,
)
from herdsman.core.plan import CheckPlan, InstancePlan, Plan, ServicePlan


def service(
    name: str,
    *,
    replicas: int = 1,
    depends_on: dict[str, Condition] | None = None,
    restart_with: tuple[str, ...] = (),
    memory_limit: int | None = None,
    health: CheckPlan | None = None,
    ready: CheckPlan | None = None,
    policy: lc.Policy | None = None,
    autostart: bool = True,
    argv: tuple[str, ...] = ("sleep", "600"),
) -> ServicePlan:
    names = [name] if replicas == 1 else [f"{name}.{i}" for i in range(replicas)]
    instances = tuple(
        InstancePlan(n, name, i, argv, {}, Path("/"), ready=ready, health=health)
        for i, n in enumerate(names)
    )
    return ServicePlan(
        name,
        policy or lc.Policy(start_seconds=0.0, needs_ready=ready is not None),
        instances,
        autostart,
        depends_on or {},
        memory_limit=memory_limit,
        restart_with=restart_with,
    )


def plan(*services: ServicePlan) -> Plan:
    p = Path("/tmp/h")
    return Plan(p / "herdsman.toml", p, p / "logs", p / "sock", 10.0, {s.name: s for s in services})


@dataclass
class Driver:
    herd: Herd
    now: float = 0.0
    next_pid: int = 100
    timers: dict[tuple[str, str], tuple[float, Event]] = field(default_factory=dict)
    checks: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, role) -> pid
    signals: list[tuple[str, int]] = field(default_factory=list)
    spawns: list[str] = field(default_factory=list)
    changes: list[tuple[str, lc.State, lc.State, lc.Event]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)  # of the last `send`
    # Whether `send` gives the herd room for every queued spawn once the queue is
    # empty (as the runtime does when it has time); without, only `take` does.
    room: bool = True

    @classmethod
    def of(cls, *services: ServicePlan) -> Driver:
        return cls(Herd(plan(*services)))

    def inst(self, name: str) -> lc.Instance:
        return self.herd.instances[name]

    def state(self, name: str) -> str:
        return self.herd.state_of(name)

    def send(self, event: Event) -> list[Action]:
        """Feed `event`, then everything its actions lead to at once (spawns)."""
        queue: deque[Event] = deque([event])
        self.actions = []
        while queue:
            actions = self.herd.on_event(queue.popleft(), self.now)
            self.actions += actions
            for action in actions:
                self._execute(action, queue)
            if not queue and self.room and self.herd.queued:
                queue.append(SpawnRoom(1))
        return self.actions

    def take(self, count: int) -> list[str]:
        """Give the herd room for `count` spawns (and run what follows): who spawned."""
        before = len(self.spawns)
        self.send(SpawnRoom(count))
        return self.spawns[before:]

    def _execute(self, action: Action, queue: deque[Event]) -> None:
        match action:
            case Spawn(name=name):
                self.next_pid += 1
                self.spawns.append(name)
                queue.append(ToInstance(name, lc.Spawned(self.next_pid)))
            case SignalGroup(name=name, signal=sig):
                self.signals.append((name, sig))
            case SetTimer(name=name, kind=kind, at=at, event=event):
                self.timers[name, kind] = (at, event)
            case CancelTimer(name=name, kind=kind):
                self.timers.pop((name, kind), None)
            case StartCheck(name=name, role=role, pid=pid):
                self.checks[name, role] = pid
            case StopCheck(name=name, role=role):
                for key in [k for k in self.checks if k[0] == name and role in (None, k[1])]:
                    del self.checks[key]
            case Changed(name=name, old=old, event=event):
                self.changes.append((name, old, self.herd.instances[name].state, event))
            case Say(text=text):
                self.said.append(text)
            case Forget(name=name):
                self.forgotten.append(name)

    def start(self, services: tuple[str, ...] | None = None) -> None:
        """As `up` does: what the services need first, one instance at a time."""
        for name in self.herd.start_order(services):
            self.send(StartRequest((name,), manual=False, dependencies=False))

    def exit(self, name: str, code: int | None = 0, sig: int | None = None) -> None:
        pid = self.inst(name).pid
        assert pid is not None, name
        self.send(ToInstance(name, lc.Exited(pid, code, sig)))

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing the timers that fall due, in time order."""
        end = self.now + seconds
        while True:
            due = [(at, key) for key, (at, _) in self.timers.items() if at <= end]
            if not due:
                break
            at, key = min(due)
            self.now = max(self.now, at)
            _, event = self.timers.pop(key)
            self.send(event)
        self.now = end
