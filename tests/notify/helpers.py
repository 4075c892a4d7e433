"""Run a NotifySocket on the test's event loop and collect what it delivers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from herdsman.runtime.notify import NotifyMessage, NotifySocket, access_for, sender_belongs

LOG = logging.getLogger("herdsman.notify.test")
# Generous, as conftest.wait_for is: a wait that holds ends at once, and a loaded
# machine can take seconds to start an interpreter.
EXIT_WAIT = 15.0  # seconds a notifying client may take to exit
PYTHON = sys.executable
CAP_SYS_ADMIN = 21

needs_systemd_notify = pytest.mark.skipif(
    shutil.which("systemd-notify") is None,
    reason="systemd-notify is not installed (Debian package: systemd)",
)


def can_fake_credentials() -> bool:
    """Whether this process may put another pid in SCM_CREDENTIALS (CAP_SYS_ADMIN)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


STARTED: list[int] = []  # every child the tests started, for Inbox's verdicts


class Inbox:
    """The `on_message` callback: keeps every message and wakes whoever waits."""

    def __init__(self) -> None:
        self.messages: list[NotifyMessage] = []
        self._verdicts: dict[int, dict[int, bool]] = {}
        self._arrived = asyncio.Event()

    def __call__(self, message: NotifyMessage) -> None:
        # Judged now, as the daemon does: a sender that has exited by the time the
        # test looks could no longer be looked up.
        self._verdicts[id(message)] = {pid: sender_belongs(message.pid, pid) for pid in STARTED}
        self.messages.append(message)
        self._arrived.set()

    def belongs(self, message: NotifyMessage, main_pid: int) -> bool:
        """`sender_belongs(message.pid, main_pid)` as it was when the message arrived."""
        return self._verdicts[id(message)][main_pid]

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[NotifyMessage]:  # noqa: ASYNC109 -- a test's deadline: it fails with what had arrived
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self.messages)} of {count} messages within {timeout}s: {self.messages}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.messages


NOBODY = 65534


@contextlib.contextmanager
def receiving(path: Path) -> Iterator[tuple[NotifySocket, Inbox]]:
    inbox = Inbox()
    sock = NotifySocket(path, inbox, LOG)
    # As for instances that run as herdsman's user and as nobody (whose group owns it).
    sock.open(asyncio.get_running_loop(), access=access_for([(NOBODY, NOBODY)]))
    try:
        yield sock, inbox
    finally:
        sock.close()


class Children:
    """Processes a test starts; whatever is still running at the end is killed and reaped."""

    def __init__(self, notify_socket: str) -> None:
        self.env = dict(os.environ, NOTIFY_SOCKET=notify_socket)
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start `argv` the way herdsman starts an instance: as a session leader."""
        child = subprocess.Popen(
            argv, env=self.env, start_new_session=True, stdin=subprocess.DEVNULL
        )
        self._started.append(child)
        STARTED.append(child.pid)
        return child

    async def exited(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code, waited for without blocking the loop.

        The loop must keep running meanwhile: systemd-notify waits for the
        receiver to close its barrier descriptor before it exits.
        """
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        pidfd = os.pidfd_open(child.pid)  # readable once the child has exited
        loop.add_reader(pidfd, done.set)
        try:
            async with asyncio.timeout(EXIT_WAIT):
                await done.wait()
        except TimeoutError:
            raise AssertionError(f"{child.args!r} still running after {EXIT_WAIT}s") from None
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return child.wait()

    def close(self) -> None:
        for child in self._started:
            if child.poll() is None:
                # The whole session's group, so a blocked grandchild goes too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@contextlib.asynccontextmanager
async def children(notify_socket: str) -> AsyncIterator[Children]:
    started = Children(notify_socket)
    try:
        yield started
    finally:
        started.close()
