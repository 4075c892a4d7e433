"""`herdsman import procfile`: a Procfile (as foreman and honcho read it) as herdsman.toml.

Each `name: command` line becomes a service whose command runs through `/bin/sh -c`
in the Procfile's directory, as foreman and honcho run it. They give each process
type `PORT` = base + 100 x its position (base 5000, or `PORT` from `.env`), so each
service gets that `PORT` in `env`; a `.env` beside the Procfile becomes `env_file`.
Heroku's `release` type runs once before the others start, so it becomes a one-shot
task the other services wait for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from herdsman.config.envfile import parse_env_file
from herdsman.config.errors import ConfigError
from herdsman.config.importers import Imported
from herdsman.config.importers.toml_text import (
    Document,
    Table,
    escape_interpolation,
    service_path,
)

# The line format foreman and honcho both accept; any other line they skip.
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")
DEFAULT_BASE_PORT = 5000
_PORT_STEP = 100
_RELEASE = "release"


@dataclass
class _Process:
    name: str
    command: str
    line: int


def import_procfile(path: Path, base_port: int | None = None) -> Imported:
    """The Procfile at `path` as herdsman.toml; ConfigError if it cannot be read."""
    path = path.absolute()
    text = _read(path)
    dotenv_path = path.parent / ".env"
    dotenv = _read(dotenv_path) if dotenv_path.is_file() else None
    return convert_procfile(text, path, dotenv, base_port)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise ConfigError([f"cannot read {path}: {reason}"]) from None


def convert_procfile(
    text: str, path: Path, dotenv: str | None, base_port: int | None = None
) -> Imported:
    """The Procfile `text` (read from `path`, with `.env` text `dotenv`) as herdsman.toml."""
    warnings: list[str] = []
    doc = Document()
    doc.note(f"Imported from {path} by `herdsman import procfile`.")
    processes: dict[str, _Process] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            warnings.append(
                f"{path}:{number}: skipped {line!r}: not a 'name: command' line"
                " (names use letters, digits, '_' and '-'), as foreman and honcho skip it"
            )
            continue
        name, command = match.group(1), match.group(2).strip()
        if name in processes:
            warnings.append(
                f"{path}:{number}: {name!r} is defined again (first on line"
                f" {processes[name].line}); the last one wins, as in foreman and honcho"
            )
        if "{replica}" in command:
            warnings.append(
                f"{path}:{number}: herdsman replaces {{replica}} in a command with the"
                " replica number (0 here)"
            )
        processes[name] = _Process(name, command, number)
    if not processes:
        raise ConfigError([f"{path}: no processes found (expected lines like 'web: command')"])

    env_file, from_dotenv = _dotenv(path, dotenv, warnings)
    port = base_port
    if port is None:
        port = _port_from(from_dotenv) or DEFAULT_BASE_PORT
    doc.note(
        "Each command runs through /bin/sh -c in the Procfile's directory, as under\n"
        "foreman and honcho. They stop everything when one process exits; herdsman\n"
        'restarts the one that exited instead (restart = "always", the default).\n'
        f"PORT is {port} + 100 x the process's position in the Procfile, as foreman\n"
        "and honcho assign it."
    )
    release = processes.get(_RELEASE)
    for index, process in enumerate(processes.values()):
        table = Table(service_path(process.name))
        table.comment(f"{process.name}: line {process.line} of the Procfile")
        table.set("command", escape_interpolation(process.command))
        table.set("shell", True)
        table.set("cwd", str(path.parent))
        if env_file:
            table.set("env_file", env_file)
        table.set("env", {"PORT": str(port + _PORT_STEP * index)})
        if process is release:
            table.set(
                "restart",
                "never",
                "Heroku runs the release process once, before the others start;"
                " they wait until it exited 0.",
            )
        elif release is not None:
            table.set("depends_on", {_RELEASE: "completed"})
        doc.tables.append(table)
    for warning in warnings:
        doc.note(f"warning: {warning}")
    return Imported(doc.render(), warnings)


def _dotenv(
    path: Path, dotenv: str | None, warnings: list[str]
) -> tuple[str | None, dict[str, str]]:
    """The `env_file` to set and the variables in it."""
    if dotenv is None:
        return None, {}
    env_path = path.parent / ".env"
    try:
        variables = parse_env_file(dotenv, str(env_path), os.environ)
    except ValueError as e:
        warnings.append(
            f"{e}; herdsman cannot read this .env, so it is not used as env_file;"
            " `check` refuses it too (a .env beside the config is read for ${VAR}):"
            f" fix it, then add env_file = {str(env_path)!r}"
        )
        return None, {}
    return str(env_path), variables


def _port_from(env: dict[str, str]) -> int | None:
    text = env.get("PORT", "")
    return int(text) if text.isdigit() else None
