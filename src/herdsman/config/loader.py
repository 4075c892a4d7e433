"""Loading a config file: parse, interpolate, validate, check the dependency graph.

Every problem found on the way is collected with its key path and line, and all of
them are raised together as one ConfigError.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from herdsman import plugins
from herdsman.config import units
from herdsman.config.envfile import with_dotenv
from herdsman.config.errors import ConfigError, Loc, format_loc
from herdsman.config.interpolate import interpolate
from herdsman.config.locate import line_of
from herdsman.config.messages import describe, did_you_mean
from herdsman.config.models import Config
from herdsman.config.parse import read_document

# Also importable from here, where it first lived (herdsman.config.plan uses it).
from herdsman.config.paths import find_config_file as find_config_file
from herdsman.core.graph import Condition, find_cycle, unknown_dependencies

_TOP_LEVEL = ("settings", "services", "hooks")
# Settings that default to a path under state_dir: when unset, point at state_dir.
_DERIVED: dict[Loc, Loc] = {
    ("settings", "log_dir"): ("settings", "state_dir"),
    ("settings", "socket"): ("settings", "state_dir"),
}


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> Config:
    """The validated config in `path`; ConfigError with every problem found."""
    path = Path(os.path.abspath(path))
    document = read_document(path)
    report = _Report(document.name, document.lines)
    for loc, line in document.duplicates:
        report.add(loc, "is given twice (YAML would keep only the last)", line=line)

    environ = with_dotenv(path.parent, os.environ if environ is None else environ)
    expanded, missing_vars = interpolate(document.data, environ)
    data = cast(dict[Any, Any], expanded)  # interpolation keeps the shape of its input
    for loc, message in missing_vars:
        report.add(loc, message)
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOP_LEVEL:
            # An empty YAML section (`settings:`) is null; read it as empty.
            empty: object = [] if key == "hooks" else {}
            sections[str(key)] = empty if value is None else value
        else:
            report.add((str(key),), "unknown key" + did_you_mean(str(key), list(_TOP_LEVEL)))
    services = sections.get("services")
    if isinstance(services, dict):
        for name, body in services.items():
            if isinstance(body, dict) and "name" in body:
                report.add(("services", name, "name"), "unknown key (a service's name is its key)")
        _check_dependencies(services, report)
        if document.yaml:
            _check_yaml_env(services, report)

    config = None
    try:
        config = Config.model_validate(
            {**sections, "path": path},
            context={"base_dir": path.parent, "env_files": {}, "environ": environ},
        )
    except ValidationError as e:
        # An unset variable became "": do not report what follows from that twice.
        blamed = [loc for loc, _ in missing_vars]
        for error in e.errors(include_url=False):
            # Show the value as written ("0s"), not as parsed so far (0.0).
            written = _value_at(sections, error["loc"])
            if written is not _ABSENT:
                error["input"] = written
            loc, message = describe(error, "mapping" if document.yaml else "table")
            if not any(loc[: len(bad)] == bad for bad in blamed):
                at = loc if loc in report.lines else _DERIVED.get(loc, loc)
                report.add(loc, message, at=at)
    if config is not None and not report.errors:
        _check_plugins(config, report)
    if config is None or report.errors:
        raise report.error()
    return config


def _check_yaml_env(services: dict[Any, Any], report: _Report) -> None:
    """YAML reads `no`, `on` or `off` as booleans and `1.10` as the number 1.1: as
    an environment value that is never what was meant, so it must be quoted."""
    for name, body in services.items():
        env = body.get("env") if isinstance(body, dict) else None
        if not isinstance(env, dict):
            continue
        for key, value in env.items():
            loc: Loc = ("services", name, "env", key)
            if isinstance(value, bool):
                report.add(
                    loc,
                    f"is the YAML boolean {units.show_value(value)} (YAML reads yes, no, on,"
                    " off, true and false so): quote the text the variable should hold,"
                    ' e.g. "no"',
                )
            elif isinstance(value, float):
                report.add(
                    loc,
                    f"is the YAML number {value!r}, which loses how it was written (1.10"
                    " becomes 1.1): quote it",
                )


def _check_plugins(config: Config, report: _Report) -> None:
    """Import every plugin the config names, so `check` and `up` fail early, naming it.

    Only once the rest is valid: plugin code runs here, and a config with errors
    may name plugins it does not mean.
    """
    listed = tuple(config.settings.plugins)
    broken: set[str] = set()
    for index, reference in enumerate(listed):
        try:
            plugins.load_reference(reference)
        except plugins.PluginError as err:
            broken.add(plugins.short_name(reference))
            report.add(("settings", "plugins", index), str(err))
    uses: list[tuple[Loc, str, str]] = []
    for index, hook in enumerate(config.hooks):
        if hook.plugin is not None:
            uses.append((("hooks", index, "plugin"), hook.plugin, plugins.HOOKS))
    for name, svc in config.services.items():
        for index, hook in enumerate(svc.hooks):
            if hook.plugin is not None:
                loc: Loc = ("services", name, "hooks", index, "plugin")
                uses.append((loc, hook.plugin, plugins.HOOKS))
        for key, check in (("ready", svc.ready), ("health", svc.health)):
            if check is not None and check.plugin is not None:
                uses.append((("services", name, key, "plugin"), check.plugin, plugins.PROBES))
    for loc, plugin, group in uses:
        if plugin in broken:
            continue  # already said, at its settings.plugins entry
        try:
            plugins.resolve(plugin, group, listed)
        except plugins.PluginError as err:
            report.add(loc, str(err))


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

    def __init__(self, name: str, lines: Mapping[Loc, int]) -> None:
        self.name = name
        self.lines = lines
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
