"""The orchestrator against real processes and real signals."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from herdsman.core.states import State
from herdsman.runtime import spawn, supervisor
from herdsman.runtime.procfs import process_start_time, start_time_between
from herdsman.runtime.spawn import Spawner
from herdsman.runtime.supervisor import Managed
from tests.conftest import alive
from tests.runtime.harness import supervised, until


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_child_gets_own_session_devnull_stdin_pipes_and_environment(tmp: Path) -> None:
    script = tmp / "probe.sh"
    script.write_text(
        "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pgid=$(ps -o pgid= -p $$ | tr -d ' ')\n"
        "echo stdin=$(readlink /proc/$$/fd/0)\n"
        'echo "env=$HERDSMAN_SERVICE $HERDSMAN_INSTANCE $HERDSMAN_REPLICA $GREETING"\n'
        "echo to-stderr >&2\n"
        "exec sleep 60\n"
    )

    async def body() -> None:
        async with supervised(
            tmp,
            f"""
            [services.probe]
            command = "sh {script}"
            env = {{ GREETING = "hi" }}
            """,
        ) as (sup, rec):
            managed = sup.instances["probe"]
            await until(lambda: len(rec.text("probe")) >= 4)
            pid = managed.core.pid
            assert pid is not None
            out = rec.text("probe", "out")
            assert f"sid={pid} pgid={pid}" in out
            assert "stdin=/dev/null" in out
            assert "env=probe probe 0 hi" in out
            assert rec.text("probe", "err") == ["to-stderr"]

    run(body())


def test_replicas_get_their_number_in_command_and_env(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.w]
            command = "sh -c 'echo arg={replica} env=$R; exec sleep 60'"
            replicas = 3
            env = { R = "r{replica}" }
            """,
        ) as (sup, rec):
            assert list(sup.instances) == ["w.0", "w.1", "w.2"]
            for i in range(3):
                await until(lambda i=i: rec.text(f"w.{i}"))
                assert rec.text(f"w.{i}") == [f"arg={i} env=r{i}"]

    run(body())


def test_sigkilled_instance_is_respawned_at_once(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.s]
            command = "sleep 60"
            backoff = { initial = 0 }
            start_seconds = 0
            """,
        ) as (sup, _rec):
            managed = sup.instances["s"]
            await until(lambda: managed.state is State.RUNNING)
            first = managed.core.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await until(lambda: managed.core.pid not in (None, first))
            assert managed.core.restarts == 1
            assert not alive(first)

    run(body())


def test_backoff_delays_the_respawn(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.crash]
            command = "sh -c 'exit 3'"
            backoff = { initial = "300ms", max = "300ms", jitter = 0 }
            start_limit = { burst = 100, interval = "60s" }
            """,
        ) as (sup, _rec):
            managed = sup.instances["crash"]
            await until(lambda: managed.state is State.RESTARTING)
            assert managed.core.message == "exited with code 3; restarting in 300ms"
            loop = asyncio.get_running_loop()
            entered = loop.time()
            await until(lambda: managed.state is not State.RESTARTING)
            assert loop.time() - entered >= 0.25

    run(body())


