"""The config layer: finding, loading and validating herdsman.toml / herdsman.yaml.

`load_config` returns frozen, fully parsed models or raises one ConfigError that
lists every problem in the file. The models (and pydantic) are imported on first
use, so client commands that only need `find_config_file` and `socket_path` stay fast.
"""

from __future__ import annotations

from herdsman.config.errors import ConfigError
from herdsman.config.paths import find_config_file, socket_path

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from herdsman.config.loader import load_config
    from herdsman.config.models import (
        Backoff,
        Config,
        HealthCheck,
        LogSettings,
        Probe,
        ProbeKind,
        RestartPolicy,
        Service,
        Settings,
        StartLimit,
    )

_LAZY = {
    "load_config": "herdsman.config.loader",
    **dict.fromkeys(
        [
            "Backoff",
            "Config",
            "HealthCheck",
            "LogSettings",
            "Probe",
            "ProbeKind",
            "RestartPolicy",
            "Service",
            "Settings",
            "StartLimit",
        ],
        "herdsman.config.models",
    ),
}

__all__ = [
    "Backoff",
    "Config",
    "ConfigError",
    "HealthCheck",
    "LogSettings",
    "Probe",
    "ProbeKind",
    "RestartPolicy",
    "Service",
    "Settings",
    "StartLimit",
    "find_config_file",
    "load_config",
    "socket_path",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
