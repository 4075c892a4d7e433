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


class AlreadyRunning(Exception):
    """Another daemon holds the lock; the message names its pid."""


class DaemonLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "herdsman.lock"
        self._fd = -1

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another herdsman (pid {owner}) already runs this config ({self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

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
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = -1
