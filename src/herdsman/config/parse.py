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

from herdsman.config.errors import ConfigError, Loc
from herdsman.config.locate import toml_lines, yaml_lines

if TYPE_CHECKING:
    import yaml

_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: config file does not exist"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: config file is not UTF-8 text"]) from None
    except OSError as e:
        raise ConfigError([f"{name}: cannot read the config file: {e.strerror}"]) from None
    if path.suffix.lower() in _YAML_SUFFIXES:
        return _parse_yaml(text, name)
    return _parse_toml(text, name)


def _parse_toml(text: str, name: str) -> Document:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        position = _TOML_POSITION.search(message)
        if position is None:
            raise ConfigError([f"{name}: syntax error: {message}"]) from None
        reason = message[: position.start()]
        raise ConfigError(
            [f"{name}:{position[1]}: syntax error: {reason} (column {position[2]})"]
        ) from None
    return Document(name, data, yaml=False, lines=toml_lines(text), duplicates=[])


def _parse_yaml(text: str, name: str) -> Document:
    import yaml  # only YAML configs pay for importing it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(name, {}, yaml=True, lines={}, duplicates=[])
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
