"""Log files: the line format, rotation, and write errors."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.core.logline import count_lines, format_lines
from herdsman.runtime.logfile import SAID_BATCH, DaemonFormatter, Lines, LogFile, LogHandler

LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (out|err) (.*)$")


def test_format_is_timestamp_stream_and_the_text_unchanged() -> None:
    lines = b"hello\n\ncaf\xe9 \x00 tab\tend"
    formatted = format_lines(lines, "err", 1795000000.123456)
    assert b"".join(formatted) == (
        b"2026-11-18T11:06:40.123456Z err hello\n"
        b"2026-11-18T11:06:40.123456Z err \n"
        b"2026-11-18T11:06:40.123456Z err caf\xe9 \x00 tab\tend\n"
    )
    assert count_lines(lines, formatted) == 3
    assert count_lines(b"", format_lines(b"", "out", 0.0)) == 1  # one empty line


@given(st.lists(st.binary().map(lambda b: b.replace(b"\n", b"")), min_size=1))
def test_count_lines_is_the_number_of_lines(lines: list[bytes]) -> None:
    joined = b"\n".join(lines)
    formatted = format_lines(joined, "out+", 1795000000.5)
    assert count_lines(joined, formatted) == len(lines)
    assert b"".join(formatted).count(b" out+ ") >= len(lines)


def test_one_writev_per_batch(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.writev

    def writev(fd: int, parts: list[bytes]) -> int:
        calls.append(len(parts))
        return real(fd, parts)

    log = LogFile(tmp / "v.log", max_bytes=0, backups=0, on_error=lambda _name, _error: None)
    log.write(*format_lines(b"a\nb", "out", 0.0))
    monkeypatch.setattr(os, "writev", writev)
    log.write(*format_lines(b"c\nd\ne", "err", 0.0))
    log.close()
    assert calls == [3]
    assert [line[-5:] for line in (tmp / "v.log").read_bytes().splitlines()] == [
        b"out a",
        b"out b",
        b"err c",
        b"err d",
        b"err e",
    ]


def test_rotation_keeps_backups_and_loses_no_line(tmp: Path) -> None:
    errors: list[str | None] = []
    log = LogFile(tmp / "w.log", max_bytes=1000, backups=2, on_error=lambda _n, e: errors.append(e))
    for i in range(100):
        log.write(*format_lines(f"line {i:04d}".encode(), "out", 0.0))
    log.close()
    files = [tmp / "w.log.2", tmp / "w.log.1", tmp / "w.log"]
    assert all(f.exists() for f in files)
    assert not (tmp / "w.log.3").exists()
    assert all(f.stat().st_size <= 1000 for f in files)
    kept = [LINE.match(line).group(2) for f in files for line in f.read_bytes().splitlines()]  # type: ignore[union-attr]
    # the newest lines, in order, with no gap and no duplicate
    assert kept == [f"line {i:04d}".encode() for i in range(100 - len(kept), 100)]
    assert errors == []


def test_write_errors_are_reported_once_and_lines_held_until_writing_works(tmp: Path) -> None:
    errors: list[str | None] = []
    names: set[str] = set()

    def on_error(name: str, error: str | None) -> None:
        names.add(name)
        errors.append(error)

    log = LogFile(tmp / "gone" / "x.log", max_bytes=0, backups=0, on_error=on_error)
    log.write(b"first\n")
    log.write(b"second\n")
    assert errors == [f"cannot write {tmp}/gone/x.log: No such file or directory"]
    (tmp / "gone").mkdir()
    log.write(b"third\n")
    assert errors[-1] is None
    assert (tmp / "gone" / "x.log").read_bytes() == b"first\nsecond\nthird\n"
    assert names == {"x"}  # the instance the file is the log of
    log.close()


def test_disk_full_holds_lines_then_resumes(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[str | None] = []
    log = LogFile(tmp / "x.log", max_bytes=0, backups=0, on_error=lambda _n, e: errors.append(e))
    log.write(b"a\n")
    real_write = os.write

    real_writev = os.writev

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    monkeypatch.setattr(os, "writev", full)
    log.write(b"b\n")
    assert errors == [f"cannot write {tmp}/x.log: No space left on device"]
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "writev", real_writev)
    log.write(b"c\n")
    assert (tmp / "x.log").read_bytes() == b"a\nb\nc\n"
    assert errors == [f"cannot write {tmp}/x.log: No space left on device", None]
    log.close()


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_cached_timestamp_matches_datetime(ts: float) -> None:
    from datetime import UTC, datetime

    from herdsman.core.logline import timestamp

    expected = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    assert timestamp(ts) == expected


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    record = logging.LogRecord("herdsman", level, __file__, 1, message, None, None)
    record.created = 1795000000.1239  # the milliseconds are cut, not rounded
    return record


@pytest.mark.parametrize("as_json", [False, True])
def test_a_line_said_without_a_record_reads_as_a_logged_one(as_json: bool) -> None:
    formatter = DaemonFormatter(json=as_json)
    logged = formatter.format(_record("web.0: spawned pid 42"))
    said = formatter.line(1795000000.1239, "INFO", "herdsman", "web.0: spawned pid 42")
    assert said == logged
    if as_json:
        assert json.loads(logged) == {
            "time": "2026-11-18T11:06:40.123Z",
            "level": "INFO",
            "component": "herdsman",
            "message": "web.0: spawned pid 42",
        }
    else:
        assert logged == "2026-11-18T11:06:40.123Z INFO herdsman web.0: spawned pid 42"


def test_a_logged_traceback_follows_its_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record("internal error", logging.ERROR)
        record.exc_info = sys.exc_info()
    text = DaemonFormatter().format(record).splitlines()
    assert text[0] == "2026-11-18T11:06:40.123Z ERROR herdsman internal error"
    assert text[-1] == "RuntimeError: boom"
    event = json.loads(DaemonFormatter(json=True).format(record))
    assert event["message"] == "internal error"
    assert event["traceback"].endswith("RuntimeError: boom")


def test_lines_said_in_a_loop_turn_go_out_in_one_write_and_in_order(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = LogHandler(tmp / "herdsman.log", 0, 0)
    log = logging.getLogger("herdsman.test.lines")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.handlers[:] = [handler]
    lines = Lines(log.getChild("runtime"))  # as the daemon's: its records propagate
    writes: list[bytes] = []
    real = os.writev

    def writev(fd: int, parts: list[bytes]) -> int:
        writes.append(b"".join(parts))
        return real(fd, parts)

    monkeypatch.setattr(os, "writev", writev)

    said = 2 * SAID_BATCH + 5

    async def turns() -> None:
        for i in range(said):
            lines.log(logging.INFO, f"web.{i}: spawned pid {i}")
        # SAID_BATCH at a time (a wave's progress shows), the rest at the turn's end.
        assert [len(write.splitlines()) for write in writes] == [SAID_BATCH, SAID_BATCH]
        await asyncio.sleep(0)
        assert [len(write.splitlines()) for write in writes] == [SAID_BATCH, SAID_BATCH, 5]
        lines.log(logging.INFO, "web.0: starting -> running")
        log.warning("a record: what was said before it goes first")
        lines.log(logging.INFO, "web.1: starting -> running")

    asyncio.run(turns())
    handler.close()  # writes what is still said (the loop is gone)
    messages = [line.split(" ", 3)[3] for line in (tmp / "herdsman.log").read_text().splitlines()]
    assert messages == [
        *(f"web.{i}: spawned pid {i}" for i in range(said)),
        "web.0: starting -> running",
        "a record: what was said before it goes first",
        "web.1: starting -> running",
    ]
    assert len(writes) == 5


def test_lines_go_through_the_logger_when_another_handler_takes_them(tmp: Path) -> None:
    handler = LogHandler(tmp / "herdsman.log", 0, 0)
    log = logging.getLogger("herdsman.test.lines.console")
    log.propagate = False
    log.setLevel(logging.INFO)
    seen: list[str] = []
    console = logging.Handler(logging.WARNING)
    console.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    log.handlers[:] = [handler, console]
    lines = Lines(log)

    async def say() -> None:
        lines.log(logging.WARNING, "a 100% warning")  # no %-formatting either way
        lines.log(logging.INFO, "only in the file")

    asyncio.run(say())
    handler.close()
    assert seen == ["a 100% warning"]
    assert [line.split(" ", 3)[3] for line in (tmp / "herdsman.log").read_text().splitlines()] == [
        "a 100% warning",
        "only in the file",
    ]
