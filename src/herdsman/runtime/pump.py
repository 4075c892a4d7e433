"""Log pumps: read a child's stdout/stderr pipe and hand over complete lines.

The pipe is non-blocking and watched with the event loop's reader callbacks. Each
read takes up to READ_SIZE bytes and hands over all the complete lines in it at
once, with one timestamp (the time herdsman read them): per-line work in Python
would cap throughput far below what a flooding child writes. Lines are split on
`\\n` only and passed on without it, otherwise exactly as written. A line longer
than MAX_LINE is passed on in pieces rather than held without bound; a last
line without newline is passed on at end of file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

MAX_LINE = 64 * 1024
READ_SIZE = 1024 * 1024
# Batching under a flood: a read this large means the child writes fast, so the
# pump waits before reading again, long enough for about BATCH bytes to gather at
# the rate it saw (at most MAX_PAUSE). Per read the fixed cost (wake-up, syscalls,
# timestamp) dominates; a reader that keeps up takes a few KiB at a time and spends
# several times the CPU per MB. The child at worst waits on a full pipe: nothing
# is dropped. Quiet output (small reads) is read at once.
FLOOD_READ = 4 * 1024
BATCH = 256 * 1024
MAX_PAUSE = 0.02

# (instance, stream, lines, unix time read)
LineSink = Callable[[str, str, list[bytes], float], None]


def _pieces(line: bytes) -> list[bytes]:
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]


class LogPump:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        instance: str,
        stream: str,
        sink: LineSink,
        on_close: Callable[[LogPump], None] | None = None,
        *,
        partial: bytes = b"",
    ) -> None:
        self._loop = loop
        self._fd = fd
        self.instance = instance
        self.stream = stream
        self._sink = sink
        self._on_close = on_close
        self._partial = partial  # a line begun but not ended (handed over by a re-exec)
        self._paused: asyncio.TimerHandle | None = None
        self._last_read = loop.time()
        loop.add_reader(fd, self._readable)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    @property
    def fd(self) -> int:
        return self._fd

    def hand_over(self) -> tuple[int, bytes]:
        """Stop reading without closing: (the pipe fd, the line begun but not ended).

        For a re-exec: the new image makes a pump of the same pipe with this
        partial, so no byte is lost or repeated. The fd stays open (inheritable).
        """
        fd, partial = self._fd, self._partial
        if fd >= 0:
            if self._paused is not None:
                self._paused.cancel()
                self._paused = None
            else:
                self._loop.remove_reader(fd)
            os.set_inheritable(fd, True)
        self._fd, self._partial = -1, b""
        return fd, partial

    def _readable(self) -> None:
        now = self._loop.time()
        got = self._read_once()
        if got >= FLOOD_READ and not self.closed:
            rate = got / max(now - self._last_read, 1e-6)
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(min(MAX_PAUSE, BATCH / rate), self._resume)
        self._last_read = now

    def _resume(self) -> None:
        self._paused = None
        if not self.closed:
            self._loop.add_reader(self._fd, self._readable)

    def drain(self) -> None:
        """Read whatever is in the pipe now, without waiting for more."""
        while not self.closed and self._read_once():
            pass

    def _read_once(self) -> int:
        """Read and hand over one batch; the bytes read (0: nothing now, or the end)."""
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return 0
        except OSError:
            data = b""
        if not data:
            self.close()
            return 0
        lines = data.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        too_long = len(data) > MAX_LINE and max(map(len, lines)) > MAX_LINE  # max() runs in C
        if len(lines[0]) > MAX_LINE or too_long:
            # Only a held partial or a read this long can make a line too long. Cut
            # every MAX_LINE bytes from the line's start; the last piece is never empty.
            lines = [
                p for line in lines for p in (_pieces(line) if len(line) > MAX_LINE else [line])
            ]
        self._partial = lines.pop()
        if lines:
            self._sink(self.instance, self.stream, lines, time.time())
        return len(data)

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self._partial:
            self._sink(self.instance, self.stream, [self._partial], time.time())
            self._partial = b""
        if self._on_close is not None:
            self._on_close(self)
