"""Finding the config file, and loading it: parse, interpolate, validate, check the graph.

Every problem found on the way is collected with its key path and line, and all of
them are raised together as one ConfigError.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from herdsman.config.errors import ConfigError, Loc, format_loc
from herdsman.config.interpolate import interpolate
from herdsman.config.locate import line_of, toml_lines, yaml_lines
from herdsman.config.messages import describe, did_you_mean
from herdsman.config.models import Config
from herdsman.core.graph import Condition, find_cycle, unknown_dependencies

CONFIG_NAMES = ("herdsman.toml", "herdsman.yaml", "herdsman.yml")
_YAML_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_LEVEL = ("settings", "services")
# Settings that default to a path under state_dir: when unset, point at state_dir.
_DERIVED: dict[Loc, Loc] = {
    ("settings", "log_dir"): ("settings", "state_dir"),
    ("settings", "socket"): ("settings", "state_dir"),
}
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def find_config_file(explicit: str | None, cwd: Path, environ: Mapping[str, str]) -> Path:
    """The config to use: `-c FILE`, else $HERDSMAN_CONFIG, else the first of
    herdsman.toml, herdsman.yaml, herdsman.yml in `cwd`. Absolute, and it exists.
    """
    named, source = explicit, "-c"
    if not named and environ.get("HERDSMAN_CONFIG"):
        named, source = environ["HERDSMAN_CONFIG"], "$HERDSMAN_CONFIG"
    if named:
        path = cwd / Path(named).expanduser()
        if not path.is_file():
            why = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError([f"{named}: config file {why} (given by {source})"])
        return path
    for name in CONFIG_NAMES:
        if (cwd / name).is_file():
            return cwd / name
    raise ConfigError(
        [f"no {', '.join(CONFIG_NAMES[:-1])} or {CONFIG_NAMES[-1]} in {cwd} (use -c FILE)"]
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """The validated config in `path`; ConfigError with every problem found."""
    path = Path(os.path.abspath(path))
    report = _Report(_display_name(path))
    text = _read(path, report.name)
    yaml = path.suffix.lower() in _YAML_SUFFIXES
    data, report.lines = _parse_yaml(text, report) if yaml else _parse_toml(text, report.name)

    expanded, missing_vars = interpolate(data, os.environ if environ is None else environ)
    data = cast(dict[Any, Any], expanded)  # interpolation keeps the shape of its input
    for loc, message in missing_vars:
        report.add(loc, message)
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP_LEVEL:
            # An empty YAML section (`settings:`) is null; read it as empty.
            sections[str(key)] = {} if value is None else value
        else:
            report.add((str(key),), "unknown key" + did_you_mean(str(key), list(_TOP_LEVEL)))
    services = sections.get("services")
    if isinstance(services, dict):
        for name, body in services.items():
            if isinstance(body, dict) and "name" in body:
                report.add(("services", name, "name"), "unknown key (a service's name is its key)")
        _check_dependencies(services, report)

    config = None
    try:
        config = Config.model_validate(
            {**sections, "path": path}, context={"base_dir": path.parent, "env_files": {}}
        )
    except ValidationError as e:
        # An unset variable became "": do not report what follows from that twice.
        blamed = [loc for loc, _ in missing_vars]
        for error in e.errors(include_url=False):
            # Show the value as written ("0s"), not as parsed so far (0.0).
            written = _value_at(sections, error["loc"])
            if written is not _ABSENT:
                error["input"] = written
            loc, message = describe(error, "mapping" if yaml else "table")
            if not any(loc[: len(bad)] == bad for bad in blamed):
                at = loc if loc in report.lines else _DERIVED.get(loc, loc)
                report.add(loc, message, at=at)
    if config is None or report.errors:
        raise report.error()
    return config


_ABSENT = object()


def _value_at(data: object, loc: tuple[str | int, ...]) -> object:
    for part in loc:
        in_table = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and part < len(data)
        if not (in_table or in_list):
            return _ABSENT
        data = data[part]  # type: ignore[index]
    return data


class _Report:
    """Problems as `file:line: key.path: sentence`, in the order of the file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: Mapping[Loc, int] = {}
        self.errors: list[tuple[int, str]] = []

    def add(self, loc: Loc, message: str, *, line: int | None = None, at: Loc = ()) -> None:
        line = line or line_of(self.lines, at or loc)
        where = f"{self.name}:{line}" if line else self.name
        key = format_loc(loc)
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if all(text != seen for _, seen in self.errors):
            self.errors.append((line or 0, text))

    def error(self) -> ConfigError:
        # Stable sort: problems without a line keep their place after those with one.
        ordered = sorted(self.errors, key=lambda item: item[0] or float("inf"))
        return ConfigError([text for _, text in ordered])


