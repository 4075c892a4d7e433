"""Parsers for the units a config file is written in: durations, sizes, signals, modes.

Each turns what a user typed (a string, or a plain number) into the one unit the rest
of herdsman works in, or raises ValueError with a sentence that can follow a key path.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from urllib.parse import urlsplit

from herdsman.core import signals

_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")

# Decimal units (KB, MB) are powers of 1000 and binary ones (KiB, MiB) powers of 1024;
# a bare K/M/G/T is binary, as in systemd and docker, whose users write "512M".
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
# Compiled (and kept by re) at the first size written as text, not by every validation.
_SIZE = r"(?i)\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*"

_DURATION_HINT = "use e.g. '250ms', '1.5s', '10s', '5m', '1h', '1m30s' or a number of seconds"
_SIZE_HINT = "use e.g. '64KiB', '512MiB', '1GiB', '10MB' or a number of bytes"


def parse_duration(value: object) -> float:
    """Seconds from `"250ms"`, `"1.5s"`, `"1m30s"`, `"5m"`, `"1h"`, `"2d"` or a number."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a duration ({_DURATION_HINT}), not {show_value(value)}")
    if isinstance(value, int | float):
        return _non_negative(float(value), value, "duration")
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"must not be negative, not {show_value(value)}")
    if not text:
        raise ValueError(f"an empty string is not a duration ({_DURATION_HINT})")
    plain = _PLAIN_NUMBER.fullmatch(text)
    if plain:
        return float(Decimal(plain.group(1)))
    total = Decimal(0)
    pos = 0
    while pos < len(text):
        part = _DURATION_PART.match(text, pos)
        if not part or part.end() == pos:
            raise ValueError(f"{show_value(value)} is not a duration ({_DURATION_HINT})")
        total += Decimal(part.group(1)) * _DURATION_UNITS[part.group(2).lower()]
        pos = part.end()
    return float(total)


def parse_size(value: object) -> int:
    """Bytes from `"64KiB"`, `"512MiB"`, `"10MB"`, `"512M"`, `"100B"` or an integer."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a size ({_SIZE_HINT}), not {show_value(value)}")
    if isinstance(value, int | float):
        number = _non_negative(float(value), value, "size")
        if not number.is_integer():
            raise ValueError(f"must be a whole number of bytes, not {show_value(value)}")
        return int(number)
    if value.strip().startswith("-"):
        raise ValueError(f"must not be negative, not {show_value(value)}")
    match = re.fullmatch(_SIZE, value)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"{show_value(value)} is not a size ({_SIZE_HINT})")
    return int(Decimal(match.group(1)) * unit)


def parse_signal(value: object) -> int:
    """A signal number from `"TERM"`, `"SIGTERM"`, `"term"`, `"15"` or `15`."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be a signal name like 'TERM' or a number, not {show_value(value)}")
    return signals.parse_signal(value)


def parse_mode(value: object) -> int:
    """Permission bits from an octal string (`"0660"`, `"022"`, `"0o660"`) or an integer."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be an octal mode like '0660', not {show_value(value)}")
    if isinstance(value, int):
        number = value
    else:
        digits = value.strip().lower().removeprefix("0o")
        if not digits or any(c not in "01234567" for c in digits):
            raise ValueError(f"{show_value(value)} is not an octal mode (use e.g. '0660' or '022')")
        number = int(digits, 8)
    if not 0 <= number <= 0o777:
        raise ValueError(f"must be between 0000 and 0777, not {oct(number)}")
    return number


def parse_address(value: str) -> tuple[str, int]:
    """(host, port) from `"127.0.0.1:9900"`, `"localhost:80"` or `"[::1]:9900"`."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{show_value(value)} is not a host:port address (use e.g. '127.0.0.1:8000')"
        )
    return host, int(port)


def check_url(value: str) -> str:
    """`value` if it is an http:// or https:// URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{show_value(value)} is not an http:// or https:// URL")
    return value


def _non_negative(number: float, value: object, what: str) -> float:
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"must be a finite {what}, not {show_value(value)}")
    if number < 0:
        raise ValueError(f"must not be negative, not {show_value(value)}")
    return number


def show_value(value: object) -> str:
    """A value as a user would recognise it from their file, kept short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}...{text[0]}"
