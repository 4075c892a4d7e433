"""Log pumps: read a child's stdout/stderr pipe and hand over complete lines.

The pipe is non-blocking and watched with the event loop's reader callbacks; a
line is split on `\\n` only and passed on without its newline, otherwise exactly
as written. A line longer than MAX_LINE is passed on in pieces rather than held
without bound; a last line without newline is passed on at end of file.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

MAX_LINE = 64 * 1024
READ_SIZE = 64 * 1024

LineSink = Callable[[str, str, bytes], None]  # (instance, stream, line)


class LogPump:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        instance: str,
        stream: str,
        sink: LineSink,
        on_close: Callable[[LogPump], None] | None = None,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self.instance = instance
        self.stream = stream
        self._sink = sink
        self._on_close = on_close
        self._partial = b""
        loop.add_reader(fd, self._readable)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def _readable(self) -> None:
        self._read_once()

    def drain(self) -> None:
        """Read whatever is in the pipe now, without waiting for more."""
        while not self.closed and self._read_once():
            pass

    def _read_once(self) -> bool:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.close()
            return False
        lines = data.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        sink, instance, stream = self._sink, self.instance, self.stream
        for line in lines:
            sink(instance, stream, line)
        while len(self._partial) >= MAX_LINE:
            sink(instance, stream, self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return True

    def close(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self._partial:
            self._sink(self.instance, self.stream, self._partial)
            self._partial = b""
        if self._on_close is not None:
            self._on_close(self)
