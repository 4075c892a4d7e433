"""`herdsman schema`: a JSON Schema of the config file, for editors.

Generated from the pydantic models, then corrected where a model's field type is
what validation produces rather than what a user writes: durations, sizes, signals
and modes (a number, or a string such as "1m30s", "512MiB", "TERM", "0660"), commands
(a string or a list), `depends_on` (a table or a list), a hook's `on` (a state or a
list), `env` values (numbers and booleans become text). Keys filled in by the loader
(`name`, `path`) are left out; every key gets its description from the config
reference. JSON Schema draft-07, which Taplo (Even Better TOML) and
yaml-language-server both read.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from herdsman.config import units
from herdsman.config.models import Config, HealthCheck, Hook, Probe

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
DURATION = {
    "type": "string",
    "pattern": rf"^\s*(?:{_NUMBER}|(?:{_NUMBER}\s*(?:[mM][sS]|[sSmMhHdD])\s*)+)\s*$",
    "examples": ["250ms", "1.5s", "10s", "5m", "1h", "1m30s"],
}
SIZE = {
    "type": "string",
    "pattern": rf"^\s*{_NUMBER}\s*(?:[bB]|[kKmMgGtT](?:[iI]?[bB])?)?\s*$",
    "examples": ["64KiB", "512MiB", "1GiB", "10MB", "512M"],
}
SIGNAL = {
    "type": "string",
    "pattern": r"^\s*(?:\d+|[A-Za-z][A-Za-z0-9]*)\s*$",
    "examples": ["TERM", "INT", "HUP", "QUIT", "KILL", "USR1", "USR2"],
}
MODE = {
    "type": "string",
    "pattern": r"^\s*(?:0[oO])?[0-7]+\s*$",
    "examples": ["0600", "0660", "022"],
}
# Each parser: how its value may be written as text, and the bounds of its number.
_UNITS: dict[Any, tuple[dict[str, Any], dict[str, int]]] = {
    units.parse_duration: (DURATION, {"minimum": 0}),
    units.parse_size: (SIZE, {"minimum": 0}),
    units.parse_signal: (SIGNAL, {"minimum": 1}),
    units.parse_mode: (MODE, {"minimum": 0, "maximum": 0o777}),
}
# pydantic writes a constraint inside an optional Annotated type by its own name.
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}
COMMAND = {
    "anyOf": [
        {"type": "string", "minLength": 1, "description": "split like a shell would"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
    ]
}
_HOOK_STATE = Hook.model_json_schema()["properties"]["on"]["items"]
_SERVICE_NAME = r"^[A-Za-z0-9_-]+$"

# From the README's config reference, key by key.
_SERVICE = {
    "command": "A string split like a shell would (no shell runs), or a list. Required.",
    "shell": "Run the command string through /bin/sh -c.",
    "cwd": "Working directory (relative to the config file's directory; default: it).",
    "env": "Extra environment; wins over env_file. Numbers and booleans become text.",
    "env_file": "A dotenv file of extra environment, read by python-dotenv's rules"
    " (a regular file of at most 1 MiB).",
    "user": "Run as this user (switching needs root).",
    "group": "Run with this group (switching needs root).",
    "umask": "The process's umask, octal (e.g. '022').",
    "autostart": "Started by a plain `herdsman up` (default true).",
    "replicas": "Instances NAME.0, NAME.1, ...; {replica} in command/env is the number.",
    "restart": "always, on-failure (non-zero exit or signal) or never.",
    "backoff": "Delay before each respawn: grows by factor up to max, ± jitter.",
    "start_limit": "More than burst restarts within interval: the instance is failed.",
    "start_seconds": "How long an instance must stay up to count as started (default 1s).",
    "stop_signal": "Sent to the whole process group to stop it (default TERM).",
    "stop_timeout": "Then SIGKILL to the whole process group (default 10s).",
    "depends_on": "{ db = 'ready', migrate = 'completed', cache = 'started' },"
    " or a list of names (meaning started).",
    "restart_with": "Restart this service once one of these (each in depends_on) runs"
    " again after a restart (systemd's PartOf).",
    "ready": "Readiness probe: one of tcp, http, exec, log, notify or plugin.",
    "health": "Liveness check: tcp, http, exec or plugin; failure_threshold failures in a"
    " row restart the instance.",
    "memory_limit": "Restart the instance when its process tree's RSS stays above this.",
    "log": "Rotation of <log_dir>/<instance>.log.",
    "hooks": "What to do when one of this service's instances enters a state.",
    "kubernetes": "What `herdsman export kubernetes` cannot guess; herdsman ignores it.",
    "watch": "Restart on changes of these files (under `herdsman up --watch`): paths and"
    " globs relative to cwd, by .gitignore's rules.",
    "watch_ignore": "More patterns whose changes restart nothing (added to .git/,"
    " __pycache__/, *.pyc, node_modules/, editor files, ...).",
    "watch_debounce": "Restart once the watched files were quiet this long (default 300ms).",
}
_CHECK = {
    "tcp": "host:port: a connection succeeds.",
    "http": "http:// or https:// URL: a 2xx or 3xx answer.",
    "exec": "A command: exit 0.",
    "plugin": "A probe plugin, by name.",
    "options": "Keyword arguments for the plugin.",
    "interval": "How often to check.",
    "timeout": "How long one check may take.",
    "initial_delay": "Wait this long after a start before the first check.",
}
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Config": {
        "settings": "Where the daemon keeps its files and how it is reached (all optional).",
        "services": "The services, by name ([A-Za-z0-9_-]+).",
        "hooks": "What to do when any instance enters a state.",
    },
    "Settings": {
        "state_dir": "State, socket and logs of the daemon (default .herdsman).",
        "log_dir": "The log files (default <state_dir>/logs).",
        "socket": "The control socket (default <state_dir>/herdsman.sock).",
        "shutdown_timeout": "After it, whatever still runs is killed (default 30s).",
        "memory_interval": (
            "How often instances with a memory_limit are sampled (default 5s); two samples"
            " in a row over the limit restart one."
        ),
        "token_file": "The token TCP clients must send.",
        "tcp": "Also serve the API on this host:port (needs token_file).",
        "socket_mode": "Permissions of the control socket (default '0600').",
        "socket_group": "Group of the control socket.",
        "max_connections": (
            "API clients served at once per listener (socket, TCP port); more get 503 "
            "(default 128)."
        ),
        "log": "Defaults for every service's log, key by key.",
        "log_format": "Of the daemon's own herdsman.log: text or json.",
        "daemon_log": "Rotation of herdsman.log (default 10MiB, 5 backups).",
        "allow_shared_state_dir": (
            "Accept a state_dir that others can write or another user owns (default false)."
        ),
        "plugins": "Plugin objects as 'package.module:object' references.",
    },
    "Service": _SERVICE,
    "Backoff": {
        "initial": "The first delay (0: respawn at once).",
        "max": "The longest delay.",
        "factor": "Each retry's delay is the last one times this.",
        "jitter": "± this fraction of the delay, at random.",
    },
    "StartLimit": {
        "burst": "More restarts than this within interval and the instance is failed.",
        "interval": "The window burst counts in.",
    },
    "LogSettings": {
        "max_bytes": "Rotate the log file past this size.",
        "backups": "How many rotated files to keep.",
    },
    "Probe": {
        **_CHECK,
        "notify": "sd_notify READY=1 on NOTIFY_SOCKET.",
        "log": "A regular expression: a line of the instance's output matches.",
        "watchdog": "With notify: restart when WATCHDOG=1 does not come this often.",
    },
    "HealthCheck": {
        **_CHECK,
        "failure_threshold": "Failed checks in a row that restart the instance.",
        "success_threshold": "Passed checks in a row to be healthy again.",
    },
    "Hook": {
        "on": "The state(s) whose entry runs the hook.",
        "shell": "Run exec's string through /bin/sh -c.",
        "exec": "A command to run, given the event as JSON on stdin.",
        "webhook": "An http(s) URL to POST the event to as JSON.",
        "plugin": "A hook plugin, by name.",
        "options": "Keyword arguments for the plugin.",
        "timeout": "How long the hook may take.",
    },
    "KubernetesOptions": {"image": "The container image the service runs in."},
}
# Not written by users: the loader fills them in.
_FROM_LOADER = {"Config": ("path",), "Service": ("name",)}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a herdsman config file (TOML or YAML)."""
    schema = Config.model_json_schema(mode="validation", ref_template="#/definitions/{model}")
    definitions: dict[str, Any] = schema.pop("$defs")
    definitions["Config"] = schema
    for name, model in _models(Config).items():
        _fix_model(model, definitions[name])
    services = schema["properties"]["services"]
    services.update(propertyNames={"pattern": _SERVICE_NAME}, minProperties=1)
    schema["required"] = ["services"]
    # An empty YAML section (`settings:`) is null, and reads as empty. Said by type,
    # not by an anyOf with null: editors then point at the key that is wrong.
    definitions["Settings"]["type"] = ["object", "null"]
    schema["properties"]["services"]["type"] = ["object", "null"]
    schema["properties"]["hooks"]["type"] = ["array", "null"]
    del definitions["Config"]
    # Rules across keys that a schema can state too.
    for name, model in (("Probe", Probe), ("HealthCheck", HealthCheck), ("Hook", Hook)):
        definitions[name]["oneOf"] = [_given(kind) for kind in model.KINDS]
    definitions["Settings"]["dependencies"] = {"tcp": ["token_file"]}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "herdsman config",
        "description": "herdsman.toml / herdsman.yaml: settings, services and hooks.",
        **schema,
        "definitions": definitions,
    }


