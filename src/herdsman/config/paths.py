"""Where things are: the config file to use, and where its daemon listens.

Client commands (`herdsman status`) only need the socket path; `socket_path` reads it
without validating the rest of the file or importing pydantic, so they start fast and
still reach a running daemon while the file on disk is being edited. A file that
names neither setting is not even parsed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from herdsman.config.errors import ConfigError
from herdsman.config.interpolate import expand

CONFIG_NAMES = ("herdsman.toml", "herdsman.yaml", "herdsman.yml")
STATE_DIR = Path(".herdsman")
LOG_DIR_NAME = "logs"
SOCKET_NAME = "herdsman.sock"


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
    names = f"{', '.join(CONFIG_NAMES[:-1])} or {CONFIG_NAMES[-1]}"
    raise ConfigError([f"no {names} in {cwd} (use -c FILE)"])


def resolve(path: Path, base_dir: Path) -> Path:
    """`path` made absolute: `~` expanded, relative to `base_dir` (the config's dir)."""
    path = path.expanduser()
    return path if path.is_absolute() else base_dir / path


def _may_move_socket(config: Path) -> bool:
    """Whether the file could set `socket` or `state_dir`: it spells one of them, or
    has a backslash (a quoted key's escape could spell them, in TOML and YAML alike).
    When it cannot, the socket is the default one, whatever else the file says, and
    the parser (tomllib, or PyYAML: most of a client command's start-up) is not needed.
    Unreadable files are left to the parser, which says why."""
    try:
        with open(config, "rb") as file:
            text = file.read()
    except OSError:
        return True
    return b"socket" in text or b"state_dir" in text or b"\\" in text


def socket_path(config: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The control socket of the daemon for `config`, as `load_config` would give it."""
    config = Path(os.path.abspath(config))
    if not _may_move_socket(config):
        return config.parent / STATE_DIR / SOCKET_NAME
    from herdsman.config.envfile import with_dotenv
    from herdsman.config.parse import read_document

    document = read_document(config)
    settings = document.data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError([f"{document.name}: settings: must be a table"])

    environ = with_dotenv(config.parent, os.environ if environ is None else environ)

    def setting(key: str) -> str | None:
        value = settings.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError([f"{document.name}: settings.{key}: must be a string"])
        text, problems = expand(value, environ)
        if problems:
            raise ConfigError([f"{document.name}: settings.{key}: {p}" for p in problems])
        return text

    socket = setting("socket")
    if socket is not None:
        return resolve(Path(socket), config.parent)
    state_dir = setting("state_dir")
    return resolve(STATE_DIR if state_dir is None else Path(state_dir), config.parent) / SOCKET_NAME
