"""Unit parsers: every accepted form, and a clear sentence for each bad one."""

from __future__ import annotations

import re
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.config.units import (
    check_url,
    parse_address,
    parse_duration,
    parse_mode,
    parse_signal,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1h 2m 3s 4ms", 3723.004),
        ("0.1h", 360.0),
        ("10", 10.0),
        ("0.5", 0.5),
        (".5s", 0.5),
        (" 3 s ", 3.0),
        ("10S", 10.0),
        ("0", 0.0),
        (0, 0.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10x", "'10x' is not a duration (use e.g. '250ms'"),
        ("s", "'s' is not a duration"),
        ("1m30", "'1m30' is not a duration"),
        ("1.2.3s", "'1.2.3s' is not a duration"),
        ("", "an empty string is not a duration"),
        ("-5s", "must not be negative, not '-5s'"),
        (-1, "must not be negative, not -1"),
        (float("inf"), "must be a finite duration, not inf"),
        (True, "must be a duration (use e.g."),
        ([1], "must be a duration (use e.g. '250ms', '1.5s', '10s', '5m', '1h', '1m30s' or a"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_duration(value)


@given(
    hours=st.integers(0, 100),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    millis=st.integers(0, 999),
)
def test_duration_components_add_up(hours: int, minutes: int, seconds: int, millis: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected, abs=1e-9)


@given(st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False))
def test_duration_round_trips_through_each_unit(amount: object) -> None:
    seconds = float(str(amount))
    text = format(amount, "f")
    assert parse_duration(text) == seconds
    assert parse_duration(f"{text}s") == seconds
    assert parse_duration(f"{text}ms") == pytest.approx(seconds / 1000)
    assert parse_duration(f"{text}m") == pytest.approx(seconds * 60)
    assert parse_duration(seconds) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64KiB", 64 * 1024),
        ("512MiB", 512 * 1024**2),
        ("1GiB", 1024**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("10MB", 10_000_000),
        ("10KB", 10_000),
        ("2GB", 2_000_000_000),
        ("512M", 512 * 1024**2),
        ("1G", 1024**3),
        ("4k", 4096),
        ("100B", 100),
        ("100", 100),
        ("10 mib", 10 * 1024**2),
        (4096, 4096),
        (1e6, 1_000_000),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 parsecs", "'5 parsecs' is not a size (use e.g. '64KiB', '512MiB', '1GiB', '10MB' or"),
        ("MiB", "'MiB' is not a size"),
        ("1PiB", "'1PiB' is not a size"),
        ("-1KiB", "must not be negative, not '-1KiB'"),
        (-4, "must not be negative, not -4"),
        (1.5, "must be a whole number of bytes, not 1.5"),
        (False, "must be a size (use e.g."),
    ],
)
def test_bad_sizes(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_size(value)


@pytest.mark.parametrize("value", ["TERM", "SIGTERM", "term", "sigterm", " Term ", 15, "15"])
def test_signals(value: object) -> None:
    assert parse_signal(value) == signal.SIGTERM


def test_other_signals() -> None:
    assert parse_signal("HUP") == signal.SIGHUP
    assert parse_signal("SIGKILL") == signal.SIGKILL
    assert parse_signal("usr1") == signal.SIGUSR1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("TREM", "'TREM' is not a signal name (use e.g. 'TERM', 'INT', 'HUP' or a number)"),
        ("SIG", "'SIG' is not a signal name"),
        (0, "0 is not a signal number on this system"),
        (999, "999 is not a signal number on this system"),
        (1.0, "must be a signal name like 'TERM' or a number, not 1.0"),
    ],
)
def test_bad_signals(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_signal(value)


@pytest.mark.parametrize(
    ("value", "mode"),
    [("0660", 0o660), ("0600", 0o600), ("022", 0o22), ("0o755", 0o755), ("7", 7), (0o640, 0o640)],
)
def test_modes(value: object, mode: int) -> None:
    assert parse_mode(value) == mode


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0689", "'0689' is not an octal mode (use e.g. '0660' or '022')"),
        ("", "'' is not an octal mode"),
        ("01777", "must be between 0000 and 0777, not 0o1777"),
        (-1, "must be between 0000 and 0777, not -0o1"),
        (6.6, "must be an octal mode like '0660', not 6.6"),
    ],
)
def test_bad_modes(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        parse_mode(value)


def test_addresses() -> None:
    assert parse_address("127.0.0.1:9900") == ("127.0.0.1", 9900)
    assert parse_address("localhost:80") == ("localhost", 80)
    assert parse_address("[::1]:9900") == ("::1", 9900)


@pytest.mark.parametrize("value", ["localhost", ":80", "host:0", "host:65536", "host:http", ""])
def test_bad_addresses(value: str) -> None:
    with pytest.raises(ValueError, match="is not a host:port address"):
        parse_address(value)


def test_urls() -> None:
    assert check_url("http://127.0.0.1:8000/health") == "http://127.0.0.1:8000/health"
    assert check_url("https://example.com") == "https://example.com"
    for bad in ("ftp://x", "localhost:80/health", "http://"):
        with pytest.raises(ValueError, match="is not an http:// or https:// URL"):
            check_url(bad)
