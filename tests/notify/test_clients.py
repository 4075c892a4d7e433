"""Real sd_notify clients against the receiver: who the kernel says sent each message."""

from __future__ import annotations

import asyncio
import os
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from herdsman.runtime.notify import sender_belongs

from .helpers import PYTHON, can_fake_credentials, children, needs_systemd_notify, receiving


def script(path: Path, body: str) -> list[str]:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return [str(path)]


@needs_systemd_notify
def test_systemd_notify_run_as_the_instance_itself_names_its_parent(tmp: Path) -> None:
    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                child = kids.start(["systemd-notify", "--ready", "--status=warming up"])
                (msg,) = await inbox.wait_for(1)
                # Exit 0: the barrier was answered (unanswered for its 5 s, systemd-notify
                # says "Failed to invoke barrier: Connection timed out" and exits 1).
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1", "STATUS": "warming up"}
        assert msg.uid == os.getuid()
        if can_fake_credentials():
            # Privileged, it reports its parent — here the test, under herdsman the
            # daemon — which is in no instance's session.
            assert msg.pid == os.getpid()
            assert not sender_belongs(msg.pid, child.pid)
        else:
            assert msg.pid == child.pid
            assert sender_belongs(msg.pid, child.pid)

    asyncio.run(body())


@needs_systemd_notify
def test_shell_script_calling_systemd_notify_belongs(tmp: Path) -> None:
    argv = script(
        tmp / "svc",
        """\
        systemd-notify --ready --status="warming up"
        exit 0
        """,
    )

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                child = kids.start(argv)
                (msg,) = await inbox.wait_for(1)
                assert inbox.belongs(msg, child.pid)
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1", "STATUS": "warming up"}
        if can_fake_credentials():
            assert msg.pid == child.pid  # the script, not the helper

    asyncio.run(body())


@needs_systemd_notify
def test_systemd_notify_from_a_subshell_belongs(tmp: Path) -> None:
    argv = script(
        tmp / "svc",
        """\
        ( systemd-notify READY=1; echo "subshell $?" >/dev/null ) &
        wait
        """,
    )

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                child = kids.start(argv)
                (msg,) = await inbox.wait_for(1)
                assert inbox.belongs(msg, child.pid)
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1"}
        assert msg.pid != child.pid  # the subshell (or the helper), a grandchild

    asyncio.run(body())


@needs_systemd_notify
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_unprivileged_systemd_notify_names_itself_and_belongs(tmp: Path) -> None:
    tmp.chmod(0o711)  # the service user must reach the socket inside
    argv = script(tmp / "svc", "systemd-notify --ready\n")
    nobody = 65534

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                setpriv = ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
                child = kids.start([*setpriv, *argv])
                (msg,) = await inbox.wait_for(1)
                assert inbox.belongs(msg, child.pid)
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1"}
        assert msg.uid == nobody
        # Faking its parent's pid is refused, so it falls back to its own.
        assert msg.pid != child.pid

    asyncio.run(body())


SDNOTIFY = "import sdnotify; sdnotify.SystemdNotifier(debug=True).notify('READY=1\\nSTATUS=ok')"


def test_sdnotify_package_child_belongs(tmp: Path) -> None:
    pytest.importorskip("sdnotify")

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                child = kids.start([PYTHON, "-c", SDNOTIFY])
                (msg,) = await inbox.wait_for(1)
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1", "STATUS": "ok"}
        assert msg.pid == child.pid
        # Holds even once the child is reaped: the main pid needs no lookup.
        assert inbox.belongs(msg, child.pid)

    asyncio.run(body())


def test_sdnotify_on_an_abstract_socket(tmp: Path) -> None:
    pytest.importorskip("sdnotify")
    name = Path(f"@herdsman-test/{uuid.uuid4().hex}")

    async def body() -> None:
        with receiving(name) as (sock, inbox):
            assert sock.address == str(name)
            async with children(sock.address) as kids:
                child = kids.start([PYTHON, "-c", SDNOTIFY])
                (msg,) = await inbox.wait_for(1)
                assert await kids.exited(child) == 0
        assert msg.fields == {"READY": "1", "STATUS": "ok"}
        assert msg.pid == child.pid

    asyncio.run(body())


@needs_systemd_notify
def test_process_in_another_session_does_not_belong(tmp: Path) -> None:
    stranger = script(tmp / "stranger", "systemd-notify READY=1\n")

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                instance = kids.start(["sleep", "60"])
                other = kids.start(stranger)
                (msg,) = await inbox.wait_for(1)
                assert not inbox.belongs(msg, instance.pid)
                assert inbox.belongs(msg, other.pid)
                # Nor does the daemon's own session count for an instance.
                assert not sender_belongs(os.getpid(), instance.pid)
                assert await kids.exited(other) == 0
        assert msg.fields == {"READY": "1"}

    asyncio.run(body())


def test_a_reaped_sender_does_not_belong_unless_it_is_the_main_process() -> None:
    gone = asyncio.run(_reaped_pid())
    assert not sender_belongs(gone, os.getpid())
    assert sender_belongs(gone, gone)
    assert not sender_belongs(0, gone)
    assert not sender_belongs(gone, 0)


async def _reaped_pid() -> int:
    async with children("") as kids:
        child = kids.start(["true"])
        await kids.exited(child)
        return child.pid


BURST = """\
import os, socket
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range({count}):
    sock.sendto(f"STATUS={{i}}".encode(), os.environ["NOTIFY_SOCKET"])
"""


def test_a_burst_from_a_child_arrives_whole_and_in_order(tmp: Path) -> None:
    count = 2000

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox):
            async with children(sock.address) as kids:
                child = kids.start([PYTHON, "-c", BURST.format(count=count)])
                messages = await inbox.wait_for(count, timeout=10)
                assert await kids.exited(child) == 0
        assert [m.fields["STATUS"] for m in messages] == [str(i) for i in range(count)]
        assert {m.pid for m in messages} == {child.pid}

    asyncio.run(body())
