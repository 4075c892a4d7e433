"""Log pumps: read a child's stdout/stderr pipe and hand over complete lines.

The pipe is non-blocking and watched by one epoll for every pump of the event
loop, which the loop watches as one reader (see _Readers). Each read takes up to
READ_SIZE bytes into one buffer that every pump shares (the loop reads one pipe
at a time) and hands over all the complete lines in it at once, with one
timestamp (the time herdsman read them), as one bytes object: the lines joined
by `\\n`, exactly as the child wrote them up to the read's last newline.
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

Nothing is taken out of a pipe before it is in the log file. A read does not
consume the pipe: `tee(2)` copies what the pipe holds into a private pipe (page
references, no copy), that copy is read and handed over (the sink writes the log
file), and only then are exactly those bytes consumed, spliced to /dev/null. A
daemon killed at any instant leaves every byte it had not written in the pipe,
where the next one (given the pipe by systemd's fd store) reads it; see
`positions.py` for the batch it was writing at that instant. Only a partial line
(no newline yet) is held in memory after its bytes left the pipe, as is
everything read from what is not a pipe (a pty, a socket).

A pump's whole state is its pipe fd, the bytes of the held partial line (at most
MAX_LINE), its instance and its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import mmap
import os
import select
import time
from collections.abc import Callable
from typing import Protocol

from herdsman.core.logline import CUT

MAX_LINE = 64 * 1024
HALF_LINE = MAX_LINE // 2
READ_SIZE = 1024 * 1024
# Batching under a flood: a read this large means the child writes fast, so the pump
# waits before reading again, long enough for about BATCH bytes to gather at the
# child's rate (at most MAX_PAUSE; how a read tells that rate: pause_for). Per read
# the fixed cost (wake-up, syscalls, timestamp) dominates; a reader that keeps up
# takes a few KiB at a time and spends several times the CPU per MB. The pause must
# never let the pipe fill: the child would wait, and a full pipe's reads measure the
# pipe, not the child, so the pump would never speed up again. So it gathers at most
# a quarter of the pipe's capacity, and does not pause at all when the loop's own
# lateness (epoll counts milliseconds, and a busy machine wakes a sleeper late)
# could fill three quarters of it at that rate: small pipes (when F_SETPIPE_SZ was
# refused) are read as they become readable. Nothing is ever dropped. (An eighth,
# 128 KiB of a 1 MiB pipe, made batches of about 250 KiB once epoll rounded the
# pause up to a millisecond; a read's fixed cost, 40-90 us, was then a sixth of the
# daemon's CPU per MB.)
#
# A small read is read at once, unless the one before it was less than QUICK ago
# (and the pipe is a large one): then the child writes small pieces back to back
# and the pump pauses QUICK. Read at once, each piece wakes the loop; when the
# daemon runs on the child's CPU (a pipe write wakes its reader as a "sync"
# wake-up, which the scheduler may place there, and on a busy machine it stays),
# each wake-up also preempts the child after its one write: the two take turns a
# line at a time and the reads never grow to a flood's. Seen with one flooding
# child on a busy 2-core machine (perf sched): over a thousand such turns a
# second, each read 100 bytes.
FLOOD_READ = 4 * 1024
BATCH = 256 * 1024
MAX_PAUSE = 0.02
QUICK = 0.001  # epoll's resolution: asyncio sleeps no shorter than this anyway
TIMER_SLACK = 0.002  # how late the loop may wake for a timer
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
# A new pipe's capacity: the kernel's default, 16 pages (fewer for a user over the
# pipe budget, which pause_for treats alike: a pipe under BATCH is read as it
# becomes readable). A pipe a read finds busy (FLOOD_READ) grows to READ_SIZE, for
# fewer, larger reads; the rest stay small. Sizing every spawn's two pipes took two
# system calls (12 us) on the loop thread per instance of a big start, and most
# pipes never hold more than a few lines.
NEW_PIPE = 16 * mmap.PAGESIZE
HUNG_UP_MAX = 64  # ready pipes looked at by hung_up (the reaper's hint, not the reads)

# (instance, stream, lines joined by b"\n" (one or more; b"" is one empty line),
#  unix time read). stream is "out"/"err", with CUT when every line is a cut piece.
LineSink = Callable[[str, str, bytes, float], None]


class Batches(Protocol):
    """Told where each read of a pipe begins and ends (positions.py records it)."""

    def begin_batch(self, instance: str, stream: str, held: int) -> None:
        """A read's lines are about to reach the sink; they start with `held` bytes
        of a line begun in an earlier read, which are no longer in the pipe."""

    def end_batch(self, instance: str) -> None:
        """The read's bytes are written and taken out of the pipe."""


