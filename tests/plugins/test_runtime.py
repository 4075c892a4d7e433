"""Hooks and plugins inside an in-process daemon: bounded queues, blocking plugins,
protocol violations, plugins that break after `check` passed, webhooks that fail,
and hooks that change on reload."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from herdsman.plugins import HOOKS
from herdsman.runtime.hooks import QUEUE_LIMIT, post_json
from herdsman.runtime.plugins import PluginDisabled, Plugins
from tests.runtime.harness import until
from tests.runtime.test_daemon import running, state


@pytest.fixture
def module(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A uniquely named, importable module for the test to fill in."""
    name = f"hm_rt_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp))
    return name, tmp / f"{name}.py"


def test_a_slow_hook_holds_at_most_a_bounded_queue(
    tmp: Path, module: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    name, source = module
    source.write_text(
        textwrap.dedent(
            """
            import asyncio
            seen = []
            gate = asyncio.Event()

            async def slow(event):
                seen.append(event["instance"])
                await gate.wait()
            """
        )
    )
    replicas = QUEUE_LIMIT + 50

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [settings]
            plugins = ["{name}:slow"]
            [[hooks]]
            on = "exited"
            plugin = "slow"
            timeout = "60s"
            [services.task]
            command = "true"
            restart = "never"
            replicas = {replicas}
            """,
        ) as daemon:
            plugin = __import__(name)
            await until(
                lambda: all(state(daemon, f"task.{i}") == "exited" for i in range(replicas))
            )
            await until(lambda: plugin.seen)
            # The supervisor was not held up: every instance exited and is shown so,
            # while the hook still sits on its first event.
            assert len(plugin.seen) == 1
            plugin.gate.set()
            # One event in hand and QUEUE_LIMIT queued at most (fewer than that when
            # the first burst of exits came before the worker took its first event).
            await until(lambda: len(plugin.seen) >= QUEUE_LIMIT)
            await asyncio.sleep(0.2)
            assert QUEUE_LIMIT <= len(plugin.seen) <= QUEUE_LIMIT + 1

    with caplog.at_level(logging.WARNING, logger="test"):
        asyncio.run(body())
    behind = [r for r in caplog.records if "events behind" in r.getMessage()]
    assert len(behind) == 1
    assert behind[0].getMessage() == (
        f"hook hooks[0] is {QUEUE_LIMIT} events behind: dropping new events until it catches up"
    )


def test_a_blocking_sync_hook_never_stalls_the_event_loop(
    tmp: Path, module: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    name, source = module
    source.write_text("import time\n\ndef stuck(event):\n    time.sleep(1.5)\n")

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [settings]
            plugins = ["{name}:stuck"]
            [[hooks]]
            on = ["running", "stopping", "stopped"]
            plugin = "stuck"
            timeout = "200ms"
            [services.web]
            command = ["sleep", "60"]
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: state(daemon, "web") == "running")
            worst, end = 0.0, time.monotonic() + 0.6
            while time.monotonic() < end:
                began = time.monotonic()
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - began)
            assert worst < 0.5  # on the loop, the hook would hold it for 1.5 s at a time

    with caplog.at_level(logging.WARNING, logger="test"):
        asyncio.run(body())
    timeouts = [r.getMessage() for r in caplog.records if "timed out" in r.getMessage()]
    assert timeouts[0].endswith("plugin 'stuck' timed out after 0.2s")


def test_a_probe_that_breaks_its_protocol_is_disabled(tmp: Path, module: tuple[str, Path]) -> None:
    name, source = module
    source.write_text("async def weird(info):\n    return 42\n")

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [settings]
            plugins = ["{name}:weird"]
            [services.web]
            command = ["sleep", "60"]
            ready = {{ plugin = "weird", interval = "50ms" }}
            [services.other]
            command = ["sleep", "60"]
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: "disabled" in daemon.instance("web")["message"])
            assert daemon.instance("web")["message"] == (
                "readiness probe stopped: probe plugin 'weird' is disabled: it returned 42;"
                " a probe returns True, False, None, a message or (passed, message)"
            )
            assert state(daemon, "other") == "running"

    asyncio.run(body())


def test_a_plugin_that_cannot_be_loaded_in_the_daemon_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # `check` imports plugins first, but the code on disk may change before the daemon
    # (or a reload) loads it.
    missing = f"hm_gone_{uuid.uuid4().hex[:8]}"
    plugins = Plugins((f"{missing}:notify",), logging.getLogger("test"))
    with caplog.at_level(logging.ERROR, logger="test"):
        for _ in range(3):
            with pytest.raises(PluginDisabled) as caught:
                plugins.load(HOOKS, "notify")
    assert str(caught.value) == (
        f"hook plugin 'notify' is disabled: cannot import {missing!r}:"
        f" ModuleNotFoundError: No module named {missing!r}"
    )
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None  # logged with its traceback


def test_webhook_failures_are_one_sentence() -> None:
    async def body() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            url = f"http://127.0.0.1:{port}/hook"
            assert await post_json(url, b"{}", 2) == f"{url} answered HTTP 500"
        closed = f"http://127.0.0.1:{port}/hook"
        assert (
            await post_json(closed, b"{}", 2) == f"cannot connect to {closed}: Connection refused"
        )

    asyncio.run(body())


def test_hooks_follow_a_reload(tmp: Path) -> None:
    stopped = tmp / "stopped.txt"
    service = """
        [services.web]
        command = ["sleep", "60"]
        start_seconds = 0
        """

    async def body() -> None:
        async with running(tmp, service) as daemon:
            await until(lambda: state(daemon, "web") == "running")
            (tmp / "herdsman.toml").write_text(
                textwrap.dedent(service)
                + textwrap.dedent(
                    """
                    [[services.web.hooks]]
                    on = "stopped"
                    shell = true
                    exec = 'echo "$HERDSMAN_EVENT_INSTANCE was $HERDSMAN_EVENT_PREVIOUS" > stopped.txt'
                    """
                )
            )
            result = await daemon.reload()
            assert result["unchanged"] == ["web"]  # a new hook restarts nothing
            await daemon.stop("web", wait=True)
            await until(lambda: stopped.exists() and stopped.read_text())
            assert stopped.read_text() == "web was stopping\n"

    asyncio.run(body())


def test_a_command_nobody_waits_for_any_more_is_killed(tmp: Path) -> None:
    # A hook or probe command whose task is cancelled (the instance stopped, the daemon
    # closed) must not outlive it; the leak check of every test would see it.
    started = tmp / "started"

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.web]
            command = ["sleep", "60"]
            start_seconds = 0
            health = {{ exec = "sh -c 'touch {started}; exec sleep 60'", timeout = "60s" }}
            """,
        ) as daemon:
            await until(started.exists)
            await daemon.stop("web", wait=True)

    asyncio.run(body())
