"""What both exporters share: the result, the error, and readings of a service
that are the same whatever the target (is it a one-shot task, which of its
variables come from its env_file, which settings did the user write).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from herdsman.config.envfile import parse_env_file, read_env_text
from herdsman.config.models import Config, Service

REPLICA = "{replica}"


class ExportError(Exception):
    """The config cannot be exported as asked: one sentence, exit 2."""


@dataclass
class Export:
    """Files to write, in order, and warnings about what did not carry over."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, text)
    warnings: list[str] = field(default_factory=list)

    def warn(self, service: str, text: str) -> None:
        self.warnings.append(f"{service}: {text}")


def is_task(config: Config, svc: Service) -> bool:
    """A one-shot task: `restart = "never"`, or something waits for it to complete.

    An `on-failure` service nobody waits on is a long-running service that happens to
    stop after a clean exit; one that another service depends on as `completed` is a
    task retried on failure.
    """
    if svc.restart == "never":
        return True
    return any(other.depends_on.get(svc.name) == "completed" for other in config.services.values())


def written(model: BaseModel, key: str) -> bool:
    """Did the config file set `key` (rather than leave the default)?"""
    return key in model.model_fields_set


def group_name(config: Config, given: str | None) -> str:
    """The name of the whole stack: `given`, else the config file's directory name."""
    raw = given or config.path.parent.name or "herdsman"
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")
    if not name:
        raise ExportError(f"{raw!r} cannot name units or labels (use letters, digits, '-', '_')")
    return name


@dataclass(frozen=True)
class Environment:
    """A service's variables split by where they come from.

    `Service.env` holds env_file and env merged (env winning); exporters want the
    file's variables (to reference the file, or put them in a ConfigMap) apart from
    those written in the config.
    """

    file: Path | None
    from_file: dict[str, str]
    own: dict[str, str]  # set by `env`, with a different value than the file's if any
    overridden: list[str]  # names both set, env's value winning


def environment_of(svc: Service) -> Environment:
    from_file: dict[str, str] = {}
    if svc.env_file is not None:
        shown = str(svc.env_file)
        from_file = parse_env_file(read_env_text(svc.env_file, shown), shown, os.environ)
    own = {key: value for key, value in svc.env.items() if from_file.get(key) != value}
    overridden = [key for key in own if key in from_file]
    return Environment(svc.env_file, from_file, own, overridden)


def seconds(value: float) -> str:
    """A duration for messages: `10s`, `0.5s`."""
    return f"{value:g}s"


def signal_name(number: int) -> str:
    """`SIGTERM` for 15: the form both systemd and Kubernetes take."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