# One read buffer for every pump: reusing it costs no allocation per read. A fresh
# megabyte each read (os.read) is mapped anew by malloc every time, and its page
# faults cost more than the copy itself. An anonymous mapping, not a bytearray: its
# pages take memory only once a read has filled them (a bytearray is zeroed whole),
# so a daemon whose services write little stays a megabyte lighter.
_buffer = mmap.mmap(-1, READ_SIZE)
_view = memoryview(_buffer)

SPLICE_F_NONBLOCK = 2
# A read at least this large is held (see _Tee) while it is written and consumed: the
# pages freed under the service pipe's lock otherwise cost the child more than the
# second tee and splice cost the daemon (5-6 us a read; freeing 16 pages, about as
# much). A smaller one is read from the held pipe itself, as it is teed.
HOLD_FROM = 64 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class _Tee:
    """libc's tee(2) (Python has os.splice but no tee), two private pipes and /dev/null
    to consume into: one set for every pump, made at first use.

    A read tees what a service's pipe holds into the first private pipe (`_held`).
    A large one (HOLD_FROM) is teed on into the second, which is read: the first
    keeps its references to the pages until the bytes are consumed. Consuming then
    only drops the service pipe's references; the pages are freed when the held
    copy is released, under that pipe's lock, not the service's. Every write of the
    child takes the service pipe's lock, and freeing a flood's batch of pages under
    it (35-55 us for 450 KB; dropping the references takes 6-9) kept the child
    waiting once a read. A small read is read from the first private pipe."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._tee = libc.tee
        self._tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
        self._tee.restype = ctypes.c_ssize_t
        self._held = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._copy = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # As large as a service's pipe, so one tee takes all it holds; a smaller one
        # (the size refused) only means more rounds. The copy must take all that the
        # held pipe holds: the held one is made no larger (shrinking an empty pipe
        # is always allowed).
        for fd in (self._held[1], self._copy[1]):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, READ_SIZE)
        self.capacity = fcntl.fcntl(self._copy[1], F_GETPIPE_SZ)
        if fcntl.fcntl(self._held[1], F_GETPIPE_SZ) > self.capacity:
            fcntl.fcntl(self._held[1], F_SETPIPE_SZ, self.capacity)
        self._kept = 0  # bytes in the held pipe
        self.null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)

    def peek(self, fd: int) -> int:
        """Copy what the pipe `fd` holds into `_buffer` without consuming it: the bytes
        copied (0: the pipe is empty and has no writer left). BlockingIOError when it
        is empty but still open. A large read's held copy stays until `release`."""
        size = self._tee_all(fd, self._held[1], self.capacity)
        try:
            if size < HOLD_FROM:
                self._read_all(self._held[0], size)  # not held: consuming frees a few pages
            else:
                self._kept = size
                self._tee_all(self._held[0], self._copy[1], size)
                self._read_all(self._copy[0], size)
        except OSError:
            # The next peek must find both private pipes empty.
            for private in (self._held[0], self._copy[0]):
                with contextlib.suppress(BlockingIOError):
                    while os.splice(private, self.null, self.capacity):
                        pass
            self._kept = 0
            raise
        return size

    @staticmethod
    def _read_all(source: int, size: int) -> None:
        got = 0
        while got < size:  # all of it was copied, so all of it is there to read
            got += os.readv(source, [_view[got:size]])

    def _tee_all(self, source: int, target: int, size: int) -> int:
        copied: int = self._tee(source, target, size, SPLICE_F_NONBLOCK)
        if copied < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return copied

    def consume(self, fd: int, size: int) -> None:
        """Take `size` bytes, which peek has seen, out of the pipe `fd`."""
        while size > 0:
            size -= os.splice(fd, self.null, size)

    def release(self) -> None:
        """Drop the held copy of what peek saw (after `consume`: it frees the pages)."""
        while self._kept > 0:
            self._kept -= os.splice(self._held[0], self.null, self._kept)


_tee: _Tee | None = None


def peek(fd: int) -> bytes:
    """What the pipe `fd` holds, left in it (b"" if it is empty or not a pipe)."""
    tee = _tee_for(fd)
    if tee is None:
        return b""
    try:
        return _buffer[: tee.peek(fd)]
    except OSError:
        return b""
    finally:
        tee.release()


