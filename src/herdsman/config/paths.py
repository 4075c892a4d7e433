"""Where things are: the config file to use, and where its daemon listens.

Client commands (`herdsman status`) only need the socket path; `socket_path` reads it
without validating the rest of the file or importing pydantic, so they start fast and
still reach a running daemon while the file on disk is being edited. A file that
names neither setting is not even parsed. Both work on text with os.path: pathlib
loads `re`, `urllib` and `enum`, 40M instructions of a client command's start-up.
"""

from __future__ import annotations

import os

from herdsman.config.errors import ConfigError

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

CONFIG_NAMES = ("herdsman.toml", "herdsman.yaml", "herdsman.yml")
STATE_DIR = ".herdsman"  # relative to the config's directory
LOG_DIR_NAME = "logs"
SOCKET_NAME = "herdsman.sock"


def _pure(path: str) -> str:
    """`path` written as pathlib writes it (`str(Path(path))`): no empty or `.`
    parts, no slash at the end; `..` stays."""
    root = "//" if path[:2] == "//" and path[2:3] != "/" else "/" if path[:1] == "/" else ""
    parts = [part for part in path.split("/") if part and part != "."]
    return root + "/".join(parts) or "."


def find_config_file(
    explicit: str | None, cwd: str | os.PathLike[str], environ: Mapping[str, str]
) -> str:
    """The config to use: `-c FILE`, else $HERDSMAN_CONFIG, else the first of
    herdsman.toml, herdsman.yaml, herdsman.yml in `cwd` or the nearest parent
    directory that has one (as git and docker compose look), not above a directory
    with a `.git`, the home directory or `/`. Absolute, and it exists.
    """
    cwd = _pure(os.fspath(cwd))
    named, source = explicit, "-c"
    if not named and environ.get("HERDSMAN_CONFIG"):
        named, source = environ["HERDSMAN_CONFIG"], "$HERDSMAN_CONFIG"
    if named:
        path = _pure(os.path.join(cwd, os.path.expanduser(named)))
        if not os.path.isfile(path):
            why = "is a directory" if os.path.isdir(path) else "does not exist"
            raise ConfigError([f"{named}: config file {why} (given by {source})"])
        return path
    home = _pure(environ["HOME"]) if environ.get("HOME") else None
    directory = cwd
    while True:
        for name in CONFIG_NAMES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                return path
        top = os.path.dirname(directory) == directory or directory == home
        if top or os.path.exists(os.path.join(directory, ".git")):
            break
        directory = os.path.dirname(directory)
    names = f"{', '.join(CONFIG_NAMES[:-1])} or {CONFIG_NAMES[-1]}"
    where = cwd if directory == cwd else f"{cwd} or its parents up to {directory}"
    raise ConfigError([f"no {names} in {where} (use -c FILE)"])


def resolve(path: Path, base_dir: Path) -> Path:
    """`path` made absolute: `~` expanded, relative to `base_dir` (the config's dir)."""
    path = path.expanduser()
    return path if path.is_absolute() else base_dir / path


def _may_move_socket(config: str) -> bool:
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


def socket_path(config: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> str:
    """The control socket of the daemon for `config`, as `load_config` would give it."""
    config = os.path.abspath(config)
    if not _may_move_socket(config):
        return os.path.join(os.path.dirname(config), STATE_DIR, SOCKET_NAME)
    from pathlib import Path

    from herdsman.config.envfile import with_dotenv
    from herdsman.config.interpolate import expand
    from herdsman.config.parse import read_document

    document = read_document(Path(config))
    settings = document.data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError([f"{document.name}: settings: must be a table"])

    base = Path(config).parent
    environ = with_dotenv(base, os.environ if environ is None else environ)

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
        return str(resolve(Path(socket), base))
    state_dir = setting("state_dir")
    return str(resolve(Path(STATE_DIR if state_dir is None else state_dir), base) / SOCKET_NAME)
