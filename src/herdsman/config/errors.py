"""ConfigError, the one exception config loading raises, and how key paths are written.

Loading collects every problem in a file before raising, so a user fixes them all in
one pass instead of one per run.
"""

from __future__ import annotations

# A key path into the parsed file: table keys, and list indexes as ints.
Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """Every problem found in a config file, one sentence each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def format_loc(loc: Loc) -> str:
    """`services.web.command[1]`; keys that are not bare TOML keys are quoted."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if is_bare_key(part) else '"' + part.replace('"', '\\"') + '"'
            text += f".{key}" if text else key
    return text


def is_bare_key(key: str) -> bool:
    """Whether `key` is a bare TOML key (A-Za-z0-9_-, one or more), which is also what a
    service name may be. Checked without `re`: this module is on every client command's
    path, which does without it."""
    return key.isascii() and key.replace("_", "a").replace("-", "a").isalnum()
