"""wait_stopped's predicate: cheap per loop turn while a wave of thousands stops, and
exact: it holds only when none of the members has a process at that moment."""

from __future__ import annotations

from pathlib import Path

from herdsman.core.lifecycle import Instance, Policy
from herdsman.core.plan import InstancePlan
from herdsman.runtime.supervisor import Managed, _NoneLive


def members(n: int) -> list[Managed]:
    found = []
    for i in range(n):
        name = f"w.{i}"
        plan = InstancePlan(name, "w", i, ("true",), {}, Path("/"))
        found.append(Managed(Instance(name, Policy(), pid=1000 + i), plan))
    return found


def test_none_live_once_every_member_has_stopped() -> None:
    wave = members(4)
    none_live = _NoneLive(wave)
    assert not none_live()
    for managed in reversed(wave[1:]):
        managed.core.pid = None
        assert not none_live()
    wave[0].spawning = True  # its process may come any moment
    wave[0].core.pid = None
    assert not none_live()
    wave[0].spawning = False
    assert none_live()


def test_one_that_started_again_after_it_was_seen_stopped_counts() -> None:
    wave = members(3)
    none_live = _NoneLive(wave)
    wave[2].core.pid = None
    assert not none_live()  # w.2 seen stopped: no longer looked at one by one
    wave[2].core.pid = 2000  # started again
    wave[1].core.pid = wave[0].core.pid = None
    assert not none_live()  # the pass over all finds it
    wave[2].core.pid = None
    assert none_live()
