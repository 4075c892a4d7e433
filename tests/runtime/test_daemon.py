"""The Daemon's control operations against real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from herdsman.config import load_config
from herdsman.config.plan import compile_plan
from herdsman.core.signals import parse_signal
from herdsman.runtime import sampler as sampler_module
from herdsman.runtime.control import ControlError
from herdsman.runtime.daemon import Daemon
from herdsman.runtime.monitor import Sample, sample_tree
from tests.runtime.harness import until


@asynccontextmanager
async def running(tmp: Path, toml: str) -> AsyncIterator[Daemon]:
    path = tmp / "herdsman.toml"
    path.write_text(textwrap.dedent(toml))
    plan = compile_plan(load_config(path))
    async with asyncio.TaskGroup() as tasks:
        daemon = Daemon(plan, log=logging.getLogger("test"), tasks=tasks)
        daemon.open()
        await daemon.supervisor.start_services(None)  # every instance spawned
        try:
            yield daemon
        finally:
            await daemon.shutdown()
            await daemon.wait_for_shutdown()
            daemon.close()


def state(daemon: Daemon, name: str) -> str:
    return str(daemon.instance(name)["state"])


WEB = """
[services.web]
command = ["sh", "-c", 'echo "web {replica} up"; exec sleep 60']
replicas = 2
start_seconds = 0
[services.db]
command = ["sh", "-c", 'echo db up >&2; exec sleep 60']
start_seconds = 0
"""


def test_status_documents_and_pattern_matching(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()))
            doc = daemon.status()
            assert doc["daemon"]["config"] == str(tmp / "herdsman.toml")
            names = [d["name"] for d in doc["services"]]
            assert names == ["web.0", "web.1", "db"]
            # Under load the answer's sampling budget may be spent before web.0's turn:
            # its sample then comes in the background.
            web0 = await until(lambda: (d := daemon.instance("web.0"))["rss_bytes"] and d)
            assert set(web0) >= {
                "name", "service", "replica", "state", "pid", "ready", "health", "restarts",
                "exit_code", "exit_signal", "uptime", "cpu_percent", "rss_bytes", "message",
            }  # fmt: skip
            assert (web0["service"], web0["replica"], web0["ready"]) == ("web", 0, True)
            assert web0["rss_bytes"] > 0
            assert web0["uptime"] >= 0
            assert [m.name for m in daemon.requests.match("web")] == ["web.0", "web.1"]
            assert [m.name for m in daemon.requests.match("web.1")] == ["web.1"]
            assert [m.name for m in daemon.requests.match("*b*")] == ["web.0", "web.1", "db"]
            with pytest.raises(ControlError) as err:
                daemon.requests.match("nope*")
            assert (err.value.status, err.value.message) == (
                404,
                "no instance or service matches 'nope*'",
            )
            with pytest.raises(ControlError):
                daemon.instance("web")

    asyncio.run(body())


def test_the_log_says_each_spawn_and_state_change(
    tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's log lines of a start (see changelog.py), word for word."""

    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: state(daemon, "web.1") == "running")
            pid = daemon.supervisor.instances["web.1"].core.pid
            said = [r.getMessage() for r in caplog.records if r.name == "test"]
            start = said.index("web.1: stopped -> starting")
            assert said[start:].index(f"web.1: spawned pid {pid}") < said[start:].index(
                "web.1: starting -> running"
            )

    with caplog.at_level(logging.INFO, logger="test"):
        asyncio.run(body())


