"""Finding plugin code by name: entry points of installed packages, or `pkg.module:obj`.

A name in the config (`plugin = "redis-ping"`) is looked up first among the objects
listed in `settings.plugins` (by the part after the colon), then among the entry
points of its group (`herdsman.probes` or `herdsman.hooks`). Both the validating
helper (so `check` and `up` fail early, naming the plugin) and the daemon use this;
it imports neither pydantic nor asyncio.
"""

from __future__ import annotations

import importlib
import re

PROBES = "herdsman.probes"
HOOKS = "herdsman.hooks"
KIND_OF_GROUP = {PROBES: "probe", HOOKS: "hook"}

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
# Compiled (by re, which keeps it) when a config is validated, not when the daemon
# imports this module to load what was validated: 1.5M instructions on its way to
# the first spawn.
_REFERENCE = rf"({_DOTTED}):({_DOTTED})"


class PluginError(Exception):
    """A plugin cannot be found or loaded: one sentence; the cause is chained."""


def check_reference(text: str) -> str:
    """`text` if it has the form `package.module:object`; ValueError otherwise."""
    if not re.fullmatch(_REFERENCE, text):
        raise ValueError(f"{text!r} is not of the form 'package.module:object'")
    return text


def short_name(reference: str) -> str:
    """The name a listed object is known by: `pkg.mod:notify.slack` -> `slack`."""
    return reference.rsplit(":", 1)[1].rsplit(".", 1)[-1]


def load_reference(reference: str) -> object:
    """The object `pkg.module:attr.path` names, importing its module."""
    module_name, _, attrs = reference.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:
        raise PluginError(f"cannot import {module_name!r}: {describe_error(err)}") from err
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise PluginError(f"{module_name!r} has no {attrs!r}") from None
    return obj


def entry_point_names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=group)})


def resolve(name: str, group: str, listed: tuple[str, ...]) -> object:
    """The plugin object `name` stands for in `group`; PluginError when there is none."""
    by_name = {short_name(ref): ref for ref in listed}
    if name in by_name:
        obj = load_reference(by_name[name])
    else:
        # Imported here: importlib.metadata (with email, zipfile, csv) costs a daemon
        # whose plugins all come from settings.plugins, or that has none, almost 1 MB.
        from importlib.metadata import entry_points

        found = entry_points(group=group, name=name)
        if not found:
            raise PluginError(_unknown(name, group, list(by_name)))
        ep = next(iter(found))
        try:
            obj = ep.load()
        except (Exception, SystemExit) as err:
            raise PluginError(
                f"cannot load entry point {name!r} ({ep.value}): {describe_error(err)}"
            ) from err
    if not callable(obj):
        raise PluginError(f"{KIND_OF_GROUP[group]} plugin {name!r} is not callable")
    return obj


def _unknown(name: str, group: str, listed: list[str]) -> str:
    known = sorted({*listed, *entry_point_names(group)})
    import difflib  # only for the error sentence

    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    available = f"; known: {', '.join(known)}" if known else ""
    return (
        f"no {KIND_OF_GROUP[group]} plugin named {name!r}{hint}: it is neither in"
        f" settings.plugins nor an installed {group!r} entry point{available}"
    )


def describe_error(err: BaseException) -> str:
    """`ValueError: bad value`, or the type alone when the error has no text."""
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
