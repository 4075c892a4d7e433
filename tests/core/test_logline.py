"""The log-line format has one home, core/logline.py: what the daemon writes to a
log file, the CLI reads back (no daemon running) as the daemon would have answered
it, and recovery reads back as the bytes the service wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from herdsman.cli.commands import parse_log_line
from herdsman.core import logline
from herdsman.runtime import documents, positions, pump

LINES = st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), min_size=1)
STREAMS = st.sampled_from([s + mark for s in logline.STREAMS for mark in ("", logline.CUT)])
TIMES = st.floats(min_value=0, max_value=4e9)


@given(LINES, STREAMS, TIMES)
def test_the_cli_reads_a_log_file_as_the_daemon_answers(
    lines: list[bytes], stream: str, ts: float
) -> None:
    written = b"".join(logline.format_lines(b"\n".join(lines), stream, ts))
    read = [parse_log_line("web.0", raw) for raw in written.split(b"\n")[:-1]]
    assert read == [documents.log_document(ts, "web.0", stream, line) for line in lines]


@given(LINES, STREAMS, TIMES)
def test_recovery_reads_a_log_file_as_the_bytes_written(
    lines: list[bytes], stream: str, ts: float
) -> None:
    written = b"".join(logline.format_lines(b"\n".join(lines), stream, ts))
    end = b"" if stream.endswith(logline.CUT) else b"\n"
    assert positions.raw_bytes(written) == b"".join(line + end for line in lines)


def test_a_line_not_in_the_format_is_kept_whole_without_a_time() -> None:
    assert logline.parse_line(b"no stamp here") is None
    assert parse_log_line("x", b"hello") == {"time": "", "instance": "x", "stream": "out", "line": "hello"}  # fmt: skip


def test_the_pump_and_the_documents_use_the_one_format() -> None:
    assert pump.CUT is logline.CUT
    assert documents.timestamp is logline.timestamp
    assert len(logline.timestamp(0.0)) == logline.STAMP_WIDTH


def test_timestamps_around_every_month_end_match_datetime() -> None:
    # Leap days, century years (2100 is not a leap year, 2000 was) and year ends,
    # where a date computed without datetime would go wrong first.
    start = datetime(1970, 1, 1, tzinfo=UTC)
    day = start
    while day.year < 2401:
        following = day + timedelta(days=1)
        if following.day == 1:
            for moment in (day + timedelta(hours=23, minutes=59, seconds=59), following):
                ts = (moment - start).total_seconds() + 0.25
                expected = moment.strftime("%Y-%m-%dT%H:%M:%S.250000Z").encode()
                assert logline.timestamp(ts) == expected
        day = following
