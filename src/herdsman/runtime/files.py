"""Creating herdsman's own files safely, also as root in a directory others can write.

Every file herdsman creates in state_dir or log_dir is opened with O_NOFOLLOW, so
a symlink planted there never redirects a write of root's; a temporary is created
with O_EXCL after any stale one is removed, so it is always a new file of ours.
state_dir itself is created 0700, and an existing one that others could write
(or that belongs to someone else) is refused: whoever writes there can replace
the socket or state.json, which names the pids that herdsman signals.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class Unsafe(Exception):
    """state_dir or a secret is open to others; the message is one sentence saying how."""


def open_append(path: Path, mode: int = 0o600) -> int:
    """An fd appending to `path` (created with `mode` if missing), never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, mode)


def open_new(path: Path, mode: int = 0o600) -> int:
    """A fresh, empty file at `path` for writing: a stale one (or a symlink) is removed
    first, and O_EXCL makes sure the file opened is the one just created."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)


def write_new(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = open_new(path, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def make_state_dir(path: Path, *, allow_shared: bool) -> None:
    """Create state_dir (0700), or check the existing one: a directory of ours that
    no one else can write, unless `allow_shared` (settings.allow_shared_state_dir)."""
    try:
        path.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise Unsafe(f"state_dir {path} is not a directory")
    if allow_shared:
        return
    if st.st_uid != os.geteuid():
        raise Unsafe(
            f"state_dir {path} belongs to uid {st.st_uid}, not to herdsman's user "
            f"(uid {os.geteuid()}): use a directory of your own, or set "
            "settings.allow_shared_state_dir = true"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Unsafe(
            f"state_dir {path} can be written by {_who(st.st_mode)} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w it, or set "
            "settings.allow_shared_state_dir = true"
        )


def _who(mode: int) -> str:
    if mode & stat.S_IWGRP and mode & stat.S_IWOTH:
        return "its group and others"
    return "its group" if mode & stat.S_IWGRP else "others"


def check_private_file(path: Path, what: str) -> None:
    """A secret (the token file) must not be readable by group or others."""
    st = os.stat(path)
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        raise Unsafe(
            f"{what} {path} can be read by {_readers(st.st_mode)} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 it"
        )


def _readers(mode: int) -> str:
    if mode & stat.S_IRGRP and mode & stat.S_IROTH:
        return "its group and others"
    return "its group" if mode & stat.S_IRGRP else "others"
