"""The log-line format, its one home: `<time> <stream> <text>` and a newline.

`<time>` is ISO-8601 UTC with microseconds (`2026-11-23T10:00:00.123456Z`), the
API's time form too; `<stream>` is `out` or `err`, marked with CUT (`out+`) on a
piece of a line longer than a pump takes at once, which the next line continues.
The daemon writes it (`format_lines`), the CLI reads it back when no daemon runs
(`parse_line`), and recovery reads it to settle a batch a killed daemon was
writing (positions.py).
"""

from __future__ import annotations

import math

STREAMS = ("out", "err")
CUT = "+"  # the mark on a stream whose lines are pieces continued by the next line
STAMP_WIDTH = len("2026-11-23T10:00:00.123456Z")

_second: tuple[int, bytes] = (-1, b"")


def timestamp(ts: float) -> bytes:
    """`2026-11-23T10:00:00.123456Z`; the seconds part is formatted once a second."""
    global _second
    fraction, seconds = math.modf(ts)  # rounded exactly as datetime.fromtimestamp does
    whole, micros = int(seconds), round(fraction * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if _second[0] != whole:
        _second = (whole, _utc(whole))
    return b"%s.%06dZ" % (_second[1], micros)


def _utc(seconds: int) -> bytes:
    """`2026-11-23T10:00:00` for `seconds` since the epoch, by Howard Hinnant's
    days-to-civil algorithm: the daemon does without datetime (half a megabyte of
    its memory, for this one line)."""
    days, rest = divmod(seconds, 86400)
    era, day_of_era = divmod(days + 719468, 146097)  # 400-year eras from 0000-03-01
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153  # 0 is March
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    year = era * 400 + year_of_era + (month <= 2)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    return b"%04d-%02d-%02dT%02d:%02d:%02d" % (year, month, day, hour, minute, second)


def format_lines(lines: bytes, stream: str, ts: float) -> tuple[bytes, bytes, bytes]:
    """`<timestamp> <stream> <text>\\n` for each of `lines` (joined by \\n), as three
    parts for one `writev`: the first line's prefix, everything else with each later
    line's prefix after the newline before it, and the last newline. The middle part
    is one `replace` in C, a single pass over the batch; nothing is copied twice."""
    prefix = timestamp(ts) + b" " + stream.encode() + b" "
    return prefix, lines.replace(b"\n", b"\n" + prefix), b"\n"


def count_lines(lines: bytes, formatted: tuple[bytes, bytes, bytes]) -> int:
    """How many lines a batch holds, known from formatting it without counting again:
    each line after the first added one prefix."""
    prefix, body, _ = formatted
    return (len(body) - len(lines)) // len(prefix) + 1


def unmark(stream: str) -> tuple[str, bool]:
    """A stream as a pump names it (`out`, `out+`): the stream, and whether its
    lines are pieces that the next line continues."""
    if stream.endswith(CUT):
        return stream[: -len(CUT)], True
    return stream, False


def parse_line(line: bytes) -> tuple[str, str, str, bool] | None:
    """One line of a log file (without its newline): its time, stream and text, and
    whether the next line continues it; None for a line not in that form."""
    stamp, space, rest = line.partition(b" ")
    marked, _, text = rest.partition(b" ")
    stream, partial = unmark(marked.decode("utf-8", "replace"))
    if not space or stream not in STREAMS or not stamp.endswith(b"Z"):
        return None
    return stamp.decode("utf-8", "replace"), stream, text.decode("utf-8", "replace"), partial
