"""The herd under random event orders, with hypothesis playing the runtime.

A chain of three services (`c` depends on `b`, `b` on `a`, conditions drawn; `c`
may restart with `b`), each with drawn policies, a health check and a memory
limit; hypothesis starts, stops, crashes, fails checks, samples memory, gives the
herd room for a few of its queued spawns and lets time pass, and the herd's
promises are checked after every step.
"""

from __future__ import annotations

import signal
from typing import get_args

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from herdsman.core import graph
from herdsman.core.herd import (
    Action,
    Changed,
    CheckResult,
    Event,
    MemorySample,
    Spawn,
    SpawnRoom,
    StartRequest,
    StopRequest,
    ToInstance,
)
from herdsman.core.lifecycle import Exited, Instance, Policy
from herdsman.core.plan import CheckPlan
from herdsman.core.states import State
from tests.core.herd_driver import Driver, service

MiB = 2**20
NAMES = ("a.0", "a.1", "b", "c")
SERVICE = {"a.0": "a", "a.1": "a", "b": "b", "c": "c"}
FINAL = (State.STOPPED, State.EXITED, State.FAILED)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    initial = draw(st.sampled_from([0.0, 0.1]))
    return Policy(
        restart=draw(st.sampled_from(["always", "on-failure", "never"])),
        backoff_initial=initial,
        backoff_max=initial + 1.0,
        burst=draw(st.sampled_from([0, 1, 3])),
        interval=draw(st.sampled_from([1.0, 10.0])),
        start_seconds=draw(st.sampled_from([0.0, 0.5])),
        stop_timeout=draw(st.sampled_from([0.0, 2.0])),
    )


