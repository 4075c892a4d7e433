"""Knowing that an instance can no longer start: `core.blocked`."""

from __future__ import annotations

import itertools
import re
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.core import graph
from herdsman.core.blocked import blocked
from herdsman.core.graph import Condition
from herdsman.core.lifecycle import (
    BackoffElapsed,
    DependenciesMet,
    Exited,
    Instance,
    Policy,
    Ready,
    Spawned,
    SpawnFailed,
    Start,
    StartSecondsPassed,
    Stop,
    StopTimeout,
    on_event,
)
from herdsman.core.states import State

FINAL = (State.FAILED, State.EXITED, State.STOPPED)


def waiting(name: str) -> Instance:
    inst = Instance(name, Policy())
    on_event(inst, Start(("db (started)",)), 0.0)
    assert inst.waiting
    return inst


def failed_by_start_limit(name: str) -> Instance:
    inst = Instance(name, Policy(burst=0))
    on_event(inst, Start(), 0.0)
    on_event(inst, Spawned(10), 0.0)
    on_event(inst, Exited(10, 1, None), 0.5)
    assert inst.state is State.FAILED
    return inst


def running(name: str, *, ready: bool = True) -> Instance:
    inst = Instance(name, Policy(needs_ready=not ready))
    on_event(inst, Start(), 0.0)
    on_event(inst, Spawned(10), 0.0)
    on_event(inst, StartSecondsPassed(10), 1.0)
    return inst


def exited(name: str, code: int) -> Instance:
    inst = Instance(name, Policy(restart="never"))
    on_event(inst, Start(), 0.0)
    on_event(inst, Spawned(10), 0.0)
    on_event(inst, Exited(10, code, None), 2.0)
    assert inst.state is State.EXITED
    return inst


def test_a_failed_dependency_blocks_with_its_reason() -> None:
    by_service = {"db": [failed_by_start_limit("db")], "app": [waiting("app")]}
    assert blocked(by_service, {"app": {"db": "ready"}}) == {
        "app": "depends on db, which failed (exited with code 1; "
        "gave up after more than 0 restarts within 60s (start_limit))"
    }


def test_a_spawn_failure_is_a_failure_too() -> None:
    db = Instance("db", Policy())
    on_event(db, Start(), 0.0)
    on_event(db, SpawnFailed("cannot start: no such program 'redis-servr'"), 0.0)
    by_service = {"db": [db], "app": [waiting("app")]}
    assert blocked(by_service, {"app": {"db": "started"}}) == {
        "app": "depends on db, which failed (cannot start: no such program 'redis-servr')"
    }


def test_a_stopped_dependency_blocks() -> None:
    db = running("db")
    on_event(db, Stop(), 2.0)
    on_event(db, Exited(10, None, 15), 2.1)
    assert db.state is State.STOPPED
    by_service = {"db": [db], "app": [waiting("app")]}
    assert blocked(by_service, {"app": {"db": "started"}}) == {
        "app": "depends on db, which is stopped"
    }


def test_a_one_shot_that_failed_blocks_but_one_that_completed_does_not() -> None:
    deps: dict[str, dict[str, Condition]] = {"app": {"migrate": "completed"}}
    bad = {"migrate": [exited("migrate", 3)], "app": [waiting("app")]}
    assert blocked(bad, deps) == {"app": "depends on migrate, which exited with code 3"}
    good = {"migrate": [exited("migrate", 0)], "app": [waiting("app")]}
    assert blocked(good, deps) == {}


def test_an_exited_dependency_that_must_be_ready_blocks_even_after_exit_0() -> None:
    by_service = {"db": [exited("db", 0)], "app": [waiting("app")]}
    assert blocked(by_service, {"app": {"db": "ready"}}) == {
        "app": "depends on db, which exited with code 0"
    }


def test_what_may_still_get_there_does_not_block() -> None:
    restarting = Instance("db", Policy())
    on_event(restarting, Start(), 0.0)
    on_event(restarting, Spawned(10), 0.0)
    on_event(restarting, Exited(10, 1, None), 0.2)
    assert restarting.state is State.RESTARTING
    for db in (restarting, running("db", ready=False), running("db")):
        assert blocked({"db": [db], "app": [waiting("app")]}, {"app": {"db": "ready"}}) == {}


def test_blocking_passes_along_a_chain_of_waiting_instances() -> None:
    by_service = {
        "db": [failed_by_start_limit("db")],
        "api": [waiting("api")],
        "web": [waiting("web.0"), waiting("web.1")],
    }
    deps: dict[str, dict[str, Condition]] = {
        "api": {"db": "ready"},
        "web": {"api": "started"},
    }
    found = blocked(by_service, deps, ["web"])
    assert set(found) == {"web.0", "web.1"}
    assert found["web.0"].startswith("depends on api, which cannot start: depends on db, ")


def test_one_replica_is_enough_to_block() -> None:
    by_service = {
        "db": [running("db.0"), failed_by_start_limit("db.1")],
        "app": [waiting("app")],
    }
    assert blocked(by_service, {"app": {"db": "started"}})["app"].startswith(
        "depends on db.1, which failed"
    )


def test_only_waiting_instances_are_blocked() -> None:
    by_service = {"db": [failed_by_start_limit("db")], "app": [running("app")]}
    assert blocked(by_service, {"app": {"db": "started"}}) == {}


# --- properties -------------------------------------------------------------------

