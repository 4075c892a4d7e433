"""Adopting the services a dead daemon left running: their output pipes.

Once herdsman is gone its services' pipes have no reader of herdsman's. The next
daemon takes a pipe from the copies systemd's fd store kept for it (LISTEN_FDS),
or opens it again through /proc/<pid>/fd; either way only a pipe that is still
the one herdsman made (same inode) is taken.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

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
