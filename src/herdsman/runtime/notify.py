"""The sd_notify receiver: the datagram socket whose address children get as NOTIFY_SOCKET.

Each datagram is a newline-separated list of `KEY=VALUE` lines; the kernel attaches
the sender's pid/uid/gid to it (SO_PASSCRED), and that pid, never one named in the
payload, is what `sender_belongs` checks against an instance before its word counts.

What the credential pid turns out to be (tested with systemd 252's `systemd-notify`):

- `systemd-notify` first sends with the pid of *its parent* in SCM_CREDENTIALS, so
  that a shell script shows up as the sender rather than the short-lived helper;
  the kernel allows that only with CAP_SYS_ADMIN (root, in practice). Without the
  privilege it falls back to its own pid. Either way the pid is in the caller's
  session, so `sender_belongs` accepts a script and its subshells. The one case it
  cannot attribute is `systemd-notify` run *directly* by herdsman as the service
  command: as root its parent is the daemon itself, which is no instance's.
- After the message it sends `BARRIER=1` with a pipe's write end attached and waits
  (up to 5 s, unless `--no-block`) until the receiver closes that descriptor. We
  handle datagrams in order and call `on_message` before closing the descriptors
  received with them, so the sender (or the parent it names) is still alive while
  the daemon checks its session. Without the barrier a helper that exits at once
  may be reaped (a zombie still has its session) before its datagram is read, and
  is then not accepted unless it is the main process itself.
- The `sdnotify` package sends as itself and without a barrier (as does
  `systemd-notify --no-block`, still under its parent's pid when privileged): the
  pid is exact, with that exit race for helpers.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from herdsman.core.herd import Notified
from herdsman.core.lifecycle import Event, Spawned
from herdsman.core.states import State
from herdsman.runtime.throttle import STRANGERS, Throttle

if TYPE_CHECKING:
    from herdsman.core.plan import Plan
    from herdsman.runtime.supervisor import Managed, Supervisor

# systemd itself ignores datagrams over a few KiB; a larger buffer costs nothing
# and lets a verbose STATUS through, while MSG_TRUNC still catches anything bigger.
RECV_SIZE = 65536
# Room for the barrier's one descriptor and a few more; any beyond this the kernel
# closes for us (MSG_CTRUNC), which is all we would do with them anyway.
MAX_FDS = 16
# One readiness callback handles at most this many datagrams, so a child flooding
# the socket cannot starve the rest of the loop; the reader stays ready and is
# called again on the next loop iteration for the remainder.
MAX_PER_WAKEUP = 256

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ANCILLARY_SIZE = socket.CMSG_SPACE(_CREDS.size) + socket.CMSG_SPACE(MAX_FDS * 4)


@dataclass
class NotifyMessage:
    """One sd_notify datagram, and who sent it."""

    pid: int  # sender pid from SCM_CREDENTIALS (not from the payload)
    uid: int
    fields: dict[str, str]  # e.g. "READY" -> "1", "STATUS" -> "..."; later keys win


def parse_fields(payload: bytes, log: logging.Logger | None = None) -> dict[str, str]:
    """The `KEY=VALUE` lines of an sd_notify datagram; other lines are skipped."""
    fields: dict[str, str] = {}
    for line in payload.decode("utf-8", errors="replace").split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            if log is not None:
                log.debug("sd_notify: ignoring a line that is not KEY=VALUE: %r", line[:80])
            continue
        fields[key] = value
    return fields


@dataclass
class Access:
    """Who may send to the socket: its mode, the group it is given (None: herdsman's),
    and the users whose datagrams are read at all (others are dropped unread)."""

    mode: int
    gid: int | None
    uids: frozenset[int]


def access_for(identities: Iterable[tuple[int, int]]) -> Access:
    """The narrowest access that lets every notifying instance send, from the
    (uid, gid) each runs as: 0600 when all run as herdsman's user; 0660 and their
    group when the others share one; 0666 only when they do not."""
    euid = os.geteuid()
    others = {(uid, gid) for uid, gid in identities if uid != euid}
    uids = frozenset({euid} | {uid for uid, _ in others})
    gids = {gid for _, gid in others}
    if not others:
        return Access(0o600, None, uids)
    if len(gids) == 1:
        return Access(0o660, gids.pop(), uids)
    return Access(0o666, None, uids)


def sender_ids(sender_pid: int) -> tuple[int, ...]:
    """The pid, process group and session of a sender: an instance whose main process
    is one of them may take its word (see `sender_belongs`); () if it is gone."""
    if sender_pid <= 0:
        return ()
    try:
        return (sender_pid, os.getpgid(sender_pid), os.getsid(sender_pid))
    except OSError:
        return (sender_pid,)


def sender_belongs(sender_pid: int, main_pid: int) -> bool:
    """Whether `sender_pid` may speak for the instance whose main process is `main_pid`.

    Every instance is started as a session leader, so its pid is also its process
    group and session id: any process still in either one belongs (a script's
    `systemd-notify`, a worker it forked). A process that has already been reaped
    cannot be checked and does not belong, unless it is the main process itself.
    """
    if sender_pid <= 0 or main_pid <= 0:
        return False
    return main_pid > 0 and main_pid in sender_ids(sender_pid)


class NotifySocket:
    """A bound sd_notify socket that hands each message to `on_message` on the loop."""

    def __init__(
        self,
        path: Path,
        on_message: Callable[[NotifyMessage], None],
        log: logging.Logger,
        throttle: Throttle | None = None,
    ) -> None:
        self._path = path
        self._on_message = on_message
        self._log = log
        self._throttle = throttle or Throttle(log, policy=STRANGERS)
        self._uids: frozenset[int] = frozenset({os.geteuid()})
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        """The value for NOTIFY_SOCKET: the path, or `@name` for an abstract socket."""
        return str(self._path)

    @property
    def _abstract(self) -> bool:
        return self.address.startswith("@")

    def open(
        self,
        loop: asyncio.AbstractEventLoop,
        inherited: int | None = None,
        access: Access | None = None,
    ) -> None:
        """Bind the socket, or take the already bound `inherited` fd (a re-exec);
        `access`: who may send (by default herdsman's user only)."""
        access = access or access_for(())
        if inherited is not None:
            sock = socket.socket(fileno=inherited)
            os.set_inheritable(inherited, False)
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable)
            self._sock, self._loop = sock, loop
            self.set_access(access)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound_file = False
        try:
            # Before bind, so that no datagram can ever arrive without credentials.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.setblocking(False)
            if self._abstract:
                sock.bind("\0" + self.address[1:])
            else:
                self._remove_stale()
                sock.bind(self.address)
                bound_file = True
            self.set_access(access)
            loop.add_reader(sock.fileno(), self._readable)
        except BaseException:
            sock.close()
            if bound_file:
                self._path.unlink(missing_ok=True)
            raise
        self._sock = sock
        self._loop = loop

    def set_access(self, access: Access) -> None:
        """Who may send (see `access_for`); again after a reload changed the services.
        (An abstract socket has no file mode: there the users' check alone guards.)"""
        self._uids = access.uids
        if self._abstract:
            return
        if access.gid is not None:
            os.chown(self._path, -1, access.gid)
        os.chmod(self._path, access.mode)
        if access.mode != 0o600:
            # Its directory (state_dir, 0700) must let those users reach it: search
            # permission only, so nothing in it can be listed or changed by them.
            parent = self._path.parent
            mode = stat.S_IMODE(os.stat(parent).st_mode)
            if mode & 0o011 != 0o011:
                os.chmod(parent, mode | 0o011)

    def hand_over(self) -> int | None:
        """Stop reading, keep the socket bound and open (inheritable) for a new image."""
        sock, self._sock = self._sock, None
        if sock is None:
            return None
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop = None
        fd = sock.detach()
        os.set_inheritable(fd, True)
        return fd

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop = None
        sock.close()
        if not self._abstract:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def _remove_stale(self) -> None:
        # A socket file left by a daemon that died; anything else at the path is
        # not ours to delete, and bind will then report it.
        try:
            mode = self._path.lstat().st_mode
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(mode):
            self._path.unlink()

    def _readable(self) -> None:
        for _ in range(MAX_PER_WAKEUP):
            sock = self._sock
            if sock is None:  # closed by on_message
                return
            try:
                data, ancdata, flags, _ = sock.recvmsg(RECV_SIZE, _ANCILLARY_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                first = f"sd_notify: receiving failed: {err}"
                self._throttle.log(
                    "notify-receive",
                    logging.WARNING,
                    first,
                    source=0,
                    summary=lambda c: (
                        f"sd_notify: receiving failed {c.count:,} more times in the last"
                        f" {c.seconds:.0f} s"
                    ),
                )
                return
            self._dispatch(data, ancdata, flags)

    def _dispatch(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        creds: tuple[int, int, int] | None = None
        fds: list[int] = []
        for level, kind, item in ancdata:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_CREDENTIALS and len(item) >= _CREDS.size:
                creds = _CREDS.unpack(item[: _CREDS.size])
            elif kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(item[: len(item) - len(item) % received.itemsize])
                fds.extend(received)
        try:
            self._deliver(data, creds, flags, bool(fds))
        finally:
            # Closing a BARRIER=1 descriptor tells the sender that everything it sent
            # before has been handled; other descriptors (FDSTORE=1) we do not keep.
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _deliver(
        self, data: bytes, creds: tuple[int, int, int] | None, flags: int, with_fds: bool
    ) -> None:
        if creds is None:
            self._ignored(0, "it came without sender credentials")
            return
        pid, uid, _gid = creds
        if uid not in self._uids:
            # From a user no notifying instance runs as: dropped unread, counted.
            self._ignored(pid, f"uid {uid} runs no instance that reports by notify")
            return
        if flags & socket.MSG_TRUNC:
            self._ignored(pid, f"it is over {RECV_SIZE} bytes")
            return
        fields = parse_fields(data, self._log)
        fields.pop("BARRIER", None)  # answered by closing its descriptor
        if with_fds and "FDSTORE" in fields:
            self._log.debug("sd_notify: pid %d sent descriptors to store; not supported", pid)
        if not fields:
            return
        try:
            self._on_message(NotifyMessage(pid=pid, uid=uid, fields=fields))
        except Exception:
            self._log.exception("sd_notify: handling a message from pid %d failed", pid)

    def _ignored(self, pid: int, why: str) -> None:
        self._throttle.log(
            "notify-datagram",
            logging.WARNING,
            lambda: f"sd_notify: ignored a datagram from pid {pid}: {why}",
            source=pid,
            summary=lambda c: (
                f"ignored {c.count:,} more sd_notify datagrams from {c.sources} in the last"
                f" {c.seconds:.0f} s"
            ),
        )


class Notifications:
    """The daemon's side of sd_notify: the socket while the plan names one, each
    message handed to the herd as the instance that sent it, and the STATUS= each
    instance said last (for `status`)."""

    def __init__(
        self,
        supervisor: Supervisor,
        loop: asyncio.AbstractEventLoop,
        log: logging.Logger,
        note: Callable[[int, str], None],
    ) -> None:
        self._supervisor = supervisor
        self._loop = loop
        self._log = log
        self._note = note
        self._socket: NotifySocket | None = None
        self._strangers = Throttle(log, loop, STRANGERS)  # said with a count
        self.statuses: dict[str, str] = {}  # instance -> its last STATUS=, until it respawns

    def open(self, plan: Plan, fd: int | None) -> None:
        """Bind the plan's socket (`fd`: the one a previous image bound), if it has one."""
        if plan.notify_socket is None:
            if fd is not None:
                os.close(fd)  # bound by a previous image, for a plan that had the socket
            return
        self._socket = NotifySocket(plan.notify_socket, self._notified, self._log, self._strangers)
        try:
            self._socket.open(self._loop, fd, _access(plan))
        except OSError as err:
            self._socket = None
            self._note(
                logging.ERROR,
                f"cannot bind the sd_notify socket {plan.notify_socket}: {err.strerror}",
            )

    def track(self, plan: Plan) -> None:
        """After a reload: the socket opens to the users `plan`'s instances run as."""
        if self._socket is not None:
            try:
                self._socket.set_access(_access(plan))
            except OSError as err:
                self._note(logging.ERROR, f"cannot open the sd_notify socket to: {err.strerror}")

    def hand_over(self) -> int | None:
        """The bound socket's fd, kept open for a new image (None: there is none)."""
        fd = self._socket.hand_over() if self._socket is not None else None
        self._socket = None
        return fd

    def changed(self, managed: Managed, old: State, new: State, event: Event) -> None:
        """A subscriber of the change feed: a STATUS= an instance sent is its
        process's, and goes with it."""
        core = managed.core
        if core.pid is None or isinstance(event, Spawned):
            self.statuses.pop(core.name, None)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._strangers.close()

    def _notified(self, message: NotifyMessage) -> None:
        # Checked here, synchronously: the sender (systemd-notify) waits on its
        # barrier until we return, so it still exists to be looked up. Its ids are
        # looked up once, not once per instance (a flood must cost little).
        ids = sender_ids(message.pid)
        managed = self._sender(ids)
        # A process may speak before the loop has taken in its spawn (the spawning
        # thread's word comes on another fd, read in any order with this one, or
        # later when the thread waits for a CPU): its instance has no pid yet, and
        # READY=1 would be lost for good. So the spawns on their way are taken in,
        # and the sender looked for again.
        if managed is None and self._supervisor.take_in_spawns():
            managed = self._sender(ids)
        if managed is not None:
            if "STATUS" in message.fields:
                self.statuses[managed.name] = message.fields["STATUS"]
            self._supervisor.submit(Notified(managed.name, message.fields))
            return
        if message.fields:
            sender = message.pid
            self._strangers.log(
                "notify-ignored",
                logging.WARNING,
                lambda: (
                    f"ignored an sd_notify message from pid {sender}: it belongs to "
                    "no instance that reports by notify"
                ),
                source=sender,
                summary=lambda c: (
                    f"ignored {c.count:,} notify messages from {c.sources} in the last "
                    f"{c.seconds:.0f} s (they belong to no instance that reports by notify)"
                ),
            )

    def _sender(self, ids: tuple[int, ...]) -> Managed | None:
        """The instance reporting by notify whose process is one of `ids`."""
        for managed in self._supervisor.instances.values():
            pid, ready = managed.core.pid, managed.plan.ready
            if pid is not None and pid in ids and ready is not None and ready.kind == "notify":
                return managed
        return None


def _access(plan: Plan) -> Access:
    """Who must be able to send to the notify socket: the users the instances
    that report by notify run as (see access_for)."""
    identities = []
    for svc in plan.services.values():
        for inst in svc.instances:
            if inst.ready is not None and inst.ready.kind == "notify":
                identity = _identity(inst.user, inst.group)
                if identity is not None:
                    identities.append(identity)
    return access_for(identities)


def _identity(user: str | None, group: str | None) -> tuple[int, int] | None:
    """The (uid, gid) an instance runs as, as spawn.py switches to them; None for a
    user or group that does not exist (such an instance cannot start)."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(user) if user is not None else None
        gid = grp.getgrnam(group).gr_gid if group is not None else None
    except KeyError:
        return None
    uid = entry.pw_uid if entry is not None else os.geteuid()
    if gid is None:
        gid = entry.pw_gid if entry is not None else os.getegid()
    return uid, gid
