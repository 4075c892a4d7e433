"""LogPump on a real pipe: whatever the reads are, the lines handed over are the lines
written, in order, whole; lines longer than MAX_LINE come as pieces of MAX_LINE bytes
cut from the line's start, every piece but the last in a batch marked `+`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.core.logline import CUT
from herdsman.runtime import pump
from herdsman.runtime.pump import MAX_LINE, NEW_PIPE, LogPump
from tests.runtime.harness import until

F_SETPIPE_SZ = 1031
K = MAX_LINE
# Line lengths around the bounds that matter: the cut, the half-blocks of the
# fast check, and a read's end.
LENGTHS = st.sampled_from(
    [0, 1, 99, K // 2 - 1, K // 2, K // 2 + 1, K - 1, K, K + 1, 2 * K, 2 * K + 7, 3 * K + 1]
) | st.integers(0, 3 * K)


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop that is never run: the pumps are driven with drain()."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


class Caught:
    def __init__(self) -> None:
        self.batches: list[tuple[str, bytes]] = []

    def __call__(self, instance: str, stream: str, lines: bytes, ts: float) -> None:
        assert instance == "web"
        assert ts > 0
        self.batches.append((stream, lines))

    def pieces(self) -> list[tuple[bool, bytes]]:
        """(marked, text) of every line handed over, in order."""
        return [
            (stream.endswith(CUT), line)
            for stream, lines in self.batches
            for line in lines.split(b"\n")
        ]


def run(loop: asyncio.AbstractEventLoop, data: bytes, cuts: list[int]) -> Caught:
    """Write `data` into a pipe in the pieces `cuts` makes, the pump reading
    everything after each piece, then end it."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.fcntl(w, F_SETPIPE_SZ, pump.READ_SIZE)
    caught = Caught()
    p = LogPump(loop, r, "web", "out", caught)
    try:
        start = 0
        for end in [*sorted(set(cuts)), len(data)]:
            chunk = data[start:end]
            while chunk:  # the pipe holds a megabyte; pieces are smaller than that
                chunk = chunk[os.write(w, chunk) :]
                p.drain()
            start = max(start, end)
    finally:
        os.close(w)
    p.drain()  # the end of file: the last line without newline, then closed
    assert p.closed
    return caught


def expected(lines: list[bytes]) -> list[tuple[bool, bytes]]:
    out = []
    for line in lines:
        cut = [line[i : i + K] for i in range(0, len(line), K)] or [b""]
        out += [(True, piece) for piece in cut[:-1]] + [(False, cut[-1])]
    return out


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(LENGTHS, min_size=1, max_size=8),
    ends_with_newline=st.booleans(),
    cuts=st.lists(st.integers(0, 20 * K), max_size=6),
)
def test_lines_whole_in_order_and_long_ones_cut_and_marked(
    lengths: list[int], ends_with_newline: bool, cuts: list[int]
) -> None:
    # Each line its own letter, so a piece in the wrong place shows.
    data = b"\n".join(bytes([97 + i % 26]) * n for i, n in enumerate(lengths))
    data += b"\n" if ends_with_newline else b""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # a newline at the end ends the last line; no empty line follows
    with event_loop() as loop:
        caught = run(loop, data, [c for c in cuts if c < len(data)])
    assert caught.pieces() == expected(lines)
    assert all(len(line) == K for marked, line in caught.pieces() if marked)


def test_a_flood_of_short_lines_comes_in_few_batches() -> None:
    lines = [b"line %07d " % i + b"x" * 80 for i in range(50_000)]
    with event_loop() as loop:
        caught = run(loop, b"\n".join(lines) + b"\n", list(range(0, 5_000_000, 900_000)))
    assert caught.pieces() == [(False, line) for line in lines]
    assert len(caught.batches) < 20
    assert all(stream == "out" for stream, _ in caught.batches)


def test_the_held_partial_line_is_the_pumps_state() -> None:
    """What a re-exec hands over: the fd and the held bytes make an equivalent pump."""
    with event_loop() as loop:
        handed_over(loop)


def handed_over(loop: asyncio.AbstractEventLoop) -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    caught = Caught()
    first = LogPump(loop, r, "web", "out", caught)
    os.write(w, b"one\ntw")
    first.drain()
    fd, held = first.hand_over()
    assert (fd, held) == (r, b"tw")
    second = LogPump(loop, fd, "web", "out", caught, partial=held)
    os.write(w, b"o\nthree")
    os.close(w)
    second.drain()
    assert caught.pieces() == [(False, b"one"), (False, b"two"), (False, b"three")]


