"""The dependency graph between services: validation, start waves, stop order.

Pure functions over plain mappings `service -> {dependency: condition}`; the
runtime asks `unmet()` whether an instance may be spawned yet and uses
`stop_waves()` to stop dependents before what they depend on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

Condition = Literal["started", "ready", "completed"]

Deps = Mapping[str, Mapping[str, Condition]]
T = TypeVar("T")


def unknown_dependencies(deps: Deps) -> list[tuple[str, str]]:
    """Pairs (service, dependency) where the dependency names no service."""
    return [(name, dep) for name, wanted in deps.items() for dep in wanted if dep not in deps]


def find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One dependency cycle as a closed path `[a, b, a]`, or None.

    Dependencies on unknown services are ignored here (reported separately).
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        # Iterative DFS so a deep chain cannot hit the recursion limit.
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(deps[root])]
        colour[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = black
                stack.pop()
                continue
            if nxt not in colour:
                continue
            if colour[nxt] == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == white:
                colour[nxt] = grey
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


def start_waves(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Services grouped so each wave depends only on earlier waves.

    Order inside a wave follows the mapping's order. Raises ValueError on a cycle.
    """
    remaining = {name: {d for d in wanted if d in deps} for name, wanted in deps.items()}
    waves: list[list[str]] = []
    done: set[str] = set()
    while remaining:
        wave = [name for name, wanted in remaining.items() if wanted <= done]
        if not wave:
            raise ValueError(f"dependency cycle among {', '.join(sorted(remaining))}")
        waves.append(wave)
        done.update(wave)
        for name in wave:
            del remaining[name]
    return waves


def stop_waves(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The reverse of `start_waves`: dependents stop before their dependencies."""
    return list(reversed(start_waves(deps)))


def members_by_wave(
    waves: Iterable[Iterable[str]],
    members: Mapping[str, Iterable[T]],
    wanted: Callable[[T], bool] = lambda _: True,
) -> Iterator[list[T]]:
    """Per wave of services (`start_waves` or `stop_waves`), the members of its
    services that `wanted` keeps, in order; one list per wave, empty ones too, each
    made when the caller is done with the wave before."""
    for wave in waves:
        yield [member for service in wave for member in members[service] if wanted(member)]


def closure(deps: Mapping[str, Iterable[str]], names: Iterable[str]) -> list[str]:
    """The named services plus everything they depend on, in mapping order."""
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in wanted or name not in deps:
            continue
        wanted.add(name)
        todo.extend(deps[name])
    return [name for name in deps if name in wanted]


@dataclass(slots=True)
class DependencyView:
    """What the graph needs to know of one instance of a dependency."""

    live: bool  # has a process (starting with a pid, or running)
    ready: bool
    completed: bool  # exited with code 0
    gave_up: bool  # failed, or exited without success


def satisfied(condition: Condition, instances: Sequence[DependencyView]) -> bool:
    """Whether every instance of a dependency meets `condition`."""
    if condition == "started":
        return all(v.live or v.completed for v in instances)
    if condition == "ready":
        return all(v.ready for v in instances)
    return all(v.completed for v in instances)


def unmet(
    wanted: Mapping[str, Condition], views: Mapping[str, Sequence[DependencyView]]
) -> list[str]:
    """Human-readable unmet conditions, e.g. `["db (ready)"]`, in mapping order; a
    dependency that gave up (failed, or exited without success) says so."""
    unmet = []
    for dep, cond in wanted.items():
        if not satisfied(cond, views[dep]):
            gave_up = any(v.gave_up for v in views[dep])
            unmet.append(f"{dep} ({cond}), which has failed" if gave_up else f"{dep} ({cond})")
    return unmet