def test_restart_policies(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.never]
            command = "sh -c 'exit 4'"
            restart = "never"
            [services.clean]
            command = "true"
            restart = "on-failure"
            [services.dirty]
            command = "sh -c 'exit 5'"
            restart = "on-failure"
            backoff = { initial = 0 }
            start_limit = { burst = 2, interval = "60s" }
            """,
        ) as (sup, _rec):
            never, clean, dirty = (sup.instances[n] for n in ("never", "clean", "dirty"))
            await until(lambda: never.state is State.EXITED and clean.state is State.EXITED)
            assert (never.core.exit_code, never.core.message) == (4, "exited with code 4")
            assert (clean.core.exit_code, clean.core.restarts) == (0, 0)
            await until(lambda: dirty.state is State.FAILED)
            assert dirty.core.restarts == 2
            assert "more than 2 restarts within 60s" in dirty.core.message

    run(body())


def test_spawn_failures_fail_only_that_instance(tmp: Path) -> None:
    (tmp / "noexec.sh").write_text("echo hi\n")

    async def body() -> None:
        async with supervised(
            tmp,
            f"""
            [services.missing]
            command = "no-such-program-xyz --flag"
            [services.abspath]
            command = "{tmp}/nope"
            [services.noexec]
            command = "{tmp}/noexec.sh"
            [services.badcwd]
            command = "sleep 60"
            cwd = "{tmp}/does-not-exist"
            [services.baduser]
            command = "sleep 60"
            user = "no-such-user-xyz"
            [services.fine]
            command = "sleep 60"
            start_seconds = 0
            """,
        ) as (sup, _rec):
            fine = sup.instances["fine"]
            await until(lambda: fine.state is State.RUNNING)
            messages = {n: (m.state, m.core.message) for n, m in sup.instances.items()}
            assert messages["missing"] == (
                State.FAILED,
                "cannot start: command 'no-such-program-xyz' not found in PATH",
            )
            assert messages["abspath"] == (
                State.FAILED,
                f"cannot start: command {tmp}/nope does not exist",
            )
            assert messages["noexec"] == (
                State.FAILED,
                f"cannot start: command {tmp}/noexec.sh is not executable (permission denied)",
            )
            assert messages["badcwd"] == (
                State.FAILED,
                f"cannot start: working directory {tmp}/does-not-exist does not exist",
            )
            assert messages["baduser"][0] is State.FAILED
            assert "no-such-user-xyz" in messages["baduser"][1]

    run(body())


def test_stop_sends_stop_signal_to_the_whole_group(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.tree]
            command = ["sh", "-c", 'trap "exit 0" TERM; sleep 60 & echo child=$!; while :; do sleep 0.05; done']
            start_seconds = 0
            """,
        ) as (sup, rec):
            managed = sup.instances["tree"]
            await until(lambda: rec.text("tree"))
            grandchild = int(rec.text("tree")[0].split("=")[1])
            assert alive(grandchild)
            sup.stop(managed)
            await until(lambda: managed.state is State.STOPPED)
            assert managed.core.message == "stopped (exited with code 0)"
            await until(lambda: not alive(grandchild))

    run(body())


def test_stop_timeout_kills_the_group(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.stubborn]
            command = ["sh", "-c", 'trap "" TERM; sleep 60 & echo trapped; wait; wait']
            start_seconds = 0
            stop_timeout = "300ms"
            """,
        ) as (sup, rec):
            managed = sup.instances["stubborn"]
            await until(lambda: rec.text("stubborn") == ["trapped"])
            loop = asyncio.get_running_loop()
            began = loop.time()
            sup.stop(managed)
            await until(lambda: managed.state is State.STOPPED)
            assert loop.time() - began >= 0.25
            assert managed.core.exit_signal == signal.SIGKILL
            assert managed.core.message == "killed with SIGKILL after stop_timeout (300ms)"

    run(body())


def test_group_leftovers_die_with_the_main_process(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.leaver]
            command = "sh -c 'sleep 60 & echo child=$!; sleep 0.2; exit 1'"
            restart = "never"
            """,
        ) as (sup, rec):
            managed = sup.instances["leaver"]
            await until(lambda: rec.text("leaver"))
            grandchild = int(rec.text("leaver")[0].split("=")[1])
            await until(lambda: managed.state is State.EXITED)
            await until(lambda: not alive(grandchild))

    run(body())