def test_a_drain_that_leaves_the_pipe_open_still_ends_the_last_line() -> None:
    """An exit's stderr is drained for its last line before the herd hears of the exit,
    and closed only after the respawn is on its way (see Supervisor._exited): the line
    the process never ended comes at the pipe's end all the same, once, and the next
    drain closes the pump."""
    with event_loop() as loop:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        caught = Caught()
        p = LogPump(loop, r, "web", "err", caught)
        os.write(w, b"one\nfatal: no config")
        os.close(w)
        p.drain(close=False)
        assert not p.closed
        assert caught.pieces() == [(False, b"one"), (False, b"fatal: no config")]
        p.drain()
        assert p.closed
        assert caught.pieces() == [(False, b"one"), (False, b"fatal: no config")]


def test_hung_up_lists_the_pumps_whose_pipe_lost_its_writer_before_they_read_it() -> None:
    """What the reaper is hinted at (a process's pipes hang up as it exits): a look at
    the epoll, which reads nothing; a pump that has read its pipe's end is gone."""
    with event_loop() as loop:
        ends = [os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC) for _ in range(2)]
        caught = Caught()
        alive, ended = (LogPump(loop, r, "web", "out", caught) for r, _w in ends)
        os.write(ends[1][1], b"last\n")
        os.close(ends[1][1])
        try:
            assert pump.hung_up(loop) == [ended]
            assert pump.hung_up(loop) == [ended]  # level-triggered: still there
            ended.drain()
            assert caught.pieces() == [(False, b"last")]
            assert ended.closed
            assert pump.hung_up(loop) == []
        finally:
            alive.close()
            os.close(ends[0][1])