class HerdMachine(RuleBasedStateMachine):
    d: Driver

    @initialize(
        pols=st.tuples(policies(), policies(), policies()),
        b_on_a=st.sampled_from(get_args(graph.Condition)),
        c_on_b=st.sampled_from(["started", "ready"]),
        follows=st.booleans(),
    )
    def setup(
        self,
        pols: tuple[Policy, Policy, Policy],
        b_on_a: graph.Condition,
        c_on_b: graph.Condition,
        follows: bool,
    ) -> None:
        health = CheckPlan("exec", argv=("true",), failure_threshold=2)
        self.deps: dict[str, dict[str, graph.Condition]] = {
            "a": {},
            "b": {"a": b_on_a},
            "c": {"b": c_on_b},
        }
        self.d = Driver.of(
            service("a", replicas=2, policy=pols[0], health=health, memory_limit=MiB),
            service("b", depends_on=self.deps["b"], policy=pols[1], memory_limit=MiB),
            service(
                "c",
                depends_on=self.deps["c"],
                restart_with=("b",) if follows else (),
                policy=pols[2],
                health=health,
            ),
        )
        self.d.room = False  # spawns wait in the herd's queue until `room` gives some
        self.limited: dict[str, list[float]] = {name: [] for name in NAMES}
        self.b_respawns = 0
        self.follow_triggers = 0

    # --- feeding the herd, and what each step must respect -------------------------

    def send(self, event: Event) -> list[Action]:
        d = self.d
        herd = d.herd
        before = {n: (i.state, i.waiting, i.restarts) for n, i in herd.instances.items()}
        queued_before = dict(herd.queued)
        spawned_before = set(herd.spawned_before)
        stopping = isinstance(event, StopRequest)
        actions = d.send(event)
        for name in herd.queued:
            state, waiting, _ = before[name]
            if name not in queued_before and (waiting or state in FINAL):
                # A start (not a restart) is decided only once its conditions hold.
                assert not self.unmet(name), (name, self.unmet(name))
        for action in actions:
            if isinstance(action, Spawn):
                # Only what was queued, first come first spawned, and never twice.
                assert isinstance(event, SpawnRoom), event
                assert action.name == next(iter(queued_before)), (action, queued_before)
                del queued_before[action.name]
                if action.name == "b" and "b" in spawned_before:
                    self.b_respawns += 1
            # (A user's stop keeps the message of the last restart: not counted.)
            if isinstance(action, Changed) and action.name == "c" and not stopping:
                inst = d.inst("c")
                entered = inst.state is State.STOPPING and action.old is not State.STOPPING
                if entered and inst.message == "restarted with b":
                    self.follow_triggers += 1
        for name, inst in d.herd.instances.items():
            if inst.restarts > before[name][2] and not inst.message.startswith("restarted with"):
                self.limited[name].append(d.now)
        return actions

    def exit(self, name: str, code: int | None, sig: int | None) -> None:
        pid = self.d.inst(name).pid
        assert pid is not None
        self.send(ToInstance(name, Exited(pid, code, sig)))

    def unmet(self, name: str) -> list[str]:
        herd = self.d.herd
        views = {dep: [_view(i) for i in herd.by_service[dep]] for dep in self.deps[SERVICE[name]]}
        return graph.unmet(self.deps[SERVICE[name]], views)

    # --- rules ----------------------------------------------------------------------

    @rule()
    def start_all(self) -> None:
        for name in self.d.herd.start_order():
            self.send(StartRequest((name,), manual=False, dependencies=False))

    @rule(name=st.sampled_from(NAMES), dependencies=st.booleans())
    def start(self, name: str, dependencies: bool) -> None:
        self.send(StartRequest((name,), manual=False, dependencies=dependencies))

    @rule(name=st.sampled_from(NAMES))
    def stop(self, name: str) -> None:
        self.send(StopRequest((name,)))

    @rule(name=st.sampled_from(NAMES), code=st.sampled_from([0, 1, None]))
    def process_exits(self, name: str, code: int | None) -> None:
        if self.d.inst(name).pid is not None:
            self.exit(name, code, signal.SIGKILL if code is None else None)

    @rule(name=st.sampled_from(NAMES))
    def signalled_process_exits(self, name: str) -> None:
        inst = self.d.inst(name)
        if inst.state is State.STOPPING:
            self.exit(name, None, inst.policy.stop_signal)

    @rule(count=st.sampled_from([1, 2, 5]))
    def room(self, count: int) -> None:
        queued = len(self.d.herd.queued)
        spawns = [a for a in self.send(SpawnRoom(count)) if isinstance(a, Spawn)]
        assert len(spawns) == min(count, queued)

    @rule(seconds=st.sampled_from([0.05, 0.5, 3.0]))
    def time_passes(self, seconds: float) -> None:
        d = self.d
        end = d.now + seconds
        while True:
            due = [(at, key) for key, (at, _) in d.timers.items() if at <= end]
            if not due:
                break
            at, key = min(due)
            d.now = max(d.now, at)
            self.send(d.timers.pop(key)[1])
        d.now = end

    @rule(name=st.sampled_from(NAMES), passed=st.booleans())
    def health_check(self, name: str, passed: bool) -> None:
        pid = self.d.checks.get((name, "health"))
        if pid is not None:
            self.send(CheckResult(name, pid, "health", None if passed else "down"))

    @rule(name=st.sampled_from(("a.0", "c")))
    def unhealthy_until_restarted(self, name: str) -> None:
        for _ in range(2):  # failure_threshold
            pid = self.d.checks.get((name, "health"))
            if pid is not None:
                self.send(CheckResult(name, pid, "health", "down"))
        self.signalled_process_exits(name)

    @rule(name=st.sampled_from(("a.0", "a.1", "b")), over=st.booleans())
    def memory_sample(self, name: str, over: bool) -> None:
        pid = self.d.inst(name).pid
        if pid is not None:
            self.send(MemorySample(name, pid, 2 * MiB if over else MiB // 2))

    @precondition(lambda self: any(i.live for i in self.d.herd.instances.values()))
    @rule()
    def stop_everything_in_waves(self) -> None:
        d = self.d
        for wave in d.herd.stop_waves():
            for name in wave:
                # Dependents are down before what they depend on is asked to stop.
                for other, deps in self.deps.items():
                    if SERVICE[name] in deps:
                        assert all(i.pid is None for i in d.herd.by_service[other]), wave
                self.send(StopRequest((name,), kill=True))
            for name in wave:
                if d.inst(name).pid is not None:
                    self.exit(name, None, signal.SIGKILL)
        assert not any(i.live for i in d.herd.instances.values())
        assert not d.herd.queued  # dropped: none will be spawned

    # --- invariants -----------------------------------------------------------------

    @invariant()
    def start_limit_is_never_exceeded(self) -> None:
        for name, times in self.limited.items():
            policy = self.d.inst(name).policy
            recent = [t for t in times if t > self.d.now - policy.interval]
            assert len(recent) <= policy.burst, (name, times, policy)

    @invariant()
    def restart_with_fires_once_per_restart(self) -> None:
        assert self.follow_triggers <= self.b_respawns

    @invariant()
    def nothing_waits_silently(self) -> None:
        herd = self.d.herd
        blocked = herd.blocked()
        for name, inst in herd.instances.items():
            if not inst.waiting or name in herd._spawning or name in herd.queued:
                continue
            unmet = self.unmet(name)
            assert unmet, f"{name} waits for nothing"
            if self.hopeless(name):
                assert name in blocked, (name, unmet)
            else:
                assert name not in blocked, (name, blocked)

    @invariant()
    def the_queued_are_starting_without_a_process(self) -> None:
        herd = self.d.herd
        for name in herd.queued:
            assert herd.instances[name].waiting, name
            assert name not in herd._spawning
            assert name not in herd._waiting

    @invariant()
    def a_process_per_live_instance_only(self) -> None:
        for inst in self.d.herd.instances.values():
            assert (inst.pid is not None) == (inst.state in (State.RUNNING, State.STOPPING)) or (
                inst.state is State.STARTING
            )

    def hopeless(self, name: str) -> bool:
        """Whether a dependency of waiting `name` can no longer meet its condition
        without someone asking (the oracle for blocked())."""
        herd = self.d.herd
        for dep, condition in self.deps[SERVICE[name]].items():
            for inst in herd.by_service[dep]:
                if inst.state in (State.FAILED, State.STOPPED):
                    return True
                if inst.state is State.EXITED and not (
                    inst.exit_code == 0 and condition in ("started", "completed")
                ):
                    return True
                if inst.waiting and self.hopeless(inst.name):
                    return True
        return False


def _view(inst: Instance) -> graph.DependencyView:
    exited_ok = inst.state is State.EXITED and inst.exit_code == 0
    return graph.DependencyView(
        live=inst.live and inst.state in (State.STARTING, State.RUNNING),
        ready=inst.ready,
        completed=exited_ok,
        gave_up=inst.state is State.FAILED or (inst.state is State.EXITED and not exited_ok),
    )


HerdMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestHerd = HerdMachine.TestCase