def _given(kind: str) -> dict[str, Any]:
    """The check or hook is of this kind: its key is there (notify: and true)."""
    if kind == "notify":
        return {"required": [kind], "properties": {kind: {"const": True}}}
    return {"required": [kind]}


def _models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `model`'s fields, by name."""
    found = {model.__name__: model}
    for field in model.model_fields.values():
        for inner in _inner_types(field.annotation):
            is_model = isinstance(inner, type) and issubclass(inner, BaseModel)
            if is_model and inner.__name__ not in found:
                found.update(_models(inner))
    return found


def _inner_types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    if not args:
        return [annotation]
    return [inner for arg in args for inner in _inner_types(arg)]


def _unit_parser(annotation: Any, metadata: list[Any]) -> Any:
    """The units parser a field's value goes through (Duration, Size, ...), if any."""
    for item in [*metadata, *_annotated_metadata(annotation)]:
        func = getattr(item, "func", None)
        if func in _UNITS:
            return func
    return None


def _annotated_metadata(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        return list(annotation.__metadata__)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _annotated_metadata(arg)]
    return []


def _fix_model(model: type[BaseModel], schema: dict[str, Any]) -> None:
    name = model.__name__
    schema.pop("title", None)
    schema.pop("description", None)  # the docstring is for programmers
    properties: dict[str, Any] = schema["properties"]
    for key in _FROM_LOADER.get(name, ()):
        properties.pop(key)
        if key in schema.get("required", []):
            schema["required"].remove(key)
    for key, field in model.model_fields.items():
        if key not in properties:
            continue
        prop = properties[key]
        parser = _unit_parser(field.annotation, field.metadata)
        if parser is not None:
            prop = _with_unit(prop, *_UNITS[parser])
        prop = _OVERRIDES.get((name, key), lambda p: p)(prop)
        prop.pop("title", None)
        prop["description"] = DESCRIPTIONS[name][key]
        properties[key] = prop


