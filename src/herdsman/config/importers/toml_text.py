"""Writing herdsman.toml text with comments, which TOML libraries do not keep.

The layout (tables, comment lines, key order) is built here; every key and value is
quoted by tomli_w, so no string escaping is written by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tomli_w

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def key(name: str) -> str:
    """`name` as a TOML key: bare when it can be, else a quoted string."""
    return name if _BARE_KEY.fullmatch(name) else value(name)


def value(item: object) -> str:
    """A TOML value; a dict is written inline (`{ a = 1, b = "x" }`)."""
    if isinstance(item, dict):
        if not item:
            return "{}"
        return "{ " + ", ".join(f"{key(str(k))} = {value(v)}" for k, v in item.items()) + " }"
    return tomli_w.dumps({"v": item}).removeprefix("v = ").rstrip("\n")


def comment_lines(text: str) -> list[str]:
    """`text` as `# ` comment lines, one per line; control characters (not allowed in
    a TOML comment) shown as `\\xNN`."""
    return [
        ("# " + _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)).rstrip()
        for line in text.splitlines() or [""]
    ]


@dataclass
class Table:
    """One `[path]` table: comment lines before it, then keys with comments above them."""

    path: str
    comments: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def set(self, name: str, item: object, note: str | None = None) -> None:
        if note:
            self.note(note)
        self.lines.append(f"{key(name)} = {value(item)}")

    def note(self, text: str) -> None:
        self.lines += comment_lines(text)

    def comment(self, text: str) -> None:
        """A comment above the table's header."""
        self.comments += comment_lines(text)


@dataclass
class Document:
    """A whole file: a comment header, then tables separated by blank lines."""

    header: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.header += comment_lines(text)

    def render(self) -> str:
        parts = ["\n".join(self.header)] if self.header else []
        for table in self.tables:
            parts.append("\n".join([*table.comments, f"[{table.path}]", *table.lines]))
        if self.footer:
            parts.append("\n".join(self.footer))
        return "\n\n".join(parts) + "\n"


def service_path(name: str) -> str:
    return f"services.{key(name)}"


def escape_interpolation(text: str) -> str:
    """`text` as herdsman reads it back unchanged: `${` and `$$` are special there.

    herdsman expands `${VAR}` when it loads a config and reads `$$` as one `$`; a
    command imported from elsewhere meant these for its shell, so each such `$` is
    doubled. A lone `$VAR` is left alone by herdsman and needs nothing.
    """
    return re.sub(r"\$(?=[${])", "$$", text)
