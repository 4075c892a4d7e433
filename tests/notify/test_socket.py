"""The receiver itself: parsing, draining, descriptors, and the socket file's life."""

from __future__ import annotations

import array
import asyncio
import errno
import logging
import os
import socket
import stat
from pathlib import Path

import pytest

from herdsman.runtime.notify import Access, NotifyMessage, NotifySocket, access_for, parse_fields

from .helpers import LOG, Inbox, receiving


def sender() -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def test_parse_fields_skips_what_is_not_key_value() -> None:
    payload = b"READY=1\n\ngarbage\n=novalue\nSTATUS=a=b\nSTATUS=later\nERRNO=\n"
    assert parse_fields(payload) == {"READY": "1", "STATUS": "later", "ERRNO": ""}
    assert parse_fields(b"") == {}
    assert parse_fields(b"STATUS=caf\xe9") == {"STATUS": "caf\ufffd"}


def test_every_message_kind_arrives_parsed_with_the_senders_credentials(tmp: Path) -> None:
    datagrams = [
        b"WATCHDOG=1",
        b"MAINPID=4242\nWATCHDOG_USEC=2000000",
        b"STOPPING=1",
        b"RELOADING=1\nMONOTONIC_USEC=123\nEXTEND_TIMEOUT_USEC=5000000",
        b"junk line\nREADY=1\n\nSTATUS=one\nSTATUS=two\n",
    ]

    async def body() -> list[NotifyMessage]:
        with receiving(tmp / "notify") as (sock, inbox), sender() as out:
            for datagram in datagrams:
                out.sendto(datagram, sock.address)
            return await inbox.wait_for(len(datagrams))

    messages = asyncio.run(body())
    assert [m.fields for m in messages] == [
        {"WATCHDOG": "1"},
        {"MAINPID": "4242", "WATCHDOG_USEC": "2000000"},
        {"STOPPING": "1"},
        {"RELOADING": "1", "MONOTONIC_USEC": "123", "EXTEND_TIMEOUT_USEC": "5000000"},
        {"READY": "1", "STATUS": "two"},
    ]
    assert {(m.pid, m.uid) for m in messages} == {(os.getpid(), os.getuid())}


def test_one_wakeup_drains_every_pending_datagram(tmp: Path) -> None:
    pending = 10  # what a Unix datagram queue holds by default (net.unix.max_dgram_qlen)

    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox), sender() as out:
            for i in range(pending):
                out.sendto(f"STATUS={i}".encode(), sock.address)
            # One loop iteration to notice readiness, one to run the callback: had it
            # read one datagram per wake-up, most would still be queued.
            for _ in range(3):
                await asyncio.sleep(0)
            assert [m.fields["STATUS"] for m in inbox.messages] == [str(i) for i in range(pending)]

    asyncio.run(body())


async def wait_closed(read_end: int) -> None:
    """Until the pipe's last write end is closed (end of file on `read_end`)."""
    closed = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(read_end, closed.set)
    try:
        async with asyncio.timeout(5):
            await closed.wait()
    finally:
        loop.remove_reader(read_end)
    assert os.read(read_end, 1) == b""


def send_with_fd(out: socket.socket, payload: bytes, fd: int, address: str) -> None:
    fds = array.array("i", [fd])
    out.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())], 0, address)


def test_barrier_is_answered_after_what_came_before_it(tmp: Path) -> None:
    async def body() -> None:
        seen_at_barrier: list[list[NotifyMessage]] = []
        with receiving(tmp / "notify") as (sock, inbox), sender() as out:
            read_end, write_end = os.pipe()
            try:
                out.sendto(b"READY=1\nSTATUS=up", sock.address)
                send_with_fd(out, b"BARRIER=1", write_end, sock.address)
                os.close(write_end)
                await wait_closed(read_end)
                seen_at_barrier.append(list(inbox.messages))
            finally:
                os.close(read_end)
        # The barrier itself is no message; what preceded it was delivered first.
        assert [m.fields for m in seen_at_barrier[0]] == [{"READY": "1", "STATUS": "up"}]

    asyncio.run(body())


def test_descriptors_sent_with_other_messages_are_closed(tmp: Path) -> None:
    async def body() -> None:
        with receiving(tmp / "notify") as (sock, inbox), sender() as out:
            read_end, write_end = os.pipe()
            try:
                send_with_fd(out, b"FDSTORE=1\nFDNAME=db", write_end, sock.address)
                os.close(write_end)
                await wait_closed(read_end)
            finally:
                os.close(read_end)
            (msg,) = await inbox.wait_for(1)
            assert msg.fields == {"FDSTORE": "1", "FDNAME": "db"}

    asyncio.run(body())


