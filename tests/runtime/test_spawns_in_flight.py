"""Spawns overlap: the loop hands each to the spawning thread and goes on, and the
outcomes come back as events. Each outcome must reach its own instance, and a
process is never missed for having ended, or been stopped, before its spawn's
outcome was in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from herdsman.core.lifecycle import Spawned
from herdsman.core.states import State
from herdsman.runtime.spawn import IN_FLIGHT, Launcher, Request, Started
from herdsman.runtime.supervisor import Supervisor
from tests.conftest import alive
from tests.runtime.harness import supervised, until

REPLICAS = 40
MISSING = 17  # the replica whose program does not exist


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def answer_late(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The spawning threads tell each outcome `seconds` after its spawn."""
    original = Launcher.spawn

    def slow(self: Launcher, request: Request, out: int, err: int) -> Started:
        started = original(self, request, out, err)
        time.sleep(seconds)
        return started

    monkeypatch.setattr(Launcher, "spawn", slow)


def test_a_failure_in_the_middle_of_a_wave_is_that_instances_only(tmp: Path) -> None:
    for replica in range(REPLICAS):
        if replica != MISSING:
            script = tmp / f"w{replica}"
            script.write_text(f"#!/bin/sh\necho I am {replica}\nexec sleep 60\n")
            script.chmod(0o755)

    async def body() -> None:
        async with supervised(
            tmp,
            f"""
            [services.w]
            command = "{tmp}/w{{replica}}"
            replicas = {REPLICAS}
            start_seconds = 0
            """,
        ) as (sup, rec):
            names = [f"w.{r}" for r in range(REPLICAS) if r != MISSING]
            await until(lambda: all(rec.text(name) for name in names))
            failed = sup.instances[f"w.{MISSING}"]
            assert failed.state is State.FAILED
            assert failed.core.message == f"cannot start: command {tmp}/w{MISSING} does not exist"
            for name in names:
                managed = sup.instances[name]
                assert managed.state is State.RUNNING, (name, managed.core.message)
                # Its own pipes: what its process says is filed under its name.
                assert rec.text(name) == [f"I am {name.split('.')[1]}"]

    run(body())


def test_an_exit_collected_before_its_spawns_outcome_reaches_its_instance(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spawning thread's word that outcomes wait is lost: the last spawns' come
    # in only when the loop must know them, as when an exit status is collected
    # (SIGCHLD). An exit taken for an orphan's would leave its instance starting.
    # The last spawned ends first, while its outcome is surely still out.
    monkeypatch.setattr(Supervisor, "_woken", lambda self: None)
    (tmp / "quick.sh").write_text('sleep "0.$((30 - $1))"\n')

    async def body() -> None:
        async with supervised(
            tmp,
            f"""
            [services.quick]
            command = "sh {tmp}/quick.sh {{replica}}"
            replicas = {IN_FLIGHT}
            restart = "never"
            """,
            start=False,
        ) as (sup, _rec):
            members = list(sup.instances.values())
            for managed in members:
                sup.start(managed)
            assert members[-1].spawning  # else this tests nothing
            await until(lambda: all(m.state is State.EXITED for m in members))
            assert {m.core.exit_code for m in members} == {0}

    run(body())


def test_a_stop_while_the_spawn_is_in_flight_waits_for_its_process(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An idle spawning thread can otherwise spawn and answer before the loop
    # looks, and nothing is in flight.
    answer_late(monkeypatch, 0.2)

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.w]
            command = "sleep 60"
            start_seconds = 0
            """,
            start=False,
        ) as (sup, rec):
            managed = sup.instances["w"]
            sup.start(managed)
            assert managed.spawning  # else this tests nothing
            assert await sup.stop_all(5.0)
            # Stopped means its process came and went, not that it had none yet.
            assert not managed.spawning
            assert managed.state is State.STOPPED
            pids = [event.pid for _, _, _, event in rec.changes if isinstance(event, Spawned)]
            assert len(pids) == 1
            assert not alive(pids[0])

    run(body())


def test_an_exit_before_its_spawn_lands_waits_for_it_without_holding_the_loop(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spawning thread takes its time to tell the outcome; the child has long
    # exited. Its exit is collected (SIGCHLD) before its pid is known: the loop goes
    # on meanwhile, and the exit reaches the instance once the spawn lands (before,
    # the reaper waited on the thread, and nothing else ran on the loop).
    answer_late(monkeypatch, 0.5)

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.w]
            command = "true"
            restart = "never"
            start_seconds = 0
            """,
            start=False,
        ) as (sup, _rec):
            managed = sup.instances["w"]
            ticks: list[bool] = []
            sup.start(managed)
            assert managed.spawning  # else this tests nothing
            asyncio.get_running_loop().call_later(0.2, lambda: ticks.append(managed.spawning))
            await until(lambda: managed.state is State.EXITED)
            assert ticks == [True]  # the loop ran while the exit waited for its spawn
            assert managed.core.exit_code == 0
            assert sup._reaper.orphans_reaped == 0

    run(body())