@given(before=st.integers(0, 3 * K), length=st.integers(K + 1, 2 * K), after=st.integers(0, K))
def test_the_quick_check_finds_a_long_line_wherever_it_is(
    before: int, length: int, after: int
) -> None:
    """The pumps skip looking at lines when every HALF_LINE block has a newline;
    that must never pass over a line longer than MAX_LINE, at any offset."""
    short = b"123456789\n"
    data = (short * (before // 10 + 1))[:before] + b"\n" + b"x" * length + b"\n" + short * after
    assert not pump._all_short(data)
    assert pump._all_short(short * (before + after + 1))


@given(
    got=st.integers(0, 1 << 20),
    elapsed=st.floats(0, 1),
    capacity=st.sampled_from([4096, 16 * 4096, 64 * 4096, 1 << 20]),
    paused=st.none() | st.floats(pump.QUICK, pump.MAX_PAUSE),
)
def test_a_pause_never_lets_the_pipe_fill(
    got: int, elapsed: float, capacity: int, paused: float | None
) -> None:
    """At the rate just seen, the pipe holds what gathers during the pause and the
    loop's lateness with room to spare; a small read is paused for only right after
    another read, and then for QUICK; a pipe too small for a flood's batch is read
    as it comes."""
    pause = pump.pause_for(got, elapsed, capacity, paused)
    if got < pump.FLOOD_READ and (not got or elapsed >= pump.QUICK or capacity < pump.BATCH):
        assert pause is None
    if got < pump.FLOOD_READ and pause is not None:
        assert pause == pump.QUICK
    if capacity < pump.BATCH:
        assert pause is None
    if pause is not None:
        rate = got / max(elapsed, 1e-6)
        assert 0 <= pause <= pump.MAX_PAUSE
        assert rate * (pause + pump.TIMER_SLACK) <= capacity * 3 / 4


def test_small_pieces_back_to_back_are_gathered() -> None:
    """A child writing a line at a time without pause: read at once, every line would
    wake the loop (and, on the child's CPU, stop the child), a line per read. A small
    read right after the last one waits QUICK; one after a quiet spell does not."""
    assert pump.pause_for(100, 40e-6, 1 << 20, None) == pump.QUICK
    assert pump.pause_for(100, 0.5, 1 << 20, None) is None
    assert pump.pause_for(0, 40e-6, 1 << 20, None) is None  # nothing there: wait until readable
    # A pipe too small for what the child seems to write meanwhile: read as it comes.
    assert pump.pause_for(4000, 10e-6, 4096, None) is None
    # Nor where a child held back could fill the pipe during the pause (its rate
    # is unknown): a small pipe (the size refused) is read as it comes.
    assert pump.pause_for(100, 400e-6, 64 * 1024, None) is None


def test_a_flood_told_by_the_epoll_is_not_taken_for_a_slow_child() -> None:
    """The first read of a flood is told by the epoll after a quiet spell: its bytes
    came since the loop was told, not over the seconds since the last read. Paused
    for what that rate implies (MAX_PAUSE), the pump let a 190 MB/s child fill its
    1 MiB pipe in 5 ms and wait 15 ms of every 1 s run (perf sched)."""
    mib = 1 << 20
    pause = pump.pause_for(300_000, 5.0, mib, None)
    assert pause is not None
    assert 190e6 * (pause + pump.TIMER_SLACK) < mib * 3 / 4
    assert pump.pause_for(10_000, 3.0, mib, None) == 2 * pump.TIMER_SLACK
    # Measured over a pause of its own, the rate is the child's: BATCH gathers.
    pause = pump.pause_for(190_000, 0.001, mib, pump.QUICK)
    assert pause is not None
    assert abs(pause - pump.BATCH / 190e6) < 1e-4


def test_a_nearly_full_pipe_is_read_again_soon() -> None:
    """A read of three quarters of the pipe or more may have found it full: the child
    waited, and its rate is more than the read's. The pump does not fit a pause to
    that rate (which would let the pipe fill again), it measures anew; nor does it
    leave the pipe in the epoll when the loop was late, told by the epoll: the
    child would pay epoll's callbacks on every write (the floods' CPU per MB was
    25% higher, 50 of them on a busy machine)."""
    mib = 1 << 20
    assert pump.pause_for(mib, 0.03, mib, 0.02) == pump.QUICK
    assert pump.pause_for(mib * 3 // 4, 0.03, mib, 0.02) == pump.QUICK
    assert pump.pause_for(900_000, 0.05, mib, None) == pump.QUICK


def test_a_pause_at_most_doubles() -> None:
    """A child descheduled for most of an interval shows a fraction of its rate; the
    next pause is at most twice the last, not one fitted to that rate (seen: a 6 ms
    pause after 2 ms ones, a 15 ms one after 1 ms that a busy loop ended 7 ms late,
    and the child blocked on its full pipe)."""
    mib = 1 << 20
    assert pump.pause_for(100_000, 0.002, mib, 0.002) == 0.004
    assert pump.pause_for(100_000, 0.0075, mib, pump.QUICK) == 2 * pump.QUICK


def test_a_flood_is_read_with_its_pipe_out_of_the_epoll() -> None:
    """Every write to a watched pipe runs epoll's callbacks, a cost to the child (its
    CPU per MB was 5-9% higher): once a flood's read has paused the pump, each next
    batch is read at the pause's end with the pipe not watched, to the end.

    The child writes its next 64 KiB once the last were read, so every read at a
    pause's end finds some, however late a busy machine runs the loop (the child
    writes in a loop turn before the timer's: it was woken first). A child writing
    on its own timer, in the same loop, could write after the pump's timer in a late
    turn: the pump finds the pipe empty and, once MAX_PAUSE of its pauses found nothing,
    rightly watches it again."""
    watched: list[bool] = []
    lines: list[bytes] = []

    async def flood() -> None:
        loop = asyncio.get_running_loop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(w, F_SETPIPE_SZ, pump.READ_SIZE)
        read = asyncio.Event()

        def sink(instance: str, stream: str, batch: bytes, ts: float) -> None:
            readers = pump._readers.get(loop)
            watched.append(readers is not None and r in readers._pumps)
            lines.extend(batch.split(b"\n"))
            read.set()

        ended = asyncio.Event()
        LogPump(loop, r, "web", "out", sink, lambda _pump: ended.set())
        await asyncio.sleep(0.01)  # the first read: 64 KiB gathered at a flood's rate
        for n in range(20):
            os.write(w, b"".join(b"%05d " % (n * 640 + i) + b"x" * 93 + b"\n" for i in range(640)))
            await read.wait()
            read.clear()
        os.close(w)
        await ended.wait()

    asyncio.run(asyncio.wait_for(flood(), 30))
    assert lines == [b"%05d " % i + b"x" * 93 for i in range(20 * 640)]
    assert watched[0], "the first read is told by the epoll"
    assert len(watched) == 20
    assert not any(watched[1:]), watched


def test_a_spawned_pipe_grows_once_a_read_finds_it_busy() -> None:
    """A spawn's pipes keep the kernel's default size (NEW_PIPE): the pump grows one
    to READ_SIZE at its first read of FLOOD_READ or more, for fewer, larger reads,
    and leaves a quiet one as it is."""
    sizes: dict[str, int] = {}

    async def body() -> None:
        loop = asyncio.get_running_loop()
        read: list[bytes] = []
        quiet, busy = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC), os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        pumps = [
            LogPump(loop, r, "web", "out", lambda *batch: read.append(batch[2]), capacity=NEW_PIPE)
            for r, _w in (quiet, busy)
        ]
        try:
            os.write(quiet[1], b"a line\n")
            await until(lambda: read)
            os.write(busy[1], (b"x" * 99 + b"\n") * (pump.FLOOD_READ // 100 + 1))
            await until(lambda: len(read) == 2)
            sizes.update(quiet=pipe_size(quiet[1]), busy=pipe_size(busy[1]))
        finally:
            for p, (_r, w) in zip(pumps, (quiet, busy), strict=True):
                p.close()
                os.close(w)

    asyncio.run(asyncio.wait_for(body(), 30))
    assert sizes["quiet"] <= NEW_PIPE < pump.READ_SIZE
    assert sizes["busy"] == pump.READ_SIZE


def pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


@given(capacity=st.sampled_from([16 * 4096, 64 * 4096, 1 << 20]), rate=st.floats(1e5, 1e9))
def test_a_full_pipe_shortens_the_next_pause(capacity: int, rate: float) -> None:
    """The lock-in this guards against: reads of a full pipe measure the pipe, and
    with a pause that lets it fill, the pump would never read faster. Starting from
    any pause, a child writing at `rate` must end up never blocked."""
    pause: float | None = pump.MAX_PAUSE
    for _ in range(50):
        if pause is None:
            return
        elapsed = pause + pump.TIMER_SLACK
        got = min(int(rate * elapsed), capacity)  # a full pipe holds its capacity at most
        pause = pump.pause_for(got, elapsed, capacity, pause)
    assert pause is None or rate * (pause + pump.TIMER_SLACK) < capacity


def unread(fd: int) -> int:
    """Bytes waiting in a pipe."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


def test_a_large_reads_pages_are_freed_from_the_held_copy_not_the_services_pipe() -> None:
    """Consuming a large read only drops the service pipe's references: the held copy
    keeps the pages until it is released, so they are freed under its lock, not
    under the one the child's every write takes (freeing a flood's batch there,
    35-55 us a read, kept the child waiting). A small read is not held."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.fcntl(w, F_SETPIPE_SZ, pump.READ_SIZE)
    tee = pump._tee_kit()
    large = b"x" * (pump.HOLD_FROM - 1) + b"\n"
    try:
        os.write(w, large)
        assert tee.peek(r) == len(large)
        assert pump._buffer[: len(large)] == large
        tee.consume(r, len(large))
        assert (unread(r), unread(tee._held[0])) == (0, len(large))
        tee.release()
        assert unread(tee._held[0]) == 0
        os.write(w, b"small\n")
        assert tee.peek(r) == 6
        assert unread(tee._held[0]) == 0
        tee.consume(r, 6)
        assert unread(r) == 0
    finally:
        os.close(r)
        os.close(w)


def test_a_peek_without_take_leaves_nothing_held() -> None:
    """Settling an adopted pipe peeks and may take nothing: the next read sees the
    pipe's bytes, not those of the held copy left from the peek."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    caught = Caught()
    with event_loop() as loop:
        os.write(w, b"old\n")
        assert pump.peek(r) == b"old\n"
        os.write(w, b"new\n")
        p = LogPump(loop, r, "web", "out", caught)
        os.close(w)
        p.drain()
    assert caught.pieces() == [(False, b"old"), (False, b"new")]


def test_a_pump_closed_by_its_sink_leaves_nothing_held() -> None:
    """A sink may close its pump (the instance is gone): its read is not consumed from
    the closed pipe, and the held copy is released all the same, so the next pump's
    read is its own bytes."""
    first_r, first_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    second_r, second_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    caught = Caught()
    with event_loop() as loop:
        first = LogPump(loop, first_r, "web", "out", lambda *_: first.close())
        second = LogPump(loop, second_r, "web", "out", caught)
        os.write(first_w, b"first\n")
        first.drain()
        assert first.closed
        os.write(second_w, b"second\n")
        os.close(second_w)
        second.drain()
    os.close(first_w)
    assert caught.pieces() == [(False, b"second")]


@pytest.mark.parametrize("refused", ["held", "copy"])
def test_the_held_copy_is_never_larger_than_the_one_read(
    refused: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held copy must fit in the pipe it is teed into to be read, buffer for
    buffer (a pipe holds so many buffers, each perhaps a few bytes). When only one
    of the two could be made large (a user's pipe budget, spent between the two),
    the held one is made no larger than the other, never larger than it could be,
    and every byte is read."""
    real = fcntl.fcntl
    growing = iter(["held", "copy"])  # the order the kit sizes them in

    def budget(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == F_SETPIPE_SZ and arg > 16 * 4096 and next(growing) == refused:
            raise PermissionError(1, "Operation not permitted")
        return real(fd, cmd, arg)

    monkeypatch.setattr(pump, "_tee", None)  # a kit of its own, made under the budget
    monkeypatch.setattr(fcntl, "fcntl", budget)
    tee = pump._tee_kit()
    monkeypatch.setattr(fcntl, "fcntl", real)
    assert real(tee._held[1], fcntl.F_GETPIPE_SZ) <= real(tee._copy[1], fcntl.F_GETPIPE_SZ)
    source = tmp_path / "lines"
    source.write_bytes(b"".join(b"line %02d\n" % i for i in range(40)))
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    real(w, F_SETPIPE_SZ, pump.READ_SIZE)
    caught = Caught()
    with event_loop() as loop, open(source, "rb") as f:
        for offset in range(0, 40 * 8, 8):  # one buffer per splice: 40 of 8 bytes
            os.splice(f.fileno(), w, 8, offset_src=offset)
        p = LogPump(loop, r, "web", "out", caught)
        os.close(w)
        p.drain()
    assert caught.pieces() == [(False, b"line %02d" % i) for i in range(40)]


@pytest.mark.parametrize("size", [100, 2 * pump.HOLD_FROM])
def test_a_read_that_fails_leaves_nothing_behind(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that fails after the tee (the pump then ends, as at end of file) leaves
    nothing in the private pipes: the next pump's read is its own bytes."""
    readv = os.readv
    failing = [True]

    def fails_once(fd: int, buffers: list[memoryview]) -> int:
        if failing.pop():
            raise OSError(5, "Input/output error")
        return readv(fd, buffers)

    first_r, first_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    second_r, second_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    for w in (first_w, second_w):
        fcntl.fcntl(w, F_SETPIPE_SZ, pump.READ_SIZE)
    caught = Caught()
    with event_loop() as loop:
        first = LogPump(loop, first_r, "web", "out", caught)
        second = LogPump(loop, second_r, "web", "out", caught)
        os.write(first_w, b"x" * (size - 1) + b"\n")
        monkeypatch.setattr(os, "readv", fails_once)
        first.drain()
        monkeypatch.setattr(os, "readv", readv)
        assert first.closed
        os.write(second_w, b"second\n")
        os.close(second_w)
        second.drain()
    os.close(first_w)
    assert caught.pieces() == [(False, b"second")]


def registered_in_an_epoll(fd: int) -> bool:
    """Whether any epoll of this process has `fd` in its interest list (its fdinfo
    lists a `tfd:` line per fd registered)."""
    for name in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{name}") as f:
            if any(line.split()[:2] == ["tfd:", str(fd)] for line in f):
                return True
    return False


def test_a_flood_that_stops_for_a_moment_stays_unwatched() -> None:
    """On a busy machine a flooding child waits for a CPU now and then, and a timed
    read finds its pipe empty. Watched again at once, every write the child made when
    it ran again paid epoll's callbacks (at load 3-4 the pipe was watched for up to a
    fifth of a flood). A flood's pause that ends on an empty pipe is taken again,
    until MAX_PAUSE of them found nothing: during a silence of 15 ms (the pause here
    is at most 2 * TIMER_SLACK, and the pipe was watched again at its end), the pipe
    is never in an epoll; after MAX_PAUSE of silence, it is again."""
    seen: list[bool] = []
    later: list[bool] = []

    async def body() -> None:
        loop = asyncio.get_running_loop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.fcntl(w, F_SETPIPE_SZ, pump.READ_SIZE)
        read = asyncio.Event()
        p = LogPump(loop, r, "web", "out", lambda _i, _s, _b, _t: read.set())
        try:
            await asyncio.sleep(0.01)  # the first read: 64 KiB gathered at a flood's rate
            os.write(w, (b"x" * 99 + b"\n") * 655)  # read, then a pause
            await asyncio.wait_for(read.wait(), 10)
            silent = loop.time()
            for _ in range(1000):  # looks, 15 ms of them (pauses of 4 ms until 20)
                await asyncio.sleep(0.001)
                if loop.time() - silent > 0.015:
                    break
                seen.append(registered_in_an_epoll(r))
            for _ in range(2000):  # 10 s at most
                if registered_in_an_epoll(r):
                    break
                await asyncio.sleep(0.005)
            later.append(registered_in_an_epoll(r))
        finally:
            p.close()
            os.close(w)

    asyncio.run(body())
    assert not any(seen), seen
    assert later == [True]