def test_an_oversized_datagram_is_ignored_and_the_next_one_arrives(
    tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> list[NotifyMessage]:
        with receiving(tmp / "notify") as (sock, inbox), sender() as out:
            out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            out.sendto(b"STATUS=" + b"x" * 70000, sock.address)
            out.sendto(b"READY=1", sock.address)
            return await inbox.wait_for(1)

    with caplog.at_level(logging.WARNING, LOG.name):
        (msg,) = asyncio.run(body())
    assert msg.fields == {"READY": "1"}
    assert "ignored a datagram from pid" in caplog.text
    assert "it is over 65536 bytes" in caplog.text


def test_a_datagram_without_credentials_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    # The kernel attaches credentials to everything sent to a SO_PASSCRED socket,
    # so this can only be shown by handing the receiver such a datagram directly.
    inbox: list[NotifyMessage] = []
    receiver = NotifySocket(Path("/nonexistent"), inbox.append, LOG)

    async def body() -> None:  # on a loop, as always: warnings are throttled by timers
        receiver._dispatch(b"READY=1", [], 0)

    with caplog.at_level(logging.WARNING, LOG.name):
        asyncio.run(body())
    assert inbox == []
    assert "without sender credentials" in caplog.text


def test_a_failing_callback_is_logged_and_later_messages_still_arrive(
    tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    delivered: list[NotifyMessage] = []

    arrived = asyncio.Event()

    def on_message(message: NotifyMessage) -> None:
        if message.fields.get("STATUS") == "boom":
            raise RuntimeError("boom")
        delivered.append(message)
        arrived.set()

    async def body() -> None:
        receiver = NotifySocket(tmp / "notify", on_message, LOG)
        receiver.open(asyncio.get_running_loop())
        try:
            with sender() as out:
                out.sendto(b"STATUS=boom", receiver.address)
                out.sendto(b"READY=1", receiver.address)
                async with asyncio.timeout(5):
                    await arrived.wait()
        finally:
            receiver.close()

    with caplog.at_level(logging.ERROR, LOG.name):
        asyncio.run(body())
    assert [m.fields for m in delivered] == [{"READY": "1"}]
    assert "handling a message from pid" in caplog.text


def test_the_socket_file_is_owner_only_and_close_removes_it(tmp: Path) -> None:
    path = tmp / "notify"

    async def body() -> None:
        receiver = NotifySocket(path, Inbox(), LOG)
        receiver.open(asyncio.get_running_loop())
        assert receiver.address == str(path)
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600  # every notifying instance runs as herdsman
        receiver.close()
        assert not path.exists()
        receiver.close()  # a second close is harmless
        with sender() as out, pytest.raises(FileNotFoundError):
            out.sendto(b"READY=1", str(path))

    asyncio.run(body())


def test_the_socket_is_opened_only_as_far_as_the_instances_users_need() -> None:
    me, my_group = os.geteuid(), os.getegid()
    assert access_for([]) == Access(0o600, None, frozenset({me}))
    assert access_for([(me, my_group)]) == Access(0o600, None, frozenset({me}))
    # Others who share a group: that group, not everyone.
    assert access_for([(me, my_group), (1001, 50), (1002, 50)]) == Access(
        0o660, 50, frozenset({me, 1001, 1002})
    )
    # Others with nothing in common: everyone may send, only their uids are read.
    assert access_for([(1001, 50), (1002, 51)]) == Access(0o666, None, frozenset({me, 1001, 1002}))


def test_a_stale_socket_file_is_replaced(tmp: Path) -> None:
    path = tmp / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(str(path))  # closed without unlinking, as by a daemon that died

    async def body() -> None:
        with receiving(path) as (sock, inbox), sender() as out:
            out.sendto(b"READY=1", sock.address)
            (msg,) = await inbox.wait_for(1)
            assert msg.fields == {"READY": "1"}

    asyncio.run(body())


def test_a_file_that_is_not_a_socket_is_left_alone(tmp: Path) -> None:
    path = tmp / "notify"
    path.write_text("not ours")

    async def body() -> None:
        receiver = NotifySocket(path, Inbox(), LOG)
        with pytest.raises(OSError, match=os.strerror(errno.EADDRINUSE)):
            receiver.open(asyncio.get_running_loop())

    asyncio.run(body())
    assert path.read_text() == "not ours"
