"""Log pumps: read a child's stdout/stderr pipe and hand over complete lines.

The pipe is non-blocking and watched with the event loop's reader callbacks. Each
read takes up to READ_SIZE bytes into one buffer that every pump shares (the loop
reads one pipe at a time) and hands over all the complete lines in it at once,
with one timestamp (the time herdsman read them), as one bytes object: the lines
joined by `\\n`, exactly as the child wrote them up to the read's last newline.
Nothing is done per line in Python, nor even split in C: whoever needs lines
(a `logs -f` follower, a log probe) splits; the log file needs one `replace`.
A flooding child sends thousands of lines a read, and per-line objects would cost
more than writing them to disk.

Lines are split on `\\n` only. A line longer than MAX_LINE is handed over in
pieces of MAX_LINE bytes, cut every MAX_LINE bytes from the line's start whatever
the reads were, rather than held without bound; the pieces that do not end the
line come in a batch of their own whose stream is marked with `+` (`out+`,
`err+`): "cut here, continued by the next line". A last line without newline is
handed over at end of file, unmarked.

A pump's whole state is its pipe fd, the bytes of the held partial line (at most
MAX_LINE), its instance and its stream.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import time
from collections.abc import Callable

MAX_LINE = 64 * 1024
HALF_LINE = MAX_LINE // 2
READ_SIZE = 1024 * 1024
# Batching under a flood: a read this large means the child writes fast, so the
# pump waits before reading again, long enough for about BATCH bytes to gather at
# the rate it saw (at most MAX_PAUSE). Per read the fixed cost (wake-up, syscalls,
# timestamp) dominates; a reader that keeps up takes a few KiB at a time and spends
# several times the CPU per MB. The pause must never let the pipe fill: the child
# would wait, and a full pipe's reads measure the pipe, not the child, so the pump
# would never speed up again. So it gathers at most an eighth of the pipe's
# capacity, and does not pause at all when the loop's own lateness (epoll counts
# milliseconds, and a busy machine wakes a sleeper late) could fill three quarters
# of it at that rate: small pipes (when F_SETPIPE_SZ was refused) are read as they
# become readable. Quiet output (small reads) is read at once. Nothing is ever
# dropped.
FLOOD_READ = 4 * 1024
BATCH = 256 * 1024
MAX_PAUSE = 0.02
TIMER_SLACK = 0.002  # how late the loop may wake for a timer
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
CUT = "+"  # the mark on a stream whose lines are pieces continued by the next line

# (instance, stream, lines joined by b"\n" (one or more; b"" is one empty line),
#  unix time read). stream is "out"/"err", with CUT when every line is a cut piece.
LineSink = Callable[[str, str, bytes, float], None]

# One read buffer for every pump: reusing it costs no allocation per read. A fresh
# megabyte each read (os.read) is mapped anew by malloc every time, and its page
# faults cost more than the copy itself. An anonymous mapping, not a bytearray: its
# pages take memory only once a read has filled them (a bytearray is zeroed whole),
# so a daemon whose services write little stays a megabyte lighter.
_buffer = mmap.mmap(-1, READ_SIZE)
_view = memoryview(_buffer)


def pause_for(got: int, elapsed: float, capacity: int) -> float | None:
    """How long to wait before the next read, after reading `got` bytes that gathered
    in `elapsed` seconds from a pipe of `capacity` bytes; None: read when readable."""
    if got < FLOOD_READ:
        return None
    rate = got / max(elapsed, 1e-6)
    pause = min(MAX_PAUSE, min(BATCH, capacity // 8) / rate)
    if rate * (pause + TIMER_SLACK) > capacity * 3 // 4:
        return None
    return pause


def split_lines(lines: bytes) -> list[bytes]:
    """A batch as a list of lines (for the consumers that need them one by one)."""
    return lines.split(b"\n")


def _pieces(line: bytes) -> list[bytes]:
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]


def _all_short(data: bytes) -> bool:
    """Whether no line of `data` (split on \\n) is longer than MAX_LINE, with one
    `find` per HALF_LINE bytes instead of a look at every line: a run of more than
    MAX_LINE bytes without a newline covers a whole aligned HALF_LINE block, so if
    each such block has a newline, no line is too long."""
    if len(data) <= MAX_LINE:
        return True
    find = data.find
    return all(
        find(b"\n", i, i + HALF_LINE) >= 0 for i in range(0, len(data) - HALF_LINE + 1, HALF_LINE)
    )


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
        try:
            self._capacity = fcntl.fcntl(fd, F_GETPIPE_SZ)
        except OSError:  # not a pipe (a pty, a socket): no pauses
            self._capacity = 0
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
        pause = pause_for(got, now - self._last_read, self._capacity)
        if pause is not None and not self.closed:
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(pause, self._resume)
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
            size = os.readv(self._fd, [_view])
        except BlockingIOError:
            return 0
        except OSError:
            size = 0
        if not size:
            self.close()
            return 0
        # Everything is copied out of the shared buffer before any sink runs.
        end = _buffer.rfind(b"\n", 0, size)
        if end < 0:
            self._partial += _view[:size]
            if len(self._partial) > MAX_LINE:
                self._hand_over_cut()
            return size
        lines = self._partial + _view[:end] if self._partial else bytes(_view[:end])
        self._partial = bytes(_view[end + 1 : size])
        now = time.time()
        if _all_short(lines):
            self._sink(self.instance, self.stream, lines, now)
        else:
            self._hand_over_long(lines, now)
        if len(self._partial) > MAX_LINE:
            self._hand_over_cut()
        return size

    def _hand_over_long(self, lines: bytes, now: float) -> None:
        """A batch with a line longer than MAX_LINE: runs of whole lines, and the cut
        pieces of each long line in a batch of their own, marked; a long line's last
        piece ends it, so it goes with the whole lines after it."""
        run: list[bytes] = []
        for line in split_lines(lines):
            if len(line) <= MAX_LINE:
                run.append(line)
                continue
            pieces = _pieces(line)
            if run:
                self._sink(self.instance, self.stream, b"\n".join(run), now)
            self._sink(self.instance, self.stream + CUT, b"\n".join(pieces[:-1]), now)
            run = [pieces[-1]]
        if run:
            self._sink(self.instance, self.stream, b"\n".join(run), now)

    def _hand_over_cut(self) -> None:
        """The held line grew past MAX_LINE: hand over its whole MAX_LINE pieces, marked,
        and hold the rest (1 to MAX_LINE bytes: a piece of exactly MAX_LINE waits for
        the next byte to tell whether the line ends there)."""
        held = self._partial
        whole = (len(held) - 1) // MAX_LINE * MAX_LINE
        self._partial = held[whole:]
        self._sink(self.instance, self.stream + CUT, b"\n".join(_pieces(held[:whole])), time.time())

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
            self._sink(self.instance, self.stream, self._partial, time.time())
            self._partial = b""
        if self._on_close is not None:
            self._on_close(self)
