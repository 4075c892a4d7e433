"""Readiness probes, health checks and dependency conditions with real servers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import pytest

from herdsman.runtime.probes import check_http, check_tcp
from tests.conftest import alive
from tests.runtime.harness import until
from tests.runtime.test_daemon import running, state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_http_readiness_gates_a_dependent(tmp: Path) -> None:
    port = free_port()
    marks = tmp / "marks"
    go = tmp / "go"  # until it exists, the server does not start, however slow the machine

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.api]
            command = ["sh", "-c", "while [ ! -e {go} ]; do sleep 0.02; done; exec python3 -m http.server {port} --bind 127.0.0.1"]
            start_seconds = 0
            ready = {{ http = "http://127.0.0.1:{port}/", interval = "100ms" }}
            [services.web]
            command = ["sh", "-c", "date +%s.%N > {marks}; exec sleep 60"]
            depends_on = {{ api = "ready" }}
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: daemon.instance("api")["pid"] is not None)
            api = daemon.instance("api")
            assert (api["state"], api["ready"]) == ("starting", False)
            web = daemon.instance("web")
            assert (web["state"], web["pid"], web["message"]) == (
                "starting",
                None,
                "waiting for api (ready)",
            )
            began = time.time()
            go.touch()
            await until(lambda: state(daemon, "web") == "running")
            await until(lambda: marks.exists() and marks.read_text().strip())
            assert daemon.instance("api")["ready"] is True
            assert await check_http(f"http://127.0.0.1:{port}/", 2) is None
            assert float(marks.read_text()) >= began  # not before the server could answer

    asyncio.run(body())


def test_tcp_exec_and_log_probes(tmp: Path) -> None:
    port = free_port()
    go = tmp / "go"  # until it exists, no service is ready, however slow the machine

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.tcp]
            command = ["python3", "-c", "import os, socket, time\\nwhile not os.path.exists('{go}'): time.sleep(0.02)\\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"]
            start_seconds = 0
            ready = {{ tcp = "127.0.0.1:{port}", interval = "100ms" }}
            [services.exec]
            command = "sleep 60"
            start_seconds = 0
            ready = {{ exec = "test -f {go}", interval = "100ms" }}
            [services.log]
            command = ["sh", "-c", "echo booting; while [ ! -e {go} ]; do sleep 0.02; done; echo 'server listening on 8080'; exec sleep 60"]
            start_seconds = 0
            ready = {{ log = "listening on \\\\d+" }}
            """,
        ) as daemon:
            await until(lambda: all(d["pid"] for d in daemon.instances()))
            assert [d["ready"] for d in daemon.instances()] == [False, False, False]
            go.touch()
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()), 10)
            assert all(d["ready"] for d in daemon.instances())
            assert await check_tcp(("127.0.0.1", port), 1) is None

    asyncio.run(body())


def test_completed_gates_on_a_one_shot_task_and_says_when_it_failed(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.migrate]
            command = ["sh", "-c", "sleep 0.2; echo migrated"]
            restart = "never"
            [services.web]
            command = "sleep 60"
            depends_on = { migrate = "completed" }
            start_seconds = 0
            [services.broken]
            command = ["sh", "-c", "exit 3"]
            restart = "never"
            [services.stuck]
            command = "sleep 60"
            depends_on = { broken = "completed" }
            """,
        ) as daemon:
            await until(lambda: state(daemon, "web") == "running", timeout=10)
            assert daemon.instance("migrate")["exit_code"] == 0
            await until(lambda: state(daemon, "broken") == "exited")
            stuck = daemon.instance("stuck")
            assert (stuck["state"], stuck["pid"]) == ("starting", None)
            assert stuck["message"] == "cannot start: depends on broken, which exited with code 3"
            assert stuck["blocked"] == "depends on broken, which exited with code 3"

    asyncio.run(body())


def test_failing_health_check_restarts_the_instance(tmp: Path) -> None:
    alive_flag = tmp / "alive"

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.app]
            command = ["sh", "-c", "touch {alive_flag}; exec sleep 60"]
            start_seconds = 0
            health = {{ exec = "test -f {alive_flag}", interval = "100ms", failure_threshold = 2, initial_delay = "500ms" }}
            """,
        ) as daemon:
            # initial_delay: the new process's first check comes after it recreated
            # the flag, so no failure of its own replaces the restart's reason.
            await until(lambda: daemon.instance("app")["health"] == "healthy")
            first = daemon.instance("app")["pid"]
            alive_flag.unlink()  # the app "hangs": its check starts failing
            await until(lambda: daemon.instance("app")["restarts"] == 1)
            app = daemon.instance("app")
            assert app["pid"] != first
            assert app["message"] == (
                f"health check failed: 'test -f {alive_flag}' exited with code 1"
            )
            # the new process recreated the flag: healthy again after its first checks
            await until(lambda: daemon.instance("app")["health"] == "healthy")

    asyncio.run(body())


def test_probe_helpers_explain_failures() -> None:
    async def body() -> None:
        port = free_port()
        assert await check_tcp(("127.0.0.1", port), 1) == (
            f"cannot connect to 127.0.0.1:{port}: Connection refused"
        )
        assert await check_http(f"http://127.0.0.1:{port}/x", 1) == (
            f"cannot connect to http://127.0.0.1:{port}/x: Connection refused"
        )

    asyncio.run(body())