def test_daemonized_grandchildren_are_reaped_not_left_as_zombies(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.forker]
            command = "sh -c 'setsid sh -c \\"sleep 0.3\\" & echo orphan=$!; exit 0'"
            restart = "never"
            """,
        ) as (sup, rec):
            managed = sup.instances["forker"]
            await until(lambda: rec.text("forker") and managed.state is State.EXITED)
            orphan = int(rec.text("forker")[0].split("=")[1])
            # The orphan escaped the group (own session), so it lives on; once it
            # exits, we (the subreaper) must reap it: no zombie left.
            await until(lambda: not os.path.exists(f"/proc/{orphan}"))

    run(body())


def test_dependencies_start_in_order_and_stop_in_reverse(tmp: Path) -> None:
    async def body() -> None:
        term = 'trap \\"echo bye; exit 0\\" TERM; echo hello; while :; do sleep 0.02; done'
        async with supervised(
            tmp,
            f"""
            [services.web]
            command = "sh -c '{term}'"
            depends_on = {{ db = "ready" }}
            [services.db]
            command = "sh -c '{term}'"
            start_seconds = "300ms"
            """,
        ) as (sup, rec):
            web, db = sup.instances["web"], sup.instances["db"]
            await until(lambda: db.core.pid is not None)
            assert web.state is State.STARTING
            assert web.core.pid is None
            assert web.core.message == "waiting for db (ready)"
            await until(lambda: web.state is State.RUNNING)
            spawn_order = [
                name for name, _, new, ev in rec.changes if type(ev).__name__ == "Spawned"
            ]
            assert spawn_order == ["db", "web"]
            assert await sup.stop_all(5.0)
            stops = [(i, t) for i, s, t in rec.lines if t == "bye"]
            assert stops == [("web", "bye"), ("db", "bye")]

    run(body())


def test_idle_supervisor_arms_no_timers(tmp: Path) -> None:
    """No polling: once everything runs, the loop has nothing scheduled."""

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.idle]
            command = "sleep 60"
            replicas = 20
            start_seconds = "100ms"
            """,
        ) as (sup, _rec):
            await until(lambda: all(m.state is State.RUNNING for m in sup.instances.values()))
            loop = asyncio.get_running_loop()
            await asyncio.sleep(0.05)
            pending = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            assert pending == []
            assert all(m.timer is None for m in sup.instances.values())

    run(body())


def test_run_command_reports_exit_output_and_timeouts(tmp: Path) -> None:
    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.svc]
            command = "sleep 60"
            env = { WHO = "probe-env" }
            autostart = false
            """,
        ) as (sup, _rec):
            inst = sup.instances["svc"].plan
            assert await sup.run_command(inst, ("sh", "-c", "echo $WHO; exit 0"), 5) == (
                0,
                "probe-env",
            )
            assert await sup.run_command(inst, ("sh", "-c", "echo nope >&2; exit 4"), 5) == (
                4,
                "nope",
            )
            loop = asyncio.get_running_loop()
            began = loop.time()
            code, why = await sup.run_command(inst, ("sh", "-c", "sleep 30 & sleep 30"), 0.3)
            assert (code, why) == (None, "timed out after 0.3s")
            assert loop.time() - began < 5
            code, why = await sup.run_command(inst, ("no-such-probe-xyz",), 5)
            assert (code, why) == (None, "command 'no-such-probe-xyz' not found in PATH")

    run(body())


def test_a_start_wave_runs_without_the_cyclic_collector(tmp: Path) -> None:
    """Its objects live as long as their instances: a full collection in the middle
    of a wave walks them all while the spawning thread waits for the GIL."""
    collecting: list[bool] = []

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.w]
            command = "sleep 60"
            replicas = 3
            """,
            start=False,
        ) as (sup, _rec):
            sup.changes.subscribe(lambda *_: collecting.append(gc.isenabled()))
            wave = sup.start_services()
            assert not gc.isenabled()
            await wave
            assert collecting
            assert not any(collecting)
            assert gc.isenabled()  # again once the wave is out
            gc.disable()
            try:
                sup.stop(sup.instances["w.0"])
                await until(lambda: sup.instances["w.0"].state is State.STOPPED)
                await sup.start_services(["w"])
                assert not gc.isenabled()  # left as it was found
            finally:
                gc.enable()

    run(body())