def _with_unit(
    prop: dict[str, Any], text: dict[str, Any], bounds: dict[str, int]
) -> dict[str, Any]:
    """`prop` where its number may also be written as text (`"1m30s"`, `"512MiB"`)."""
    if prop.get("type") in ("number", "integer"):
        outer: dict[str, Any] = {k: prop.pop(k) for k in ("default", "title") if k in prop}
        for key in [k for k in prop if k in _BOUNDS]:
            prop[_BOUNDS[key]] = prop.pop(key)
        if not any(k in prop for k in ("minimum", "exclusiveMinimum")):
            prop.update(bounds)
        return {"anyOf": [prop, text], **outer}
    if "anyOf" in prop:
        prop["anyOf"] = [_with_unit(option, text, bounds) for option in prop["anyOf"]]
        flat: list[dict[str, Any]] = []
        for option in prop["anyOf"]:
            flat += option.get("anyOf", [option])
        prop["anyOf"] = flat
    return prop


def _command(prop: dict[str, Any]) -> dict[str, Any]:
    extra = {k: v for k, v in prop.items() if k in ("default",)}
    if "anyOf" in prop:  # optional: null stays allowed (YAML)
        return {"anyOf": [*COMMAND["anyOf"], {"type": "null"}], **extra}
    return {**COMMAND, **extra}


def _depends_on(prop: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [prop, {"type": "array", "items": {"type": "string"}}]}


def _on(prop: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [_HOOK_STATE, prop]}


def _env(prop: dict[str, Any]) -> dict[str, Any]:
    prop["additionalProperties"] = {"type": ["string", "number", "boolean"]}
    return prop


_OVERRIDES = {
    ("Service", "command"): _command,
    ("Probe", "exec"): _command,
    ("HealthCheck", "exec"): _command,
    ("Hook", "exec"): _command,
    ("Service", "depends_on"): _depends_on,
    ("Hook", "on"): _on,
    ("Service", "env"): _env,
}
