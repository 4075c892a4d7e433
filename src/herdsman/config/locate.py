"""Line numbers for key paths, so an error can point at the line to fix.

YAML nodes carry their positions; tomllib gives none, so a small scanner walks the
TOML text (already known to be valid) and notes where each table and key starts.
A path with no line of its own takes the line of its nearest ancestor that has one.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from herdsman.config.errors import Loc, is_bare_key

if TYPE_CHECKING:
    import yaml


def line_of(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    """The line of `loc`, or of its nearest ancestor found in the file."""
    for end in range(len(loc), 0, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


class TooDeep(Exception):
    """A key path longer than the scanner was told to accept, and its line."""

    def __init__(self, loc: Loc, line: int) -> None:
        super().__init__(loc, line)
        self.loc, self.line = loc, line


def toml_lines(text: str, max_depth: int | None = None) -> dict[Loc, int]:
    """Where each table, key and array item of a valid TOML document starts.

    TooDeep for a key path longer than `max_depth`: the scanner stops there, so it
    can run before a parser that would recurse once per level.
    """
    scanner = _TomlScanner(text, max_depth)
    # On something this scanner does not understand, keep the lines found so far.
    with contextlib.suppress(IndexError, ValueError):
        scanner.document()
    return scanner.lines


class _TomlScanner:
    def __init__(self, text: str, max_depth: int | None) -> None:
        self.text = text
        self.max_depth = max_depth
        self.pos = 0
        self.lines: dict[Loc, int] = {}
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]
        self._array_tables: dict[Loc, int] = {}

    def document(self) -> None:
        table: Loc = ()
        while True:
            self._skip(newlines=True)
            if self.pos >= len(self.text):
                return
            start = self.pos
            if self.text.startswith("[[", self.pos):
                self.pos += 2
                key = self._key()
                self._expect("]]")
                index = self._array_tables.get(key, -1) + 1
                self._array_tables[key] = index
                table = (*key, index)
                self._record(table, start)
            elif self.text[self.pos] == "[":
                self.pos += 1
                table = self._key()
                self._expect("]")
                self._record(table, start)
            else:
                self._key_value(table)

    def _key_value(self, table: Loc) -> None:
        start = self.pos
        loc = (*table, *self._key())
        self._expect("=")
        self._record(loc, start)
        self._value(loc)

    def _value(self, loc: Loc) -> None:
        self._skip(newlines=False)
        text, pos = self.text, self.pos
        if text.startswith('"""', pos) or text.startswith("'''", pos):
            quote = text[pos]
            self.pos = pos + 3
            while not text.startswith(quote * 3, self.pos):
                self.pos += 2 if quote == '"' and text[self.pos] == "\\" else 1
            self.pos += 3
            # Up to two quotes may end the content just before the closing three.
            while self.pos < len(text) and text[self.pos] == quote:
                self.pos += 1
        elif text[pos] in "\"'":
            self._string()
        elif text[pos] == "{":
            self.pos += 1
            while True:
                self._skip(newlines=True)
                if text[self.pos] == "}":
                    self.pos += 1
                    return
                self._key_value(loc)
                self._skip(newlines=True)
                if text[self.pos] == ",":
                    self.pos += 1
        elif text[pos] == "[":
            self.pos += 1
            index = 0
            while True:
                self._skip(newlines=True)
                if text[self.pos] == "]":
                    self.pos += 1
                    return
                self._record((*loc, index), self.pos)
                self._value((*loc, index))
                index += 1
                self._skip(newlines=True)
                if text[self.pos] == ",":
                    self.pos += 1
        else:
            while self.pos < len(text) and text[self.pos] not in ",]}#\n":
                self.pos += 1

    def _key(self) -> Loc:
        parts: list[str | int] = []
        while True:
            self._skip(newlines=False)
            if self.text[self.pos] in "\"'":
                parts.append(self._string())
            else:
                end = self.pos
                while end < len(self.text) and is_bare_key(self.text[end]):
                    end += 1
                if end == self.pos:
                    raise ValueError("expected a key")
                parts.append(self.text[self.pos : end])
                self.pos = end
            self._skip(newlines=False)
            if self.text[self.pos] != ".":
                return tuple(parts)
            self.pos += 1

    def _string(self) -> str:
        """A one-line quoted string; escapes are kept loosely (the next char as is)."""
        quote = self.text[self.pos]
        self.pos += 1
        chars: list[str] = []
        while self.text[self.pos] != quote:
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 1
            chars.append(self.text[self.pos])
            self.pos += 1
        self.pos += 1
        return "".join(chars)

    def _skip(self, *, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r" or (newlines and char == "\n"):
                self.pos += 1
            elif char == "#" and newlines:
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _expect(self, token: str) -> None:
        self._skip(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r}")
        self.pos += len(token)

    def _record(self, loc: Loc, pos: int) -> None:
        line = bisect.bisect_left(self._newlines, pos) + 1
        if self.max_depth is not None and len(loc) > self.max_depth:
            raise TooDeep(loc[: self.max_depth + 1], line)
        for end in range(1, len(loc) + 1):
            self.lines.setdefault(loc[:end], line)


def yaml_lines(root: yaml.Node) -> tuple[dict[Loc, int], list[tuple[Loc, int]]]:
    """Where each key and list item starts, and the keys repeated within one mapping."""
    import yaml

    lines: dict[Loc, int] = {}
    duplicates: list[tuple[Loc, int]] = []
    on_path: set[int] = set()

    def walk(node: yaml.Node, loc: Loc) -> None:
        # An alias can make the tree recursive; each node is walked once per path.
        if id(node) in on_path:
            return
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (*loc, key_node.value)
                line = key_node.start_mark.line + 1
                if key_node.value in seen and key_node.value != "<<":
                    duplicates.append((key, line))
                seen.add(key_node.value)
                lines.setdefault(key, line)
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*loc, index), item.start_mark.line + 1)
                walk(item, (*loc, index))
        on_path.discard(id(node))

    walk(root, ())
    return lines, duplicates
