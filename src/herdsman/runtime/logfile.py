"""Per-instance log files: `<log_dir>/<instance>.log`, rotated by size.

Each batch of lines is written with one `os.writev` on an O_APPEND fd and no
user-space buffer, so a line herdsman has read is in the kernel's page cache at
once and survives a crash of the daemon. Rotation happens between batches (whole
lines only): `.log` becomes `.log.1`, `.1` becomes `.2` and so on, up to
`backups`. When the disk is full or the file cannot be written, lines wait in a
bounded buffer and the error is reported once; writing resumes when it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from herdsman.runtime.positions import Positions

PENDING_LIMIT = 8 * 1024 * 1024  # bytes held back per file while writes fail
SAID_BATCH = 32  # lines of herdsman.log said quickly (LogHandler.said) written at once, at most
# A message said quickly: (unix time, level name, component, message).
Said = tuple[float, str, str, str]


class LogFile:
    # One per instance, thousands of them: slots, and the path as a plain string.
    __slots__ = (
        "_backups",
        "_batch",
        "_fd",
        "_max_bytes",
        "_on_error",
        "_path",
        "_pending",
        "_positions",
        "_recorded",
        "_shared",
        "_size",
        "dropped_bytes",
        "error",
        "holds_std",
    )

    def __init__(
        self,
        path: str | Path,
        max_bytes: int,
        backups: int,
        on_error: Callable[[str, str | None], None],
        positions: Positions | None = None,
        *,
        shared: bool = False,
    ) -> None:
        self._path = str(path)
        self._positions = positions
        self._batch: tuple[str, int] | None = None  # (stream, held) of a batch not yet begun
        self._recorded = False  # the batch is in `positions`, pending
        # Others write to it too (a detached daemon's stdout and stderr): its size is
        # read from the file before deciding to rotate, and those fds follow a rotation.
        self._shared = shared
        self.holds_std = False
        self._max_bytes = max_bytes
        self._backups = backups
        # (the instance, a sentence when writing starts failing or None when it
        # recovers): one callable for every file, none made per instance.
        self._on_error = on_error
        self._fd = -1
        self._size = 0
        self._pending = b""
        self.dropped_bytes = 0
        self.error: str | None = None

    @property
    def path(self) -> Path:
        return Path(self._path)

    def write(self, *parts: bytes) -> None:
        """Append `parts`, whole lines together, with one `writev` when all goes well."""
        if self._pending:
            parts, self._pending = (self._pending, *parts), b""
        size = sum(map(len, parts))
        data = b""  # the parts joined, only if the writev falls short
        done = 0
        try:
            if self._fd < 0:
                self._open()
            if self._shared:
                self._size = os.fstat(self._fd).st_size
            if self._max_bytes and self._size and self._size + size > self._max_bytes:
                self._rotate()
            if self._batch is not None and self._positions is not None:
                # Where the batch starts, in the file it goes to (after a rotation).
                stream, held = self._batch
                self._positions.begin(self._name(), stream, self._size, held)
                self._batch, self._recorded = None, True
            done = os.writev(self._fd, parts)
            self._size += done
            if done < size:
                data = b"".join(parts)
                view = memoryview(data)
                while done < size:
                    written = os.write(self._fd, view[done:])
                    done += written
                    self._size += written
        except OSError as err:
            data = data or b"".join(parts)
            if done:
                # A short write (the disk filled) may stop inside a line: take that part
                # back, so the file ends with a whole line and what is held starts with one.
                torn = done - (data.rfind(b"\n", 0, done) + 1)
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size - torn)
                    self._size -= torn
                    done -= torn
            self._hold(data[done:], err)
            return
        if self.error is not None:
            self.error = None
            self._on_error(self._name(), None)

    def _name(self) -> str:
        """The instance's name: the file's name without `.log`."""
        return os.path.basename(self._path)[: -len(".log")]

    def begin_batch(self, stream: str, held: int) -> None:
        """The next writes are one read of `stream`'s pipe (see positions.py)."""
        self._batch = (stream, held)

    def end_batch(self) -> None:
        """That read's bytes are written and taken from the pipe."""
        if self._recorded and self._positions is not None:
            self._positions.done(self._name())
        self._batch, self._recorded = None, False

    def _hold(self, data: bytes, err: OSError) -> None:
        if len(data) > PENDING_LIMIT:
            # Keep the newest whole lines that fit: start after a newline, not inside a line.
            start = data.find(b"\n", len(data) - PENDING_LIMIT - 1) + 1
            self.dropped_bytes += start
            data = data[start:]
        self._pending = data
        if self.error is None:
            self.error = f"cannot write {self.path}: {err.strerror or err}"
            self._on_error(self._name(), self.error)

    def open(self) -> None:
        if self._fd < 0:
            self._open()

    def _open(self) -> None:
        # Never through a symlink: log_dir may be one that others can write.
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path, flags, 0o644)
        size = os.fstat(fd).st_size
        try:
            # A write cut short by SIGKILL (the kernel stops at a page boundary) leaves
            # a torn last line: end it, or our first line would be glued onto it.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                size += os.write(fd, b"\n")
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, size
        if self.holds_std:
            self.point_std_here()

    def point_std_here(self) -> None:
        """Make stdout and stderr this file (a detached daemon), also after rotations."""
        if self._fd < 0:
            self._open()
        self.holds_std = True
        os.dup2(self._fd, 1)
        os.dup2(self._fd, 2)

    def _rotate(self) -> None:
        self.close()
        if self._backups:
            for index in range(self._backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{index}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class DaemonFormatter(logging.Formatter):
    """herdsman.log's line, its one home: `<time> <level> <component> <message>`, the
    time in UTC with milliseconds (`2026-11-23T10:00:00.123Z`), a traceback on the
    lines after it; with `json`, one object per line: time, level, component,
    message (and traceback)."""

    def __init__(self, *, json: bool = False) -> None:
        super().__init__()
        self._json = json
        self._second: tuple[int, str] = (-1, "")  # formatted once a second

    def line(self, created: float, level: str, component: str, message: str) -> str:
        """The line of a message (without its newline), as `format` makes it."""
        return self.lines([(created, level, component, message)])[0]

    def lines(self, said: list[Said]) -> list[str]:
        """The lines of messages (without their newlines), in one pass: a start wave
        says three per instance (see LogHandler.said), and a call per line and its
        time formatted anew (`:03d`) were two thirds of what a line cost."""
        out = []
        second, day = self._second
        for created, level, component, message in said:
            whole = int(created)
            if whole != second:
                second, day = self._second = (whole, _day_and_second(whole))
            when = day + _MILLISECONDS[int((created - whole) * 1000)]
            if self._json:
                out.append(json.dumps(_event(when, level, component, message)))
            else:
                out.append(f"{when} {level} {component} {message}")
        return out

    def formatMessage(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.levelname, record.name, record.message)

    def format(self, record: logging.LogRecord) -> str:
        if not self._json:
            return super().format(record)  # formatMessage, then the traceback
        event = json.loads(
            self.line(record.created, record.levelname, record.name, record.getMessage())
        )
        if record.exc_info:
            event["traceback"] = self.formatException(record.exc_info)
        return json.dumps(event)


# A line's time ends with one of these: `.123Z`.
_MILLISECONDS = [f".{ms:03d}Z" for ms in range(1000)]


def _day_and_second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def _event(when: str, level: str, component: str, message: str) -> dict[str, str]:
    return {"time": when, "level": level, "component": component, "message": message}


class LogHandler(logging.Handler):
    """herdsman.log: each record one write through a LogFile, so it is rotated like
    the services' logs and never opened through a symlink.

    What the daemon says by the thousand (a spawn and the state changes of each
    instance: see `Lines`) skips the LogRecord and its formatting (two thirds of
    a line's cost) and is written with the other such lines of the loop turn in
    one write, or SAID_BATCH at a time: a start wave of thousands is one loop turn,
    and its lines must show its progress (and be there if the daemon is killed in
    the middle). A record written meanwhile writes them first: the file keeps the
    order in which everything was said.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int, *, json: bool = False) -> None:
        super().__init__()
        # A failing write is held and retried by the LogFile; there is no better
        # place than this very file to report it.
        self.file = LogFile(path, max_bytes, backups, lambda _name, _error: None, shared=True)
        self._format = DaemonFormatter(json=json)
        self.setFormatter(self._format)
        self._said: list[Said] = []  # messages of `said`, not written yet
        # logging.Handler's, made by its __init__ (typed as optional there) and kept
        # across a fork (reset in place): looked up once, not once per line.
        assert self.lock is not None
        self._lock: threading.RLock = self.lock

    def said(self, level: str, component: str, message: str) -> None:
        """Write a message of `level` (its name) soon: within the loop turn, before
        any record; formatted then, with the others said meanwhile."""
        entry = (time.time(), level, component, message)
        with self._lock:
            said = self._said
            said.append(entry)
            if len(said) >= SAID_BATCH:
                self._write()
            elif len(said) == 1:
                asyncio.get_running_loop().call_soon(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._write(text)  # the lock is held (logging.Handler.handle)

    def flush(self) -> None:
        with self._lock:
            if self._said:
                self._write()

    def _write(self, *more: str) -> None:
        lines = self._format.lines(self._said) if self._said else []
        self._said = []
        lines.extend(more)
        lines.append("")  # the last newline
        self.file.write("\n".join(lines).encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        self.flush()
        self.file.close()
        super().close()


class Lines:
    """The daemon's log for what it says by the thousand (see LogHandler): `log`
    goes through `LogHandler.said` when that handler is the only one to take the
    message, else (another handler, a filter, a test's logger) through the logger."""

    __slots__ = ("_log", "_quick")

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        # level -> the handler said to, and the level's name (None: the logger)
        self._quick: dict[int, tuple[LogHandler, str] | None] = {}

    def log(self, level: int, message: str) -> None:
        try:
            quick = self._quick[level]
        except KeyError:
            handler = self._only_taker(level)
            quick = self._quick[level] = (
                None if handler is None else (handler, logging.getLevelName(level))
            )
        if quick is None:
            self._log.log(level, message)  # no args: never %-formatted
        else:
            quick[0].said(quick[1], self._log.name, message)

    def _only_taker(self, level: int) -> LogHandler | None:
        """The handler a message of `level` reaches, if it reaches no other (the
        logger's handlers and its ancestors', as logging.Logger.callHandlers
        walks them) and no filter looks at it."""
        log = self._log
        if not log.isEnabledFor(level) or log.filters:
            return None
        takers: list[logging.Handler] = []
        logger: logging.Logger | None = log
        while logger is not None:
            takers.extend(handler for handler in logger.handlers if level >= handler.level)
            logger = logger.parent if logger.propagate else None
        if len(takers) == 1 and isinstance(takers[0], LogHandler) and not takers[0].filters:
            return takers[0]
        return None