def _display_name(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    cwd = Path.cwd()
    if cwd == Path(cwd.anchor) or not path.is_relative_to(cwd):
        return str(path)
    return str(path.relative_to(cwd))


def _read(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}: config file does not exist"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{name}: config file is not UTF-8 text"]) from None
    except OSError as e:
        raise ConfigError([f"{name}: cannot read the config file: {e.strerror}"]) from None


def _parse_toml(text: str, name: str) -> tuple[dict[Any, Any], dict[Loc, int]]:
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
    return data, toml_lines(text)


def _parse_yaml(text: str, report: _Report) -> tuple[dict[Any, Any], dict[Loc, int]]:
    import yaml  # only YAML configs pay for importing it

    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        # Walked before construction, which rewrites merge keys (`<<`) in place.
        lines, duplicates = yaml_lines(root) if root is not None else ({}, [])
        data = loader.construct_document(root) if root is not None else {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{report.name}:{mark.line + 1}" if mark else report.name
        what = " ".join(part for part in (e.context, e.problem) if part)
        raise ConfigError([f"{where}: syntax error: {what}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{report.name}: syntax error: {e}"]) from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{report.name}:1: the file must be a mapping with settings and services"]
        )
    for loc, line in duplicates:
        report.add(loc, "is given twice (YAML would keep only the last)", line=line)
    return data, lines


def _check_dependencies(services: dict[Any, Any], report: _Report) -> None:
    """Unknown services, self-dependencies, cycles, and waiting for a task that never ends.

    Checked on the raw data so these come out together with every other problem.
    """
    deps: dict[str, dict[str, Condition]] = {}
    # Where each dependency is written: its key in a table, its index in a list.
    written: dict[tuple[str, str], Loc] = {}
    for name, body in services.items():
        wanted = body.get("depends_on") if isinstance(body, dict) else None
        entries = enumerate(wanted) if isinstance(wanted, list) else []
        if isinstance(wanted, dict):
            entries = ((dep, dep) for dep in wanted)
        deps[str(name)] = {}
        for key, dep in entries:
            if isinstance(dep, str):
                deps[str(name)][dep] = "started"
                written[str(name), dep] = ("services", str(name), "depends_on", key)
    for name, dep in unknown_dependencies(deps):
        hint = did_you_mean(dep, [other for other in deps if other != name])
        report.add(
            ("services", name, "depends_on"),
            f"{dep!r} is not a service{hint}",
            at=written[name, dep],
        )
    for name, wanted in deps.items():
        if name in wanted:
            report.add(
                ("services", name, "depends_on"),
                "a service cannot depend on itself",
                at=written[name, name],
            )
    cycle = find_cycle({name: [d for d in wanted if d != name] for name, wanted in deps.items()})
    if cycle:
        report.add(
            ("services", cycle[0], "depends_on"),
            f"dependency cycle: {' -> '.join(cycle)}",
            at=written[cycle[0], cycle[1]],
        )
    for name, body in services.items():
        wanted = body.get("depends_on") if isinstance(body, dict) else None
        if not isinstance(wanted, dict):
            continue
        for dep, condition in wanted.items():
            target = services.get(dep)
            restart = target.get("restart", "always") if isinstance(target, dict) else None
            if condition == "completed" and restart == "always":
                report.add(
                    ("services", name, "depends_on", dep),
                    f"{dep!r} never completes: it has restart = 'always'"
                    " (use 'never' or 'on-failure' for a one-shot task)",
                )
