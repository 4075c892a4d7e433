"""The config layer: finding, loading and validating herdsman.toml / herdsman.yaml.

`load_config` returns frozen, fully parsed models or raises one ConfigError that
lists every problem in the file.
"""

from herdsman.config.errors import ConfigError
from herdsman.config.loader import find_config_file, load_config
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
]
