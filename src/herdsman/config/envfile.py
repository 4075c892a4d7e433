"""Dotenv files: a service's `env_file`, and the `.env` beside the config.

Parsed by python-dotenv, so a file means here what it means to every tool built on
it: `KEY=VALUE`, `export KEY=VALUE`, `#`
comments, single quotes (no escapes but `\\'`), double quotes (with escapes, and
spanning lines), and `${VAR}` / `${VAR:-default}` expanded in every value, quoted
or not (python-dotenv expands inside single quotes too). Only the
environment the references read is ours: the caller passes it, so `check` and the
daemon see the same thing. A line python-dotenv cannot parse is an error naming the
file and line (python-dotenv itself would only log a warning and skip it).

Reading is guarded: the file must be a regular file of at most MAX_BYTES, so a
FIFO cannot hang `check` and `/dev/zero` cannot fill memory.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from herdsman.config.errors import ConfigError
from herdsman.config.parse import display_name

MAX_BYTES = 1024 * 1024
DOTENV = ".env"  # beside the config: variables for its ${VAR} references


def read_env_text(path: Path, shown: str) -> str:
    """The text of the dotenv file at `path`; ValueError naming `shown` if it is not a
    readable regular UTF-8 file of at most MAX_BYTES. FileNotFoundError passes."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{shown} is not a regular file (it is {_kind(mode)})")
        data = b""
        while len(data) <= MAX_BYTES:
            chunk = os.read(fd, MAX_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ValueError(f"{shown} is larger than {MAX_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{shown} is not UTF-8 text") from None


def parse_env_file(
    text: str, name: str, environ: Mapping[str, str], *, file_wins: bool = True
) -> dict[str, str]:
    """The variables in `text`, `${VAR}` expanded; ValueError naming `name` and the line
    of the first bad one.

    A reference reads the variables set earlier in the file and `environ`; with
    `file_wins` the file's own win (as python-dotenv's `dotenv_values`), else
    `environ` wins (as its `load_dotenv` and docker compose's `.env`). A name without
    `=` has no value, and is left out.
    """
    # Here, not at the top: client commands read .env (for the socket's path) only
    # when there is one, and python-dotenv's package imports tempfile, logging, ...
    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    values: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        # A binding's text starts with the blank lines before it.
        raw = binding.original.string
        statement = raw.lstrip()
        line = binding.original.line + raw[: len(raw) - len(statement)].count("\n")
        if binding.error:
            first = statement.splitlines()[0].strip() if statement else ""
            raise ValueError(f"{name} line {line}: expected KEY=VALUE, not {first!r}")
        if binding.key is None or binding.value is None:
            continue
        if "\0" in binding.key or "\0" in binding.value:
            raise ValueError(f"{name} line {line}: a NUL byte cannot be in the environment")
        scope = {**environ, **values} if file_wins else {**values, **environ}
        values[binding.key] = "".join(
            atom.resolve(scope) for atom in parse_variables(binding.value)
        )
    return values


def with_dotenv(directory: Path, environ: Mapping[str, str]) -> Mapping[str, str]:
    """`environ` plus the variables of `.env` in `directory`, if there is one (as docker
    compose reads it: for `${VAR}` in the config; the process environment wins)."""
    path = directory / DOTENV
    shown = display_name(path)
    try:
        text = read_env_text(path, shown)
    except FileNotFoundError:
        return environ
    except OSError as e:
        raise ConfigError([f"{shown}: cannot read it: {e.strerror}"]) from None
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    try:
        variables = parse_env_file(text, shown, environ, file_wins=False)
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    return {**variables, **environ}


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a file"