MOVES = st.sampled_from(
    [
        "start",
        "restart",
        "stop",
        "exit0",
        "exit1",
        "killed",
        "start_seconds",
        "ready",
        "backoff",
        "stop_timeout",
        "deps_met",
    ]
)
AUTOMATIC_MOVES = st.sampled_from(
    [
        "stop",
        "exit0",
        "exit1",
        "killed",
        "start_seconds",
        "ready",
        "backoff",
        "stop_timeout",
        "deps_met",
    ]
)
POLICIES = st.builds(
    Policy,
    restart=st.sampled_from(["always", "on-failure", "never"]),
    burst=st.integers(0, 3),
    needs_ready=st.booleans(),
)


def play(inst: Instance, move: str, now: float, spawn_fails: bool, pids: list[int]) -> bool:
    """Feed one move as the runtime would (events carry the current pid; a Spawn
    action is answered at once); whether it spawned."""
    pid = inst.pid if inst.pid is not None else -1
    event = {
        "start": Start(manual=True),
        "restart": Stop(restart=True),
        "stop": Stop(),
        "exit0": Exited(pid, 0, None),
        "exit1": Exited(pid, 1, None),
        "killed": Exited(pid, None, 9),
        "start_seconds": StartSecondsPassed(pid),
        "ready": Ready(pid),
        "backoff": BackoffElapsed(),
        "stop_timeout": StopTimeout(pid),
        "deps_met": DependenciesMet(),
    }[move]
    spawned = False
    for action in on_event(inst, event, now):
        if type(action).__name__ == "Spawn":
            spawned = True
            pids.append(pids[-1] + 1)
            answer = SpawnFailed("cannot start") if spawn_fails else Spawned(pids[-1])
            on_event(inst, answer, now)
    return spawned


@settings(max_examples=300)
@given(
    POLICIES,
    st.lists(st.tuples(MOVES, st.booleans()), max_size=25),
    st.lists(AUTOMATIC_MOVES, max_size=25),
)
def test_the_states_that_block_are_final_without_a_request(
    policy: Policy, history: list[tuple[str, bool]], later: list[str]
) -> None:
    """What `blocked` relies on: no automatic event (an exit, a timer, a probe, a
    plain stop) ever moves an instance out of failed, exited or stopped, nor spawns
    it; only a start (or a restart) by someone does."""
    inst = Instance("db", policy)
    now, pids = 0.0, [100]
    for move, spawn_fails in history:
        now += 0.4
        play(inst, move, now, spawn_fails, pids)
    if inst.state not in FINAL:
        return
    state = inst.state
    for move in later:
        now += 0.4
        assert not play(inst, move, now, False, pids)
        assert inst.state is state


STATES = st.sampled_from(list(State))


@st.composite
def herds(
    draw: st.DrawFn,
) -> tuple[dict[str, list[Instance]], dict[str, dict[str, Condition]]]:
    """A random acyclic graph of services (each depends only on earlier ones), with
    instances in random states."""
    count = draw(st.integers(1, 6))
    names = [f"s{i}" for i in range(count)]
    deps: dict[str, dict[str, Condition]] = {}
    by_service: dict[str, list[Instance]] = {}
    for i, name in enumerate(names):
        chosen = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        deps[name] = {d: draw(st.sampled_from(get_args(Condition))) for d in chosen}
        members = []
        for r in range(draw(st.integers(1, 2))):
            inst = Instance(f"{name}.{r}", Policy())
            inst.state = draw(STATES)
            live = inst.state in (State.RUNNING, State.STOPPING) or (
                inst.state is State.STARTING and draw(st.booleans())
            )
            inst.pid = 100 + r if live else None
            inst.ready = inst.state is State.RUNNING and draw(st.booleans())
            inst.exit_code = draw(st.sampled_from([0, 1])) if inst.state is State.EXITED else None
            inst.message = draw(st.sampled_from(["", "exited with code 1", "killed by SIGKILL"]))
            members.append(inst)
        by_service[name] = members
    return by_service, deps


def _view(inst: Instance) -> graph.DependencyView:
    done = inst.state is State.EXITED and inst.exit_code == 0
    return graph.DependencyView(
        live=inst.pid is not None and inst.state in (State.STARTING, State.RUNNING),
        ready=inst.ready,
        completed=done,
        gave_up=inst.state is State.FAILED or (inst.state is State.EXITED and not done),
    )


@settings(max_examples=500)
@given(herds())
def test_blocked_agrees_with_the_graph(
    herd: tuple[dict[str, list[Instance]], dict[str, dict[str, Condition]]],
) -> None:
    by_service, deps = herd
    found = blocked(by_service, deps)
    views = {s: [_view(i) for i in members] for s, members in by_service.items()}
    service_of = {i.name: s for s, members in by_service.items() for i in members}
    instances = {i.name: i for members in by_service.values() for i in members}
    for service, members in by_service.items():
        for inst in members:
            unmet = graph.unmet(deps[service], views)
            final_dep = any(
                not graph.satisfied(cond, [_view(d)]) and d.state in FINAL
                for dep, cond in deps[service].items()
                for d in by_service[dep]
            )
            if inst.name not in found:
                # Complete: a waiting instance with a dependency stuck short of its
                # condition in a final state is always reported.
                assert not (inst.waiting and final_dep)
                continue
            # Sound: only waiting instances, only with an unmet dependency ...
            assert inst.waiting
            assert unmet
            # ... and the reason follows dependencies down to an instance in a
            # final state that does not meet what is asked of it.
            chain = re.findall(r"depends on (\S+),", found[inst.name])
            assert service_of[chain[0]] in deps[service]
            for upper, lower in itertools.pairwise(chain):
                assert instances[upper].waiting
                assert service_of[lower] in deps[service_of[upper]]
            assert instances[chain[-1]].state in FINAL
