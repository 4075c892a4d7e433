"""herdsman as a systemd service: sd_notify to its manager, and its unit file.

Under systemd (`NOTIFY_SOCKET` set, `Type=notify`) the daemon reports READY=1 once
its services have settled, a STATUS= summary after every change of it (throttled),
RELOADING=1 around a reload, STOPPING=1, and pings WATCHDOG=1 at half of
`WATCHDOG_USEC` from the event loop,
so a hung loop gets it restarted. Those variables are for herdsman alone: they are
taken out of what its children inherit.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path

MANAGER_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "FDSTORE",
    "HERDSMAN_FDSTORE",
)
LISTEN_FDS_START = 3  # sd_listen_fds(3): passed fds begin here
# STATUS= at most this often: a crash loop or a start of thousands changes the
# summary many times a second, and each message costs systemd a property change.
STATUS_INTERVAL = 0.25
FDSTORE_NAME = "herdsman-pipe"


def without_manager_variables(environ: MutableMapping[str, str]) -> None:
    """Children must not talk to herdsman's own manager as if they were herdsman."""
    for name in MANAGER_VARIABLES:
        environ.pop(name, None)


def passed_fds(environ: MutableMapping[str, str]) -> list[int]:
    """The fds the manager passed to this process (LISTEN_FDS, for this pid only).

    The variables are removed, as sd_listen_fds(1) does: after a re-exec (same pid)
    they would otherwise name fds that are long closed or reused.
    """
    count = environ.pop("LISTEN_FDS", "")
    pid = environ.pop("LISTEN_PID", "")
    environ.pop("LISTEN_FDNAMES", None)
    if not count.isdigit() or pid != str(os.getpid()):
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))


class Manager:
    """The service manager above herdsman, if any; every method is a no-op without one."""

    def __init__(self, environ: MutableMapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog: float | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        owner = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not owner or owner == str(os.getpid())):
            self._watchdog = int(usec) / 1_000_000
        self._sock: socket.socket | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._status = ""  # the last STATUS= sent
        self._status_sent_at = -STATUS_INTERVAL
        self._status_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # The fd store keeps a copy of every service's output pipe, so that if
        # herdsman dies nothing loses its reader: systemd 254+ says it is enabled
        # with $FDSTORE, the unit herdsman prints sets HERDSMAN_FDSTORE for 252.
        store = environ.get("FDSTORE") or environ.get("HERDSMAN_FDSTORE") or ""
        self.fdstore = self._sock is not None and store.isdigit() and int(store) > 0
        self.passed_fds = passed_fds(environ)

    def store_fds(self, fds: list[int]) -> None:
        """FDSTORE=1: the manager keeps a copy of `fds` for the next herdsman (until
        they hang up: a pipe's read end does once its writers are gone)."""
        if not self.fdstore or self._sock is None:
            return
        payload = f"FDSTORE=1\nFDNAME={FDSTORE_NAME}".encode()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        with contextlib.suppress(OSError):
            self._sock.sendmsg([payload], rights, 0, self._address)

    def notify(self, *fields: str) -> None:
        if self._sock is None:
            return
        # If the manager went away there is nothing herdsman can do about it.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode(), self._address)

    @property
    def present(self) -> bool:
        """Whether there is a manager to tell anything."""
        return self._sock is not None

    def ready(self, status: str) -> None:
        self._status = status
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status_changed(self, summary: Callable[[], str]) -> None:
        """The summary may have changed: send it, at most once per STATUS_INTERVAL.

        It is computed when sent, so the last change is always the one reported; a
        change while a send is pending costs nothing.
        """
        if self._sock is None or self._status_timer is not None or self._stopping:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._status_sent_at + STATUS_INTERVAL - loop.time())
        self._status_timer = loop.call_later(delay, self._send_status, loop, summary)

    def _send_status(self, loop: asyncio.AbstractEventLoop, summary: Callable[[], str]) -> None:
        self._status_timer = None
        self._status_sent_at = loop.time()
        status = summary()
        if status != self._status:
            self._status = status
            self.notify(f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        # From here on the status says what herdsman is doing, not what the
        # instances do on the way down.
        self._stopping = True
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        self.notify("STOPPING=1", "STATUS=stopping all services")

    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping at half the watchdog period, from the loop itself: a stuck loop stops it."""
        if self._watchdog is None or self._sock is None:
            return

        def ping() -> None:
            self.notify("WATCHDOG=1")
            assert self._watchdog is not None
            self._ping = loop.call_later(self._watchdog / 2, ping)

        ping()

    def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def unit_file(config: Path, shutdown_timeout: float, executable: str | None = None) -> str:
    """A systemd unit that runs herdsman for `config` (`Type=notify`, watchdog)."""
    herdsman = executable or str(Path(sys.argv[0]).resolve())
    return f"""\
[Unit]
Description=herdsman process supervisor for {config}
After=network.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={herdsman} -c {config} up
# The client, not a bare SIGHUP: `systemctl reload` returns once the reload is done,
# and fails, saying why, when the new config is invalid (nothing running is touched).
ExecReload={herdsman} -c {config} reload
# systemd keeps a copy of every service's output pipe (two per instance): if
# herdsman dies, its services' output waits in the pipes for the next herdsman
# instead of nothing reading them.
FileDescriptorStoreMax=4096
Environment=HERDSMAN_FDSTORE=4096
WorkingDirectory={config.parent}
# Three file descriptors per instance (two pipes, a log file): the default soft
# limit of 1024 holds about 300. herdsman raises its soft limit to this hard one.
LimitNOFILE=524288
# herdsman answers SIGTERM by stopping every service in reverse dependency order.
# KillMode=process: if herdsman itself dies (or its watchdog fires), systemd kills
# only herdsman and restarts it, and the new herdsman adopts the services still
# running (state.json) instead of everything being killed and started again.
KillMode=process
TimeoutStopSec={int(shutdown_timeout) + 15}
# READY=1 comes once no instance is starting or restarting, which can take as long
# as the slowest readiness probe: a start timeout would have systemd stop every
# service (and restart herdsman) over one slow instance. STATUS= says what is pending.
TimeoutStartSec=infinity
WatchdogSec=30
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
"""
