"""Reading a service's `env_file`: the `KEY=VALUE` files docker and dotenv users keep.

Blank lines and `#` comments are skipped; a line may start with `export `; a value
may be wrapped in single quotes (taken literally) or double quotes (with `\\n`, `\\"`
and `\\\\` escapes). Nothing is interpolated: the file's text is the value.
"""

from __future__ import annotations

import re

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str, name: str) -> dict[str, str]:
    """The variables in `text`; ValueError naming `name` and the line of the first bad one."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key, value = _parse_line(line)
        except ValueError as e:
            raise ValueError(f"{name} line {number}: {e}") from None
        env[key] = value
    return env


def _parse_line(line: str) -> tuple[str, str]:
    if line.startswith("export "):
        line = line[len("export ") :].lstrip()
    key, sep, rest = line.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ValueError(f"expected KEY=VALUE, not {line!r}")
    rest = rest.strip()
    if not rest or rest[0] not in "'\"":
        # Unquoted, a `#` after whitespace starts a comment, as in a shell.
        return key, re.split(r"\s#", rest, maxsplit=1)[0].rstrip()
    quote = rest[0]
    value, pos = [], 1
    while pos < len(rest) and rest[pos] != quote:
        if quote == '"' and rest[pos] == "\\" and pos + 1 < len(rest):
            pos += 1
            value.append(_ESCAPES.get(rest[pos], "\\" + rest[pos]))
        else:
            value.append(rest[pos])
        pos += 1
    if pos >= len(rest):
        raise ValueError(f"the value of {key} has no closing {quote}")
    tail = rest[pos + 1 :].strip()
    if tail and not tail.startswith("#"):
        raise ValueError(f"unexpected {tail!r} after the quoted value of {key}")
    return key, "".join(value)