def take(fd: int, size: int) -> None:
    """Take `size` bytes, which `peek` has seen, out of the pipe `fd`."""
    tee = _tee_for(fd)
    if tee is not None:
        tee.consume(fd, size)


def _grown(fd: int, capacity: int) -> int:
    """The capacity of the pipe `fd` (of `capacity`), grown to READ_SIZE if the kernel
    lets it: over the user's pipe budget it stays as it was (and is asked again at
    its next busy read)."""
    try:
        grown: int = fcntl.fcntl(fd, F_SETPIPE_SZ, READ_SIZE)
    except OSError:
        return capacity
    return grown


def _tee_for(fd: int) -> _Tee | None:
    """The tee kit if `fd` is a pipe (tee needs one), else None: read it plainly."""
    return None if _capacity_of(fd) is None else _tee_kit()


def _tee_kit() -> _Tee:
    global _tee
    if _tee is None:
        _tee = _Tee()
    return _tee


def _capacity_of(fd: int) -> int | None:
    """The capacity of the pipe `fd`; None if it is not a pipe."""
    try:
        capacity: int = fcntl.fcntl(fd, F_GETPIPE_SZ)
    except OSError:
        return None
    return capacity


class _Readers:
    """Every pump's pipe of one event loop in one epoll of their own, which the loop
    watches as a single reader: an asyncio reader per pipe costs a Handle, a copied
    context, a selector key and a bound method (about 400 bytes per pipe, two pipes
    per instance, thousands of instances mostly quiet); here a pipe costs its entry
    in `_pumps`. Level-triggered, as the loop's own: a pipe still readable after its
    turn (a wake-up takes at most epoll's default of events) is reported again.
    Made with a loop's first pipe, closed with its last, unless held (see `hold`)."""

    __slots__ = ("_epoll", "_held", "_loop", "_pumps")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()  # close-on-exec: a re-exec gets the pipes, not this
        self._pumps: dict[int, LogPump] = {}
        self._held = 0  # holders (see hold)
        loop.add_reader(self._epoll.fileno(), self._ready)

    @staticmethod
    def of(loop: asyncio.AbstractEventLoop) -> _Readers:
        readers = _readers.get(loop)
        if readers is None:
            readers = _readers[loop] = _Readers(loop)
        return readers

    def add(self, fd: int, pump: LogPump) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._pumps[fd] = pump

    def remove(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed: epoll forgets a closed fd only
        once every duplicate of it is closed too)."""
        self._epoll.unregister(fd)
        del self._pumps[fd]
        self._close_if_unused()

    def hung_up(self) -> list[LogPump]:
        """The pumps whose pipe lost its last writer and that have not read its end."""
        pumps = self._pumps
        ready = self._epoll.poll(0, HUNG_UP_MAX)
        return [pumps[fd] for fd, events in ready if events & select.EPOLLHUP and fd in pumps]

    def hold(self) -> Callable[[], None]:
        """Stay open until the returned function is called (see `hold`)."""
        self._held += 1
        return self._release

    def _release(self) -> None:
        self._held -= 1
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._pumps and not self._held:
            del _readers[self._loop]
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

    def _ready(self) -> None:
        pumps = self._pumps
        for fd, _events in self._epoll.poll(0):
            # Looked up at its turn: an earlier pump's sink may have closed this one
            # (and its fd may be another pump's by now: a read that finds nothing).
            pump = pumps.get(fd)
            if pump is not None:
                pump._readable()


_readers: dict[asyncio.AbstractEventLoop, _Readers] = {}


def hung_up(loop: asyncio.AbstractEventLoop) -> list[LogPump]:
    """The loop's pumps whose pipe lost its last writer (its process exited, or closed
    it) and that have not read its end yet: a look at the epoll, no read."""
    readers = _readers.get(loop)
    return readers.hung_up() if readers is not None else []


def hold(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Keep the loop's epoll of pipes open, also while it watches none, until the
    returned function is called. The supervisor holds it: a pump made while the
    daemon is out of fds then needs none (making the epoll failed, out of the
    loop, for a lone crash-looping instance whose new process was running), and
    such an instance does not make and close an epoll per run."""
    return _Readers.of(loop).hold()


