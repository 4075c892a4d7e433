"""sd_notify readiness through the daemon, with the real clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from herdsman.runtime.supervisor import Supervisor
from tests.runtime.harness import until
from tests.runtime.test_daemon import running, state


def test_systemd_notify_from_a_script_and_sdnotify_make_instances_ready(tmp: Path) -> None:
    if shutil.which("systemd-notify") is None:
        pytest.skip("systemd-notify is not installed (.ci/run installs it)")
    pytest.importorskip("sdnotify")
    go = tmp / "go"  # until it exists, neither says READY=1, however slow the machine

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.script]
            command = ["sh", "-c", "while [ ! -e {go} ]; do sleep 0.02; done; systemd-notify --ready --status='warmed up'; exec sleep 60"]
            ready = {{ notify = true }}
            start_seconds = 0
            [services.py]
            command = ["{sys.executable}", "-c", "import os, sdnotify, time\\nwhile not os.path.exists('{go}'): time.sleep(0.02)\\nsdnotify.SystemdNotifier().notify('READY=1'); time.sleep(60)"]
            ready = {{ notify = true }}
            start_seconds = 0
            [services.web]
            command = "sleep 60"
            depends_on = {{ script = "ready", py = "ready" }}
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: daemon.instance("script")["pid"] is not None)
            assert daemon.instance("script")["state"] == "starting"
            assert daemon.instance("web")["message"] == "waiting for script (ready), py (ready)"
            go.touch()
            await until(lambda: state(daemon, "web") == "running")
            script = daemon.instance("script")
            assert (script["state"], script["ready"], script["message"]) == (
                "running",
                True,
                "warmed up",
            )
            assert daemon.instance("py")["ready"] is True

    asyncio.run(body())


def test_ready_said_before_the_loop_took_in_the_spawn_is_not_lost(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process can send READY=1 before the loop has taken in its spawn's outcome
    (the spawning thread's word comes on its own fd, in any order with the notify
    socket's, and late when that thread waits for a CPU): it still counts."""
    woken = Supervisor._woken

    def late(self: Supervisor) -> None:
        self._spawner.woken()  # the wake fd read, so it does not fire again meanwhile
        asyncio.get_running_loop().call_later(2.0, woken, self)

    monkeypatch.setattr(Supervisor, "_woken", late)
    ready_at_once = (
        "import os, socket, time; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)"
        ".sendto(b'READY=1', os.environ['NOTIFY_SOCKET']); time.sleep(60)"
    )

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.early]
            command = [{json.dumps(sys.executable)}, "-c", {json.dumps(ready_at_once)}]
            ready = {{ notify = true }}
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: daemon.instance("early")["ready"] is True, timeout=10)
            assert state(daemon, "early") == "running"

    asyncio.run(body())


def test_a_foreign_process_cannot_declare_an_instance_ready(tmp: Path) -> None:
    if shutil.which("systemd-notify") is None:
        pytest.skip("systemd-notify is not installed (.ci/run installs it)")

    async def body() -> None:
        async with running(
            tmp,
            """
            [services.quiet]
            command = "sleep 60"
            ready = { notify = true }
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: daemon.instance("quiet")["pid"] is not None)
            # Same NOTIFY_SOCKET, but its own session: not part of the instance.
            # systemd-notify waits (BARRIER=1) until the daemon has handled its
            # message, so once it returns the verdict is in.
            inst = daemon.supervisor.instances["quiet"].plan
            code, _ = await daemon.supervisor.run_command(inst, ("systemd-notify", "--ready"), 10)
            assert code == 0
            quiet = daemon.instance("quiet")
            assert (quiet["state"], quiet["ready"]) == ("starting", False)

    asyncio.run(body())


def test_a_missed_watchdog_restarts_the_instance(tmp: Path) -> None:
    pytest.importorskip("sdnotify")
    script = tmp / "pinger.py"
    script.write_text(
        "import os, sdnotify, time\n"
        "n = sdnotify.SystemdNotifier()\n"
        "print('usec', os.environ['WATCHDOG_USEC'], flush=True)\n"
        "n.notify('READY=1')\n"
        "for _ in range(6):\n"
        "    time.sleep(0.1)\n"
        "    n.notify('WATCHDOG=1')\n"
        "time.sleep(60)  # hangs: no more pings\n"
    )

    async def body() -> None:
        async with running(
            tmp,
            f"""
            [services.pinger]
            command = ["{sys.executable}", "{script}"]
            ready = {{ notify = true, watchdog = "400ms" }}
            start_seconds = 0
            """,
        ) as daemon:
            await until(lambda: state(daemon, "pinger") == "running")
            first = daemon.instance("pinger")["pid"]
            loop = asyncio.get_running_loop()
            began = loop.time()
            await until(lambda: daemon.instance("pinger")["restarts"] == 1, timeout=10)
            # it pinged for ~0.6 s, then the 0.4 s watchdog ran out
            assert loop.time() - began >= 0.6
            pinger = daemon.instance("pinger")
            assert pinger["pid"] != first
            assert pinger["message"] == "watchdog: no WATCHDOG=1 within 0.4s"
            assert [e["line"] for e in daemon.logs("pinger", 1)] == ["usec 400000"]

    asyncio.run(body())