def test_redis_behind_tcp_readiness_and_redis_cli_health(tmp: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    order = tmp / "order"

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.redis]
            command = "redis-server --port {port} --save '' --appendonly no"
            ready = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}
            health = {{ exec = "redis-cli -p {port} ping", interval = "200ms" }}
            [services.app]
            command = ["sh", "-c", "echo start app $(date +%s.%N) >> {order}; trap 'echo stop app $(date +%s.%N) >> {order}; exit 0' TERM; redis-cli -p {port} set k v; while :; do sleep 0.05; done"]
            depends_on = {{ redis = "ready" }}
            start_seconds = "100ms"
            """,
        ) as daemon:
            await until(lambda: state(daemon, "app") == "running", timeout=10)
            await until(lambda: daemon.instance("redis")["health"] == "healthy")
            await until(lambda: [e["line"] for e in daemon.logs("app", 5)] == ["OK"])
            await daemon.stop("*", wait=True)
            await until(lambda: len(order.read_text().splitlines()) == 2)
        lines = [line.split() for line in order.read_text().splitlines()]
        assert [(a, b) for a, b, _ in lines] == [("start", "app"), ("stop", "app")]

    asyncio.run(body())


def test_restart_with_restarts_a_dependent_after_its_dependency_comes_back(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.db]
            command = "sleep 60"
            start_seconds = "100ms"
            [services.app]
            command = "sleep 60"
            depends_on = ["db"]
            restart_with = ["db"]
            start_seconds = 0
            [services.bystander]
            command = "sleep 60"
            depends_on = ["db"]
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()))
            app_pid = daemon.instance("app")["pid"]
            bystander_pid = daemon.instance("bystander")["pid"]
            await daemon.restart("db", wait=True)
            await until(lambda: daemon.instance("app")["pid"] not in (None, app_pid))
            await until(lambda: state(daemon, "app") == "running")
            app = daemon.instance("app")
            assert (app["restarts"], app["message"]) == (1, "restarted with db")
            assert daemon.instance("bystander")["pid"] == bystander_pid

    asyncio.run(body())


def test_start_and_stop_order_from_timestamps_the_services_record(tmp: Path) -> None:
    order = tmp / "order"
    # The trap is set before "start" is written: the test stops web once it sees that.
    record = (
        "trap 'echo stop {name} $(date +%s.%N) >> " + str(order) + "; exit 0' TERM; "
        "echo start {name} $(date +%s.%N) >> " + str(order) + "; "
        "{wait}while :; do sleep 0.02; done"
    )
    db = record.format(name="db", wait="sleep 0.3; touch " + str(tmp / "db-ready") + "; ")
    web = record.format(name="web", wait="")
    cache = record.format(name="cache", wait="")

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.web]
            command = ["sh", "-c", "{web}"]
            depends_on = {{ db = "ready", cache = "started" }}
            start_seconds = 0
            [services.db]
            command = ["sh", "-c", "{db}"]
            ready = {{ exec = "test -f {tmp}/db-ready", interval = "50ms" }}
            [services.cache]
            command = ["sh", "-c", "{cache}"]
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: state(daemon, "web") == "running", timeout=10)
            await until(lambda: "start web" in order.read_text())
            await daemon.shutdown()
            assert await daemon.wait_for_shutdown()
        events = {
            f"{what} {name}": float(ts)
            for what, name, ts in (line.split() for line in order.read_text().splitlines())
        }
        ready_at = (tmp / "db-ready").stat().st_mtime
        assert events["start web"] >= ready_at  # waited for db to be ready
        assert events["stop web"] <= events["stop db"]  # dependents stop first
        assert events["stop web"] <= events["stop cache"]

    asyncio.run(body())


def test_a_probe_still_running_when_its_instance_stops_is_killed(tmp: Path) -> None:
    pidfile = tmp / "probe.pid"

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.slow]
            command = "sleep 60"
            start_seconds = 0
            ready = {{ exec = "sh -c 'echo $$$$ > {pidfile}; exec sleep 60'", timeout = "60s" }}
            """,
        ) as daemon:
            await until(lambda: pidfile.exists() and pidfile.read_text().strip())
            probe = int(pidfile.read_text())
            assert alive(probe)
            await daemon.stop("slow", wait=True)
            await until(lambda: not alive(probe))

    asyncio.run(body())


def test_an_instance_that_never_gets_healthy_ends_failed_by_the_start_limit(tmp: Path) -> None:
    async def body() -> None:
        async with running(
            tmp,
            """
            [services.sick]
            command = "sleep 60"
            start_seconds = 0
            health = { exec = "false", interval = "50ms", failure_threshold = 1 }
            start_limit = { burst = 2, interval = "60s" }
            """,
        ) as daemon:
            await until(lambda: state(daemon, "sick") == "failed", timeout=10)
            sick = daemon.instance("sick")
            assert (sick["pid"], sick["restarts"]) == (None, 2)
            assert sick["message"] == (
                "health check failed: 'false' exited with code 1; "
                "gave up after more than 2 restarts within 60s (start_limit)"
            )

    asyncio.run(body())