def test_the_collector_stays_off_until_the_last_of_overlapping_waves_is_out(tmp: Path) -> None:
    """A wave that begins while another goes out finds the collector off: the first
    to be out must not turn it back on under the other (it did: the first wave had
    found it on)."""
    seen: list[tuple[str, bool]] = []

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.many]
            command = "sleep 60"
            replicas = 200

            [services.last]
            command = "sleep 60"
            """,
            start=False,
        ) as (sup, _rec):
            first = sup.start_services(["many"], then=lambda: seen.append(("many", gc.isenabled())))
            # Queued behind the first's 200: out after it.
            second = sup.start_services(
                ["last"], then=lambda: seen.append(("last", gc.isenabled()))
            )
            await asyncio.gather(first, second)
            assert seen == [("many", False), ("last", True)]
            assert gc.isenabled()

    run(body())


def test_a_spawned_process_is_recorded_with_its_start_time_without_reading_proc(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record (state.json, a re-exec) carries its process's start time, which tells
    it from a later process with the same pid. The spawn tells it, but for the
    spawns that straddle a clock tick (more of them on a busy machine): /proc is
    read for those only, once each (a read for every instance was a tenth of the
    loop's work per instance in a big start)."""
    reads: list[int] = []
    told: list[int | None] = []

    def counted(pid: int) -> int | None:
        reads.append(pid)
        return process_start_time(pid)

    def telling(before: int, after: int) -> int | None:
        started = start_time_between(before, after)
        told.append(started)
        return started

    monkeypatch.setattr(supervisor, "process_start_time", counted)
    monkeypatch.setattr(spawn, "start_time_between", telling)

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.w]
            command = "sleep 60"
            replicas = 20
            """,
        ) as (sup, _rec):
            for managed in sup.instances.values():
                pid = managed.core.pid
                assert pid is not None
                assert sup.record(managed).start_time == process_start_time(pid)

    run(body())
    unknown = told.count(None)
    if unknown == len(told):
        pytest.skip("every spawn straddled a clock tick (a very busy machine): none told")
    assert len(reads) == unknown


@pytest.mark.parametrize("why", ["echo why >&2", "printf why >&2"])
def test_an_exit_is_published_after_the_last_lines_of_its_process(tmp: Path, why: str) -> None:
    """The herd hears of an exit before its process's pipes are drained (its respawn
    goes first), but the change that says it ended still comes after the lines the
    process wrote last, and its last stderr line still says why: also one it never
    ended with a newline (the stderr pump is drained, not closed, before the herd hears
    of the exit; the pipe's end ends that line all the same)."""
    fifo = tmp / "go"
    os.mkfifo(fifo)

    async def body() -> None:
        async with supervised(
            tmp,
            f"""
            [services.x]
            command = "sh -c 'read go < {fifo}; echo last; {why}; exit 3'"
            restart = "never"
            """,
        ) as (sup, rec):
            seen: list[tuple[State, list[str]]] = []
            sup.changes.subscribe(lambda _m, _old, new, _ev: seen.append((new, rec.text("x"))))
            await until(lambda: sup.instances["x"].core.pid is not None)
            pid = sup.instances["x"].core.pid
            assert pid is not None
            end_while_the_loop_waits(fifo, pid)
            await until(lambda: any(new is State.EXITED for new, _ in seen))
            lines = next(lines for new, lines in seen if new is State.EXITED)
            assert sorted(lines) == ["last", "why"]
            assert sup.instances["x"].core.message == "exited with code 3: why"

    run(body())


def end_while_the_loop_waits(fifo: Path, pid: int) -> None:
    """Let the process write its last lines and end, holding the loop (no await):
    its lines and its exit are then there at once, and the exit is handled before
    the pipes are read."""
    with open(fifo, "w") as go:
        go.write("go\n")
    deadline = time.monotonic() + 10.0
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the process did not end"
        time.sleep(0.001)


def test_no_collection_runs_on_the_way_from_an_exit_to_its_respawn(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cyclic collector is off from the exit's reap until its respawn is handed to
    the spawning thread, and on again (as it was) once it is."""
    seen: list[bool] = []
    start = Spawner.start

    def noting(self: Spawner[Managed], *args: Any, **kwargs: Any) -> None:
        seen.append(gc.isenabled())
        start(self, *args, **kwargs)

    monkeypatch.setattr(Spawner, "start", noting)

    async def body() -> None:
        async with supervised(
            tmp,
            """
            [services.x]
            command = "sleep 600"
            backoff = { initial = 0 }
            """,
        ) as (sup, _rec):
            await until(lambda: sup.instances["x"].core.pid is not None)
            pid = sup.instances["x"].core.pid
            assert pid is not None
            assert gc.isenabled()
            os.kill(pid, signal.SIGKILL)
            await until(lambda: sup.instances["x"].core.pid not in (None, pid))
            assert gc.isenabled()

    run(body())
    assert len(seen) == 2  # the first start (in a wave, which turns it off too), the respawn
    assert not seen[1]
