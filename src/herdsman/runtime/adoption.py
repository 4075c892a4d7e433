"""Adopting the services a dead daemon left running: their output pipes.

Once herdsman is gone its services' pipes have no reader of herdsman's. The next
daemon takes a pipe from the copies systemd's fd store kept for it (LISTEN_FDS),
or opens it again through /proc/<pid>/fd; either way only a pipe that is still
the one herdsman made (same inode) is taken.

A new image of the daemon that cannot read its hand-over adopts the same way, with
what the previous image left open for it (`inherited_fds`) in place of the fd store.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from herdsman.runtime.procfs import fd_inode


def pipes_by_inode(fds: list[int]) -> dict[int, int]:
    """Of the fds the service manager passed back (its fd store), the pipes by inode."""
    pipes = {}
    for fd in fds:
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISFIFO(st.st_mode):
            os.set_blocking(fd, False)
            pipes[st.st_ino] = fd
        else:
            os.close(fd)
    return pipes


def reopen_pipes(
    pid: int, pipes: list[tuple[str, int]], stored: dict[int, int]
) -> Iterator[tuple[str, int, bytes]]:
    """The output pipes of a process as (stream, fd, b""): the copies the service
    manager kept for us (`stored`, by inode), or opened again through /proc.

    Only a pipe that is still the one herdsman made for it (same inode) is taken:
    the process may have pointed its stdout elsewhere since.
    """
    for stream, inode in pipes:
        if inode in stored:
            yield stream, stored.pop(inode), b""
            continue
        number = 1 if stream == "out" else 2
        try:
            fd = os.open(f"/proc/{pid}/fd/{number}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        if fd_inode(fd) != inode:
            os.close(fd)
            continue
        yield stream, fd, b""


@dataclass(eq=False)
class Inherited:
    """What a previous image of this daemon left open for the next one, found by
    kind when its hand-over, which names them, cannot be read. Only the fds it
    handed over are inheritable here (every other one is opened close-on-exec)."""

    lock_fd: int | None = None
    listen_fds: list[int] = field(default_factory=list)  # Unix first, then TCP
    notify_fd: int | None = None
    pipes: list[int] = field(default_factory=list)  # the services' output pipes


def inherited_fds(lock: Path) -> Inherited:
    """The inheritable fds of this process above stderr, by kind: `lock` (the state
    dir's lock file), listening sockets, the sd_notify socket, pipes. Any other is
    closed: nothing here would read it."""
    found = Inherited()
    tcp: list[int] = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd <= 2 or not os.get_inheritable(fd):
                continue
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the directory's own fd, closed by now
        if stat.S_ISFIFO(mode):
            found.pipes.append(fd)
        elif stat.S_ISREG(mode) and found.lock_fd is None and _same_file(fd, lock):
            found.lock_fd = fd
        elif stat.S_ISSOCK(mode) and (kind := _socket_kind(fd)) is not None:
            if kind == "notify" and found.notify_fd is None:
                found.notify_fd = fd
            elif kind == "unix" and not found.listen_fds:
                found.listen_fds.append(fd)
            elif kind == "tcp" and not tcp:
                tcp.append(fd)
            else:
                os.close(fd)
        else:
            os.close(fd)
    if found.listen_fds:
        found.listen_fds += tcp
    else:  # the TCP listener follows the Unix one (see ApiServer.start): bind both anew
        for fd in tcp:
            os.close(fd)
    return found


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _socket_kind(fd: int) -> str | None:
    """A socket's kind: "unix" or "tcp" when listening, "notify" for Unix datagrams."""
    sock = socket.socket(fileno=fd)
    try:
        if sock.type == socket.SOCK_DGRAM and sock.family == socket.AF_UNIX:
            return "notify"
        if sock.type == socket.SOCK_STREAM and sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            return "unix" if sock.family == socket.AF_UNIX else "tcp"
        return None
    except OSError:
        return None
    finally:
        sock.detach()  # the fd stays open: the caller decides