def pause_for(got: int, elapsed: float, capacity: int, paused: float | None) -> float | None:
    """How long to wait before the next read, after reading `got` bytes from a pipe of
    `capacity` bytes `elapsed` seconds after the previous read; None: read when
    readable. `paused`: the pause this read ended, so the bytes gathered over
    `elapsed` (the previous read emptied the pipe); None: told readable by the epoll,
    perhaps after a quiet spell, so the bytes may have come in its last moment."""
    if not got or capacity < BATCH:
        return None
    rate = got / max(elapsed, 1e-6)  # the child's, or less: see below
    if got >= capacity * 3 // 4:
        # The pipe was nearly full, perhaps full: the read measured the pipe, not the
        # child. The next read, timed, measures the child.
        pause = QUICK
    elif got >= FLOOD_READ:
        fitted = rate
        if paused is None:
            # Fitted as if the bytes came since the loop was told, which it is within
            # about TIMER_SLACK when not busy. Their rate over a quiet spell's seconds
            # made the pump pause MAX_PAUSE at a flood's first read, while the child
            # filled its 1 MiB pipe in 5 ms and waited 15.
            paused = TIMER_SLACK
            fitted = got / max(min(elapsed, TIMER_SLACK), 1e-6)
        # At most twice the last pause: a child descheduled during most of an interval
        # shows a fraction of its rate, and a pause fitted to that let the pipe fill
        # (seen: 6 ms after pauses of 2 ms, and 15 ms after one of 1 ms that the
        # loop, busy, ended 7 ms late).
        pause = min(MAX_PAUSE, min(BATCH, capacity // 4) / fitted, 2 * paused)
    elif elapsed < QUICK:
        pause = QUICK
    else:
        return None
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
    # Two per instance: without a __dict__ each takes a few hundred bytes less.
    __slots__ = (
        "_batches",
        "_capacity",
        "_fd",
        "_last_read",
        "_loop",
        "_on_close",
        "_partial",
        "_paused",
        "_sink",
        "_tee",
        "instance",
        "stream",
    )

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
        batches: Batches | None = None,
        capacity: int | None = None,
        now: float | None = None,
    ) -> None:
        """`capacity`: that of the pipe `fd`, when its maker knows it (NEW_PIPE);
        otherwise the kernel is asked whether `fd` is a pipe, and how large. `now`:
        the loop's time, when the maker has it (a spawn makes two pumps)."""
        self._loop = loop
        self._fd = fd
        self.instance = instance
        self.stream = stream
        self._sink = sink
        self._on_close = on_close
        self._partial = partial  # a line begun but not ended (handed over by a re-exec)
        self._batches = batches
        self._paused: asyncio.TimerHandle | None = None
        self._last_read = loop.time() if now is None else now
        if capacity is None:
            capacity = _capacity_of(fd)
        # Not a pipe (a pty, a socket): no pauses, and plain reads. (The kit and the
        # readers looked up here first: two pumps are made per spawn of a wave.)
        self._tee = None if capacity is None else (_tee or _tee_kit())
        self._capacity = capacity or 0
        (_readers.get(loop) or _Readers.of(loop)).add(fd, self)

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
                _readers[self._loop].remove(fd)
            os.set_inheritable(fd, True)
        self._fd, self._partial = -1, b""
        return fd, partial

    def _readable(self) -> None:
        """The pipe is readable (told by _Readers): read, and stop watching it if the
        next read is to wait."""
        got, pause = self._read_timed(None)
        if pause is not None and not self.closed:
            _readers[self._loop].remove(self._fd)
            silent = 0.0 if got >= FLOOD_READ else None
            self._paused = self._loop.call_later(pause, self._resume, pause, silent)

    def _resume(self, paused: float, silent: float | None) -> None:
        """A pause of `paused` seconds is over: read what gathered meanwhile, without watching
        the pipe first (there is something to read, or the pause would not have been taken),
        and only if the next read is not to wait either, watch it again. A flood is then
        read from timer to timer, the pipe never in the epoll: no syscalls to watch and
        unwatch it, no loop turn to learn that it is readable, and above all no cost to the
        child. While a pipe is watched, every write to it runs epoll's callbacks (ours, and
        the loop's epoll above it); watched from the pause's end until its batch was
        written, a quarter of a flooding child's writes paid for them: its CPU per MB was
        5-9% higher (measured with the child and the daemon on separate CPUs, as on a quiet
        machine).

        `silent`: None, or the pauses follow a flood's read (FLOOD_READ or more) and
        `silent` seconds of them found nothing. A flood's pause that ends on an empty pipe
        is taken again, until MAX_PAUSE of them found nothing, before the pipe is watched
        again: on a busy machine the child is often only waiting for a CPU (at load 3-4,
        18 to 249 of a flood's 430-690 timed reads found nothing), and watched again at
        once, the pipe was watched for up to a fifth of the flood, every write the child
        made meanwhile paying epoll's callbacks and the first waking the loop for a few
        lines. The same pause, not a longer one: it was fitted to the child's rate, so
        the pipe does not fill when it runs again. A flood that has ended is watched
        again within MAX_PAUSE."""
        pause, got = None, 0
        try:
            got, pause = self._read_timed(paused)
            if not got and silent is not None and silent + paused < MAX_PAUSE:
                pause, silent = paused, silent + paused
            else:
                silent = 0.0 if got >= FLOOD_READ else None
        finally:
            # _paused (the spent handle) said "not watched" during the read, for a
            # close() there; a sink that raised leaves the pipe watched, to retry.
            if pause is not None and not self.closed:
                self._paused = self._loop.call_later(pause, self._resume, pause, silent)
            elif not self.closed:
                self._paused = None
                _Readers.of(self._loop).add(self._fd, self)

    def _read_timed(self, paused: float | None) -> tuple[int, float | None]:
        """Read one batch: the bytes read, and how long to wait before the next (None:
        until readable). `paused`: the pause the read ends, None if told by the epoll."""
        now = self._loop.time()
        elapsed, self._last_read = now - self._last_read, now
        got = self._read_once()
        if got >= FLOOD_READ and 0 < self._capacity < READ_SIZE and not self.closed:
            self._capacity = _grown(self._fd, self._capacity)  # busy: see NEW_PIPE
        return got, pause_for(got, elapsed, self._capacity, paused)

    def drain(self, *, close: bool = True) -> None:
        """Read whatever is in the pipe now, without waiting for more; at its end, close
        it unless `close` is False (then a later drain or read closes it)."""
        while not self.closed and self._read_once(close):
            pass

    def _read_once(self, close: bool = True) -> int:
        """Read and hand over one batch; the bytes read (0: nothing now, or the end,
        where the pump closes if `close`). From a pipe they are consumed only once the
        sink has written them."""
        tee = self._tee
        try:
            size = tee.peek(self._fd) if tee is not None else os.readv(self._fd, [_view])
        except BlockingIOError:
            return 0
        except OSError:
            size = 0
        if not size:
            if close:
                self.close()
            else:
                self._hand_over_partial()  # the end ends the line begun, as close() does
            return 0
        if tee is None:
            self._hand_over_read(size)
            return size
        batches = self._batches
        if batches is not None:
            batches.begin_batch(self.instance, self.stream, len(self._partial))
        try:
            self._hand_over_read(size)
        finally:
            # Even if a sink failed: the same bytes again would fail again, forever.
            if self._fd >= 0:
                tee.consume(self._fd, size)
            tee.release()
            if batches is not None:
                batches.end_batch(self.instance)
        return size

    def _hand_over_read(self, size: int) -> None:
        """Hand over the complete lines among the `size` bytes in `_buffer`, and hold
        the rest. Everything is copied out of the shared buffer before any sink runs."""
        end = _buffer.rfind(b"\n", 0, size)
        if end < 0:
            self._partial += _view[:size]
            if len(self._partial) > MAX_LINE:
                self._hand_over_cut()
            return
        # Sliced from the mmap, not bytes() of a memoryview: one memcpy, where the
        # buffer protocol's copy took 2.5 times as long (25 us for 500 KB).
        lines = self._partial + _view[:end] if self._partial else _buffer[:end]
        self._partial = _buffer[end + 1 : size]
        now = time.time()
        if _all_short(lines):
            self._sink(self.instance, self.stream, lines, now)
        else:
            self._hand_over_long(lines, now)
        if len(self._partial) > MAX_LINE:
            self._hand_over_cut()

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

    def _hand_over_partial(self) -> None:
        """The line begun and never ended, at the pipe's end: as it is, unmarked."""
        if self._partial:
            self._sink(self.instance, self.stream, self._partial, time.time())
            self._partial = b""

    def close(self) -> None:
        if self._fd < 0:
            return
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        else:
            _readers[self._loop].remove(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._hand_over_partial()
        if self._on_close is not None:
            self._on_close(self)
