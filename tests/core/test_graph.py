"""The dependency graph: cycles, start and stop waves, closure, conditions."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.core.graph import (
    Condition,
    DependencyView,
    closure,
    find_cycle,
    members_by_wave,
    satisfied,
    start_waves,
    stop_waves,
    unknown_dependencies,
    unmet,
)

STACK = {"web": ["api"], "api": ["db", "cache"], "db": [], "cache": [], "cron": []}


# --- cycles -----------------------------------------------------------------------


def test_no_cycle() -> None:
    assert find_cycle(STACK) is None


def test_a_diamond_is_not_a_cycle() -> None:
    assert find_cycle({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}) is None


def test_self_loop() -> None:
    assert find_cycle({"web": [], "db": ["db"]}) == ["db", "db"]


def test_long_cycle_is_reported_as_a_closed_path() -> None:
    deps = {"a": ["b"], "b": ["c"], "c": ["d"], "d": ["a"]}
    assert find_cycle(deps) == ["a", "b", "c", "d", "a"]


def test_cycle_below_the_first_service_starts_where_it_closes() -> None:
    deps = {"web": ["api"], "api": ["db"], "db": ["queue"], "queue": ["api"]}
    assert find_cycle(deps) == ["api", "db", "queue", "api"]


def test_unknown_dependencies_are_ignored_by_find_cycle() -> None:
    assert find_cycle({"web": ["ghost"], "api": ["ghost", "web"]}) is None
    assert find_cycle({"a": ["ghost", "b"], "b": ["a"]}) == ["a", "b", "a"]


def test_a_deep_chain_does_not_hit_the_recursion_limit() -> None:
    deps = {f"s{i}": [f"s{i + 1}"] for i in range(5000)} | {"s5000": []}
    assert find_cycle(deps) is None
    deps["s5000"] = ["s0"]
    cycle = find_cycle(deps)
    assert cycle is not None
    assert (len(cycle), cycle[0], cycle[-1]) == (5002, "s0", "s0")


def test_unknown_dependencies_are_listed() -> None:
    deps: dict[str, dict[str, Condition]] = {
        "web": {"db": "ready", "ghost": "started"},
        "db": {},
        "worker": {"phantom": "completed"},
    }
    assert unknown_dependencies(deps) == [("web", "ghost"), ("worker", "phantom")]


# --- waves ------------------------------------------------------------------------


def test_services_without_dependencies_start_together_in_mapping_order() -> None:
    assert start_waves({"web": [], "db": [], "cache": []}) == [["web", "db", "cache"]]


def test_start_waves_follow_the_chain() -> None:
    assert start_waves(STACK) == [["db", "cache", "cron"], ["api"], ["web"]]


def test_a_service_waits_for_its_slowest_dependency() -> None:
    deps = {"web": ["db", "api"], "api": ["db"], "db": []}
    assert start_waves(deps) == [["db"], ["api"], ["web"]]


def test_unknown_dependencies_do_not_hold_back_a_wave() -> None:
    assert start_waves({"web": ["ghost"], "db": []}) == [["web", "db"]]


def test_stop_waves_stop_dependents_first() -> None:
    assert stop_waves(STACK) == [["web"], ["api"], ["db", "cache", "cron"]]


REPLICAS = {"web": ["web.0", "web.1"], "api": ["api"], "db": ["db"], "cache": [], "cron": ["cron"]}


def test_members_by_wave_gives_each_waves_members_in_order() -> None:
    assert list(members_by_wave(start_waves(STACK), REPLICAS)) == [
        ["db", "cron"],
        ["api"],
        ["web.0", "web.1"],
    ]
    kept = members_by_wave(stop_waves(STACK), REPLICAS, lambda m: m != "web.0")
    assert list(kept) == [["web.1"], ["api"], ["db", "cron"]]


def test_members_by_wave_keeps_a_wave_with_none_and_asks_as_it_goes() -> None:
    asked: list[str] = []

    def wanted(member: str) -> bool:
        asked.append(member)
        return member == "cron"

    walk = members_by_wave(start_waves(STACK), REPLICAS, wanted)
    assert next(walk) == ["cron"]
    assert asked == ["db", "cron"]  # the next wave is made only when asked for
    assert list(walk) == [[], []]


@pytest.mark.parametrize("waves", [start_waves, stop_waves])
def test_a_cycle_has_no_waves(waves: object) -> None:
    assert callable(waves)
    with pytest.raises(ValueError, match=r"^dependency cycle among a, b$"):
        waves({"a": ["b"], "b": ["a"], "c": []})
    with pytest.raises(ValueError, match="dependency cycle"):
        waves({"a": ["a"]})


def test_empty_graph_has_no_waves() -> None:
    assert start_waves({}) == []
    assert stop_waves({}) == []


# --- closure ----------------------------------------------------------------------


def test_closure_adds_what_the_named_services_depend_on_in_mapping_order() -> None:
    assert closure(STACK, ["web"]) == ["web", "api", "db", "cache"]
    assert closure(STACK, ["cron", "api"]) == ["api", "db", "cache", "cron"]
    assert closure(STACK, ["db"]) == ["db"]


def test_closure_ignores_unknown_names_and_survives_cycles() -> None:
    assert closure(STACK, ["ghost"]) == []
    assert closure({"a": ["b", "ghost"], "b": ["a"], "c": []}, ["b"]) == ["a", "b"]


# --- conditions -------------------------------------------------------------------


def view(
    *, live: bool = False, ready: bool = False, completed: bool = False, gave_up: bool = False
) -> DependencyView:
    return DependencyView(live=live, ready=ready, completed=completed, gave_up=gave_up)


WAITING = view()
STARTING = view(live=True)
RUNNING = view(live=True, ready=True)
DONE = view(completed=True)
FAILED = view(gave_up=True)


@pytest.mark.parametrize(
    ("condition", "instances", "expected"),
    [
        ("started", [STARTING], True),
        ("started", [RUNNING], True),
        ("started", [DONE], True),
        ("started", [WAITING], False),
        ("started", [FAILED], False),
        ("started", [RUNNING, WAITING], False),
        ("ready", [RUNNING], True),
        ("ready", [RUNNING, RUNNING], True),
        ("ready", [STARTING], False),
        ("ready", [RUNNING, STARTING], False),
        ("ready", [DONE], False),
        ("completed", [DONE], True),
        ("completed", [DONE, DONE], True),
        ("completed", [RUNNING], False),
        ("completed", [DONE, FAILED], False),
    ],
)
def test_satisfied(condition: Condition, instances: list[DependencyView], expected: bool) -> None:
    assert satisfied(condition, instances) is expected


def test_unmet_names_each_unmet_condition_in_mapping_order() -> None:
    wanted: dict[str, Condition] = {"db": "ready", "cache": "started", "migrate": "completed"}
    views = {"db": [STARTING], "cache": [STARTING], "migrate": [RUNNING]}
    assert unmet(wanted, views) == ["db (ready)", "migrate (completed)"]
    views = {"db": [RUNNING], "cache": [STARTING], "migrate": [DONE]}
    assert unmet(wanted, views) == []


# --- properties -------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """A random DAG: service i may depend only on services drawn before it."""
    count = draw(st.integers(0, 12))
    names = [f"s{i}" for i in range(count)]
    deps = {
        name: draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        for i, name in enumerate(names)
    }
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@given(dags())
def test_every_service_is_in_one_wave_after_all_it_depends_on(deps: dict[str, list[str]]) -> None:
    waves = start_waves(deps)
    wave_of = {name: i for i, wave in enumerate(waves) for name in wave}
    assert sorted(name for wave in waves for name in wave) == sorted(deps)
    for name, wanted in deps.items():
        assert all(wave_of[dep] < wave_of[name] for dep in wanted)
        # as early as possible: a later wave is owed to a dependency one wave before
        if wave_of[name] > 0:
            assert any(wave_of[dep] == wave_of[name] - 1 for dep in wanted)
    for wave in waves:
        assert wave == [name for name in deps if name in wave]
    assert all(waves)
    assert stop_waves(deps) == waves[::-1]
    assert find_cycle(deps) is None


@given(
    st.dictionaries(
        st.sampled_from("abcdefg"),
        st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=3),
    )
)
def test_find_cycle_agrees_with_start_waves(deps: dict[str, list[str]]) -> None:
    cycle = find_cycle(deps)
    if cycle is None:
        start_waves(deps)
        return
    with pytest.raises(ValueError, match="dependency cycle"):
        start_waves(deps)
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for service, dependency in itertools.pairwise(cycle):
        assert dependency in deps[service]
