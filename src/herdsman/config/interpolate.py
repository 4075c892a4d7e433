"""`${VAR}` and `${VAR:-default}` substitution in every string value of a parsed config.

Runs on the plain data from the TOML/YAML parser, before validation, so a number or
a duration may come from the environment. Keys are never substituted. `$$` is a
literal `$`; a bare `$VAR` is left alone because shell commands use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from herdsman.config.errors import Loc

_REFERENCE = re.compile(r"\$(?:(\$)|\{([^}]*)\}|(\{))")
# Compiled (and kept by re) at the first `${...}`: most configs have none.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def expand(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """`text` with its references replaced, and one sentence per reference that failed.

    A failed reference expands to the empty string so the caller can go on checking.
    """
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        dollar, body, unterminated = match.groups()
        if dollar:
            return "$"
        if unterminated:
            problems.append("'${' has no closing '}' (write $$ for a literal $)")
            return ""
        name, sep, default = body.partition(":-")
        if not re.fullmatch(_NAME, name):
            problems.append(
                f"'${{{body}}}' is not a valid reference (use ${{VAR}} or ${{VAR:-default}})"
            )
            return ""
        value = environ.get(name)
        if sep:
            return value if value else default
        if value is None:
            problems.append(f"${{{name}}} is not set and has no default")
            return ""
        return value

    return _REFERENCE.sub(replace, text), problems


def interpolate(
    data: object, environ: Mapping[str, str], loc: Loc = ()
) -> tuple[object, list[tuple[Loc, str]]]:
    """A copy of `data` with every string value expanded, and the problems by key path."""
    if isinstance(data, str):
        text, messages = expand(data, environ)
        return text, [(loc, message) for message in messages]
    problems: list[tuple[Loc, str]] = []
    if isinstance(data, dict):
        out: dict[object, object] = {}
        for key, value in data.items():
            out[key], found = interpolate(value, environ, (*loc, str(key)))
            problems += found
        return out, problems
    if isinstance(data, list):
        items: list[object] = []
        for index, value in enumerate(data):
            item, found = interpolate(value, environ, (*loc, index))
            items.append(item)
            problems += found
        return items, problems
    return data, problems
