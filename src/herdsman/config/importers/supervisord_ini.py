"""Reading supervisord.conf the way supervisord does: its ini dialect and `[include]`.

supervisord uses configparser without interpolation, `;` and `#` starting a comment
at the start of a line or after whitespace, and later sections of the same name
merged into earlier ones. `[include] files =` lists globs, relative to the main
file's directory, read in sorted order; includes inside included files are ignored,
as supervisord ignores them. Each section remembers the file and line it came from.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from herdsman.config.errors import ConfigError

_HEADER = re.compile(r"\[(?P<header>.+)\]")


@dataclass(frozen=True)
class Section:
    """One `[name]` section with its options (names lowercased, values as written)."""

    name: str
    file: Path
    line: int
    options: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def where(self) -> str:
        return f"{self.position}: [{self.name}]"


@dataclass
class ConfFiles:
    """Every section of a supervisord.conf and the files it includes, in file order."""

    sections: list[Section]
    files: list[Path]
    warnings: list[str]

    def get(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


def read_conf(path: Path, expand_include: Callable[[str, Section], str]) -> ConfFiles:
    """Read `path` and what its `[include]` names.

    `expand_include` expands `%(...)s` in the `files` value (supervisord allows
    `%(here)s`, `%(host_node_name)s` and `%(ENV_X)s` there).
    """
    path = Path(os.path.abspath(path))
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";", "#"), strict=False, default_section="DEFAULT"
    )
    origin: dict[str, tuple[Path, int]] = {}
    warnings: list[str] = []
    _read_into(parser, path, origin)
    files = [path]
    if parser.has_section("include"):
        include = _section(parser, "include", origin)
        if "files" not in include.options:
            raise ConfigError([f"{include.where}: has no files = setting"])
        patterns = expand_include(include.options["files"], include).split()
        for pattern in patterns:
            matched = sorted(glob.glob(os.path.join(path.parent, pattern)))
            if not matched:
                warnings.append(f"{include.where}: no file matches {pattern!r}")
            for name in matched:
                included = Path(os.path.abspath(name))
                if "include" in _read_into(parser, included, origin):
                    warnings.append(
                        f"{included}: its [include] section is ignored"
                        " (supervisord only reads [include] in the main file)"
                    )
                files.append(included)
    sections = [_section(parser, name, origin) for name in parser.sections()]
    return ConfFiles(sections, files, warnings)


def _read_into(
    parser: configparser.RawConfigParser, path: Path, origin: dict[str, tuple[Path, int]]
) -> set[str]:
    """Parse `path` into `parser`; the names of the sections it has."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise ConfigError([f"cannot read {path}: {reason}"]) from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            [f"{path}:{e.lineno}: {e.line.strip()!r} comes before any [section] header"]
        ) from None
    except configparser.ParsingError as e:
        number = e.errors[0][0]  # with the line as repr(); take it from the text instead
        line = text.splitlines()[number - 1].strip()
        raise ConfigError(
            [f"{path}:{number}: cannot parse {line!r} (expected [section] or key = value)"]
        ) from None
    except configparser.Error as e:
        raise ConfigError([f"{path}: {e.message}"]) from None
    found: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw.strip())
        if header and not raw[:1].isspace():
            name = header.group("header")
            found.add(name)
            origin.setdefault(name, (path, number))
    return found


def _section(
    parser: configparser.RawConfigParser, name: str, origin: dict[str, tuple[Path, int]]
) -> Section:
    file, line = origin[name]
    return Section(name, file, line, dict(parser.items(name)))