def test_an_answer_waits_for_few_samples_and_the_rest_come_in_the_background(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sampling as slow as under load: the answer takes the first SAMPLE_AT_ONCE
    # trees (the budget is spent by then) and shows nothing yet for the others.
    sampled: list[int] = []

    def slow_sample(pid: int, previous: Sample | None) -> Sample | None:
        sampled.append(pid)
        time.sleep(sampler_module.SAMPLE_BUDGET / 2)
        return sample_tree(pid, previous)

    monkeypatch.setattr(sampler_module, "sample_tree", slow_sample)
    monkeypatch.setattr(sampler_module, "SAMPLE_AT_ONCE", 4)

    async def body() -> None:
        async with running(
            tmp, "[services.w]\ncommand = 'sleep 60'\nreplicas = 12\nstart_seconds = 0\n"
        ) as daemon:
            await until(lambda: len(daemon.supervisor.instances) == 12)
            await until(lambda: all(m.core.pid for m in daemon.supervisor.instances.values()))
            first = daemon.instances()
            assert len(sampled) == 4
            assert [d["rss_bytes"] is not None for d in first] == [True] * 4 + [False] * 8
            await until(lambda: len(sampled) == 12)  # the pass went on by itself
            docs = daemon.instances()  # within SAMPLE_MAX_AGE: not sampled again
            assert len(sampled) == 12
            assert all(d["rss_bytes"] > 0 for d in docs)

    asyncio.run(body())


def test_an_answer_shows_recent_samples_and_refreshes_them_in_the_background(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampled: list[int] = []

    def counted(pid: int, previous: Sample | None) -> Sample | None:
        sampled.append(pid)
        return sample_tree(pid, previous)

    monkeypatch.setattr(sampler_module, "sample_tree", counted)

    async def body() -> None:
        async with running(
            tmp, "[services.w]\ncommand = 'sleep 60'\nreplicas = 3\nstart_seconds = 0\n"
        ) as daemon:
            await until(lambda: len(daemon.supervisor.instances) == 3)
            await until(lambda: all(m.core.pid for m in daemon.supervisor.instances.values()))
            first = daemon.instances()  # nothing to show yet: sampled for the answer
            assert len(sampled) == 3
            assert all(d["rss_bytes"] for d in first)
            asked = time.monotonic()
            await until(lambda: time.monotonic() > asked + sampler_module.SAMPLE_MAX_AGE)
            again = daemon.instances()  # due again, but recent enough to show at once
            assert len(sampled) == 3
            assert [d["rss_bytes"] for d in again] == [d["rss_bytes"] for d in first]
            await until(lambda: len(sampled) == 6)  # the pass, in the background

    asyncio.run(body())


def test_an_exit_storm_that_fills_the_wakeup_pipe_reports_nothing(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thousands of SIGCHLDs before the loop reads its wake-up pipe (a crash loop,
    # stopping a big herd): the pipe fills, which loses nothing (one byte is enough
    # to wake the loop, and the reaper drains every exit) and must not print a
    # traceback per signal.
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(str(u.err_msg)))

    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()))
            for _ in range(5000):  # without giving the loop a turn
                os.kill(os.getpid(), signal.SIGCHLD)
            await asyncio.sleep(0.1)
            assert all(d["state"] == "running" for d in daemon.instances())

    asyncio.run(body())
    assert unraisable == []


def test_stop_start_restart_with_wait(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: state(daemon, "web.1") == "running")
            old = daemon.instance("web.1")["pid"]
            result = await daemon.stop("web", wait=True)
            assert [d["state"] for d in result["instances"]] == ["stopped", "stopped"]
            assert state(daemon, "db") == "running"
            result = await daemon.start("web.1", wait=True)
            assert result["failed"] == []
            assert [d["state"] for d in result["instances"]] == ["running"]
            assert state(daemon, "web.0") == "stopped"
            result = await daemon.restart("web.1", wait=True)
            assert result["instances"][0]["pid"] not in (None, old)

    asyncio.run(body())


def test_start_reports_instances_that_fail(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.bad]
            command = "no-such-program-xyz"
            autostart = false
            """,
        ) as daemon:
            result = await daemon.start("bad", wait=True)
            assert result["failed"] == ["bad"]
            assert result["instances"][0]["message"] == (
                "cannot start: command 'no-such-program-xyz' not found in PATH"
            )

    asyncio.run(body())


def test_signal_reaches_the_process_group(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.hup]
            command = ["sh", "-c", 'trap "echo got-hup" HUP; echo ready; while :; do sleep 0.05; done']
            """,
        ) as daemon:
            await until(lambda: daemon.logs("hup", 10))
            daemon.signal("hup", "HUP")
            await until(lambda: "got-hup" in [e["line"] for e in daemon.logs("hup", 10)])
            with pytest.raises(ControlError) as err:
                daemon.signal("hup", "NOPE")
            assert err.value.status == 400

    asyncio.run(body())


def test_parse_signal_forms() -> None:
    assert parse_signal("HUP") == signal.SIGHUP
    assert parse_signal("sigterm") == signal.SIGTERM
    assert parse_signal(9) == signal.SIGKILL
    assert parse_signal("15") == signal.SIGTERM
    assert parse_signal(40) == 40  # a real-time signal: a number without a name
    for bad in ("BOGUS", "999", 0, signal.NSIG):
        with pytest.raises(ValueError, match=r"is not a signal (name|number)"):
            parse_signal(bad)


def test_logs_merge_in_time_order_and_follow(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: len(daemon.logs(None, 100)) == 3)
            lines = daemon.logs(None, 100)
            assert sorted(e["line"] for e in lines) == ["db up", "web 0 up", "web 1 up"]
            assert [e["time"] for e in lines] == sorted(e["time"] for e in lines)
            assert {e["stream"] for e in lines if e["instance"] == "db"} == {"err"}
            assert len(daemon.logs("web", 1)) == 1

            # Subscribed at the call: lines that come before the first anext count.
            follower = daemon.follow_logs("web.0")
            await daemon.restart("web.0", wait=True)
            await until(lambda: len(daemon.logs("web.0", 10)) == 2)
            entry = await asyncio.wait_for(anext(follower), 5)
            assert (entry["instance"], entry["line"]) == ("web.0", "web 0 up")
            await follower.aclose()

    asyncio.run(body())


def test_events_stream_state_changes(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: state(daemon, "db") == "running")
            events = daemon.events()
            collected: list[dict[str, object]] = []

            async def collect() -> None:
                async for event in events:
                    collected.append(event)
                    if event["state"] == "running":
                        return

            task = asyncio.ensure_future(collect())
            await asyncio.sleep(0)
            await daemon.restart("db", wait=True)
            await asyncio.wait_for(task, 5)
            states = [e["state"] for e in collected if e["instance"] == "db"]
            assert states[0] == "stopping"
            assert states[-1] == "running"
            assert "stopped" in states

    asyncio.run(body())


def test_memory_hog_is_restarted_by_memory_limit(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.hog]
            command = ["python3", "-c", 'import time; x = b"x" * (80 * 2**20); print("hogging", flush=True); time.sleep(60)']
            memory_limit = "40MiB"
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: daemon.logs("hog", 5))
            first = daemon.instance("hog")["pid"]
            await until(lambda: daemon.instance("hog")["restarts"] >= 1, timeout=20)
            doc = daemon.instance("hog")
            assert doc["pid"] != first
            assert doc["message"].startswith("memory limit exceeded (")
            assert doc["message"].endswith(" MiB > 40 MiB)")

    asyncio.run(body())


def test_metrics_are_prometheus_text(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: state(daemon, "db") == "running")
            body, content_type = daemon.metrics()
            text = body.decode()
            assert content_type.startswith("text/plain")
            assert 'herdsman_instance_up{instance="db",service="db"} 1.0' in text
            assert (
                'herdsman_instance_state{instance="web.0",service="web",state="running"} 1.0'
                in text
            )
            assert "herdsman_daemon_rss_bytes " in text

    asyncio.run(body())
