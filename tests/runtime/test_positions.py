"""Nothing leaves a pipe before it is in the log file, and a batch a killed daemon
was writing is settled by the next one: kept once, never lost, never twice.

The pump is driven on real pipes; the kill is played by stopping between the steps
a daemon takes (record, write, take, mark done) and settling as the next one would.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.core.logline import format_lines
from herdsman.runtime import pump
from herdsman.runtime.logfile import LogFile
from herdsman.runtime.positions import Positions, raw_bytes, settle


def unread(fd: int) -> int:
    """Bytes waiting in a pipe."""
    return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        os.close(fd)


class Files:
    """Log files and their positions, as a daemon keeps them."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.positions = Positions(directory / "logs.pos")
        self.positions.open()
        self.log = LogFile(directory / "web.log", 0, 1, lambda _name, _error: None, self.positions)

    def begin_batch(self, instance: str, stream: str, held: int) -> None:
        self.log.begin_batch(stream, held)

    def end_batch(self, instance: str) -> None:
        self.log.end_batch()

    def sink(self, instance: str, stream: str, lines: bytes, ts: float) -> None:
        self.log.write(*format_lines(lines, stream, ts))


def test_a_pipe_keeps_its_bytes_until_the_sink_wrote_them(pipe: tuple[int, int], tmp: Path) -> None:
    r, w = pipe
    files = Files(tmp)
    seen: list[int] = []

    def sink(instance: str, stream: str, lines: bytes, ts: float) -> None:
        seen.append(unread(r))  # what the pipe still holds while the sink writes
        files.sink(instance, stream, lines, ts)

    loop = asyncio.new_event_loop()
    try:
        one = pump.LogPump(loop, r, "web", "out", sink, batches=files)
        os.write(w, b"first\nsecond\n")
        one.drain()
        assert (seen, unread(r)) == ([13], 0)
        assert files.positions.pending() == {}  # done once taken
        one.hand_over()
    finally:
        loop.close()
    assert (tmp / "web.log").read_bytes().endswith(b" out second\n")


def begun(files: Files, stream: str, lines: bytes, held: int = 0) -> None:
    """A daemon that recorded a batch and wrote it, then died (before taking it)."""
    files.begin_batch("web", stream, held)
    files.sink("web", stream, lines, 1.5)


def test_written_but_not_taken_is_taken_unwritten(pipe: tuple[int, int], tmp: Path) -> None:
    r, w = pipe
    files = Files(tmp)
    files.sink("web", "out", b"before", 1.0)
    os.write(w, b"a\nb\nc\n")
    begun(files, "out", b"a\nb\nc")
    size = (tmp / "web.log").stat().st_size
    pending = files.positions.pending()[("web", "out")]
    cut, take = settle(pending, tmp / "web.log", pump.peek(r))
    assert (cut, take) == (size, 6)  # the file is whole: keep it; the pipe: take the batch
    pump.take(r, take)
    assert unread(r) == 0


def test_written_and_taken_is_left_alone(pipe: tuple[int, int], tmp: Path) -> None:
    r, w = pipe
    files = Files(tmp)
    os.write(w, b"a\nb\n")
    begun(files, "out", b"a\nb")
    pump.take(r, 4)  # taken, then killed before the slot was marked done
    os.write(w, b"c\n")  # what the service wrote next
    pending = files.positions.pending()[("web", "out")]
    assert settle(pending, tmp / "web.log", pump.peek(r)) == (-1, 0)


def test_a_write_cut_short_is_cut_back_to_its_whole_lines(pipe: tuple[int, int], tmp: Path) -> None:
    r, w = pipe
    files = Files(tmp)
    files.sink("web", "out", b"before", 1.0)
    start = (tmp / "web.log").stat().st_size
    os.write(w, b"one\ntwo\nthree\n")
    begun(files, "out", b"one\ntwo\nthree")
    whole = (tmp / "web.log").read_bytes()
    torn = whole[: whole.index(b" out two\n") + 6]  # the SIGKILL stopped it inside `two`
    (tmp / "web.log").write_bytes(torn)
    pending = files.positions.pending()[("web", "out")]
    cut, take = settle(pending, tmp / "web.log", pump.peek(r))
    assert take == 4  # `one\n`: in the file whole; the rest comes again from the pipe
    assert cut == torn.rindex(b"\n") + 1 > start


def test_a_line_begun_in_an_earlier_read_is_not_taken_again(
    pipe: tuple[int, int], tmp: Path
) -> None:
    r, w = pipe
    files = Files(tmp)
    os.write(w, b"end of it\nnext\n")  # `start of ` was read (and taken) before
    begun(files, "err", b"start of end of it\nnext", held=len(b"start of "))
    pending = files.positions.pending()[("web", "err")]
    assert settle(pending, tmp / "web.log", pump.peek(r))[1] == len(b"end of it\nnext\n")


def test_nothing_written_is_nothing_to_do(pipe: tuple[int, int], tmp: Path) -> None:
    r, w = pipe
    files = Files(tmp)
    os.write(w, b"a\n")
    files.begin_batch("web", "out", 0)
    files.positions.begin("web", "out", 0, 0)  # recorded, then killed before the write
    pending = files.positions.pending()[("web", "out")]
    assert settle(pending, tmp / "web.log", pump.peek(r)) == (-1, 0)


def test_a_batch_that_rotates_the_file_is_recorded_in_the_new_one(tmp: Path) -> None:
    files = Files(tmp)
    files.log = LogFile(tmp / "web.log", 100, 1, lambda _name, _error: None, files.positions)
    files.sink("web", "out", b"x" * 50, 1.0)
    begun(files, "out", b"y" * 50)  # over max_bytes: web.log becomes web.log.1 first
    assert (tmp / "web.log.1").exists()
    assert files.positions.pending()[("web", "out")].size == 0


def test_raw_bytes_undo_the_log_format() -> None:
    text = format_lines(b"x" * 50, "out", 1.0)
    assert raw_bytes(b"".join(text)) == b"x" * 50 + b"\n"
    pieces = b"".join(format_lines(b"abc\ndef", "out+", 1.0)) + b"".join(
        format_lines(b"ghi", "out", 1.0)
    )
    assert raw_bytes(pieces) == b"abcdefghi\n"  # `+` pieces join the line that ends them


def test_positions_start_afresh_and_keep_names(tmp: Path) -> None:
    positions = Positions(tmp / "logs.pos")
    positions.open()
    positions.begin("web.0", "out", 10, 0)
    positions.begin("web.1", "err", 20, 3)
    positions.done("web.0")
    pending = positions.pending()
    assert list(pending) == [("web.1", "err")]
    assert (pending[("web.1", "err")].size, pending[("web.1", "err")].held) == (20, 3)
    positions.open()  # the next daemon, once it has read them
    assert positions.pending() == {}
    positions.close()
