"""One daemon per config: an exclusive lock on `<state_dir>/herdsman.lock`.

A lock (not a pid-file guess) so a crashed daemon never blocks the next one: the
kernel drops the lock with the process. The file holds the owner's pid, for the
message a second daemon prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from herdsman.runtime.files import NOFOLLOW


class AlreadyRunning(Exception):
    """Another daemon holds the lock; the message names its pid."""


class DaemonLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "herdsman.lock"
        self._fd = -1

    def acquire(self) -> None:
        """Take the lock (state_dir exists: see files.make_state_dir) and write our pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
        self._lock(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def acquire_existing(self) -> None:
        """Keep any daemon from starting, for `down` without one: the lock is taken
        as usual, or through a read-only fd where state_dir cannot be written (a
        read-only file system after a crash); with no lock file, no daemon can
        have one either. AlreadyRunning when a daemon holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
        except OSError:
            try:
                fd = os.open(self.path, os.O_RDONLY | NOFOLLOW)
            except OSError:
                return
        self._lock(fd)
        self._fd = fd

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another herdsman (pid {owner}) already runs this config ({self.path})"
            ) from None

    def adopt(self, fd: int) -> None:
        """Hold the lock through `fd`, inherited from a previous image of this daemon."""
        os.set_inheritable(fd, False)
        self._fd = fd

    def hand_over(self) -> int:
        """Keep the lock held across an exec: its fd, inheritable."""
        os.set_inheritable(self._fd, True)
        return self._fd

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):  # a read-only fd (acquire_existing)
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1
