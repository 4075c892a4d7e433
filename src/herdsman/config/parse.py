"""Reading a config file into plain data: TOML or YAML, by its suffix.

Syntax errors end loading at once (nothing after them can be trusted) as a ConfigError
with the file and line. Alongside the data come the line of each key path, for later
errors to point at. Imports no pydantic, so client commands can use it cheaply.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from herdsman.config import limits
from herdsman.config.errors import ConfigError, Loc, format_loc
from herdsman.config.locate import TooDeep, line_of, toml_lines, yaml_lines

if TYPE_CHECKING:
    import yaml

_YAML_SUFFIXES = (".yaml", ".yml", ".json")
# Compiled (and kept by re) at the first syntax error, not by every `up` and client
# command that reads a config.
_TOML_POSITION = r"\s*\(at line (\d+), column (\d+)\)$"


class Document(NamedTuple):
    """A parsed config file. (A NamedTuple: dataclasses would cost the client path an
    import of `inspect`.)"""

    name: str  # as errors show it
    data: dict[Any, Any]
    yaml: bool
    lines: dict[Loc, int]
    # YAML keys written twice in one mapping, with their lines (TOML refuses them).
    duplicates: list[tuple[Loc, int]]


def display_name(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    cwd = Path.cwd()
    if cwd == Path(cwd.anchor) or not path.is_relative_to(cwd):
        return str(path)
    return str(path.relative_to(cwd))


def read_document(path: Path) -> Document:
    """The file at `path` (absolute), parsed; ConfigError if unreadable or malformed."""
    name = display_name(path)
    try:
        # Read no more than the limit, whatever the file is (/dev/zero, a pipe).
        with path.open("rb") as file:
            raw = file.read(limits.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{name}: config file does not exist"]) from None
    except OSError as e:
        raise ConfigError([f"{name}: cannot read the config file: {e.strerror}"]) from None
    if len(raw) > limits.MAX_FILE_BYTES:
        raise ConfigError(
            [f"{name}: the config file is larger than {limits.MAX_FILE_BYTES // 2**20} MiB"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: config file is not UTF-8 text"]) from None
    if path.suffix.lower() in _YAML_SUFFIXES:
        document = _parse_yaml(text, name)
    else:
        document = _parse_toml(text, name)
    # Nesting and NUL bytes, now in values whatever the syntax (a TOML dotted key
    # nests without brackets; "\u0000" is a NUL).
    data: object = document.data
    problem = limits.first_problem(data, limits.data_children, limits.nul_byte)
    if problem is not None:
        raise _beyond_limit(problem, name, line_of(document.lines, problem[0]))
    return document


def _beyond_limit(problem: tuple[Loc, str], name: str, line: int | None) -> ConfigError:
    """The error for a broken limit, at its key path and line."""
    loc, message = problem
    where = f"{name}:{line}" if line else name
    return ConfigError([f"{where}: {format_loc(loc)}: {message}" if loc else f"{where}: {message}"])


def _parse_toml(text: str, name: str) -> Document:
    try:
        # First: tomllib recurses once per level, so deep nesting must not reach it.
        lines = toml_lines(text, max_depth=limits.MAX_DEPTH)
    except TooDeep as e:
        raise _beyond_limit((e.loc, limits.TOO_DEEP), name, e.line) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        position = re.search(_TOML_POSITION, message)
        if position is None:
            raise ConfigError([f"{name}: syntax error: {message}"]) from None
        reason = message[: position.start()]
        raise ConfigError(
            [f"{name}:{position[1]}: syntax error: {reason} (column {position[2]})"]
        ) from None
    return Document(name, data, yaml=False, lines=lines, duplicates=[])


def _parse_yaml(text: str, name: str) -> Document:
    import yaml  # only YAML configs pay for importing it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(name, {}, yaml=True, lines={}, duplicates=[])
        # Before anything walks the tree that the aliases describe.
        problem = limits.first_problem(root, _yaml_children)
        if problem is not None:
            raise _beyond_limit(problem, name, _yaml_line(root, problem[0]))
        # Walked before construction, which rewrites merge keys (`<<`) in place.
        lines, duplicates = yaml_lines(root)
        _keys_as_written(root)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}" if mark else name
        what = " ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([f"{where}: syntax error: {what}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{name}: syntax error: {e}"]) from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{name}:1: the file must be a mapping with settings and services"])
    return Document(name, data, yaml=True, lines=lines, duplicates=duplicates)


def _yaml_children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        # A key that is not a plain scalar is refused when the data is built.
        return [(key.value, value) for key, value in node.value if isinstance(key, yaml.ScalarNode)]
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def _yaml_line(root: yaml.Node, loc: Loc) -> int | None:
    """The line of the last key in `loc` (an alias in a list has no mark of its own:
    it is the anchor's node)."""
    import yaml

    line, node = None, root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    line, node = key.start_mark.line + 1, value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part]
    return line


def _keys_as_written(root: yaml.Node) -> None:
    """Make every plain mapping key a string, as TOML keys are.

    YAML 1.1 would read a service `on:` or an env key `NO:` as booleans and `1:` as
    an int; in a config every key is a name.
    """
    import yaml

    todo, seen = [root], set()
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    key.tag = "tag:yaml.org,2002:str"
                todo.append(value)
        elif isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
