"""Dotenv files by python-dotenv's rules: a service's env_file and the .env beside the config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dotenv
import pytest

from herdsman.config import ConfigError, load_config
from herdsman.config.envfile import MAX_BYTES, parse_env_file
from herdsman.config.paths import socket_path
from tests.config.conftest import WriteConfig


def test_forms() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value",
            "SPACED = padded value  ",
            "export EXPORTED=yes",
            'DOUBLE="line\\nbreak \\"q\\" \\\\ x"',
            "COMMENTED=abc # trailing",
            "HASH=abc#def",
            "QUOTED_COMMENT='x y' # note",
            "EMPTY=",
            "EQUALS=a=b=c",
            "  INDENTED=1",
            'MULTI="first',
            'second"',
            "BARE_NAME",
            "PLAIN=last wins",
        ]
    )
    assert parse_env_file(text, ".env", {}) == {
        "PLAIN": "last wins",
        "SPACED": "padded value",
        "EXPORTED": "yes",
        "DOUBLE": 'line\nbreak "q" \\ x',
        "COMMENTED": "abc",
        "HASH": "abc#def",
        "QUOTED_COMMENT": "x y",
        "EMPTY": "",
        "EQUALS": "a=b=c",
        "INDENTED": "1",
        "MULTI": "first\nsecond",
    }


def test_the_same_values_as_python_dotenv(tmp: Path) -> None:
    """Not a third dialect: whatever python-dotenv reads, we read alike."""
    text = (
        "A=1\nexport B=\"x ${A} y\"\nC='lit \\' q'\nD=${NOPE:-fallback}\n"
        'E="multi\nline"\nF=${A}${A}\nG= # nothing\n'
    )
    path = tmp / "x.env"
    path.write_text(text)
    assert parse_env_file(text, "x.env", {}) == {
        k: v for k, v in dotenv.dotenv_values(path).items() if v is not None
    }


def test_references_read_the_file_then_the_environment() -> None:
    text = "HOST=db\nURL=postgres://${HOST}:${PORT}/${NAME:-app}\nHOME_TOO=${HOME}\n"
    env = {"PORT": "5432", "HOST": "from-environ", "HOME": "/root"}
    assert parse_env_file(text, ".env", env) == {
        "HOST": "db",
        "URL": "postgres://db:5432/app",
        "HOME_TOO": "/root",
    }
    # The .env beside a config: the process environment wins, as in docker compose.
    assert parse_env_file(text, ".env", env, file_wins=False)["URL"] == (
        "postgres://from-environ:5432/app"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OK=1\njust words", ".env line 2: expected KEY=VALUE, not 'just words'"),
        ("OK=1\n\n=value", ".env line 3: expected KEY=VALUE, not '=value'"),
        ('A="open\nB=2', ".env line 1: expected KEY=VALUE, not 'A=\"open'"),
        ("A='x' y", ".env line 1: expected KEY=VALUE, not \"A='x' y\""),
        ("A=x\0y", ".env line 1: a NUL byte cannot be in the environment"),
    ],
)
def test_bad_lines_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_env_file(text, ".env", {})


def test_dotenv_beside_the_config_feeds_interpolation(
    write: WriteConfig, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp / ".env").write_text("PORT=8000\nexport IMAGE_TAG='v1'\nWORKERS=${CORES:-2}\n")
    path = write("""\
        [services.web]
        command = "serve --port ${PORT} --tag ${IMAGE_TAG} -w ${WORKERS}"
        """)
    config = load_config(path, environ={})
    assert config.services["web"].command == ["serve", "--port", "8000", "--tag", "v1", "-w", "2"]
    # The process environment wins over .env; .env's variables are not the services'.
    config = load_config(path, environ={"PORT": "9000", "CORES": "8"})
    assert config.services["web"].command[2:7:2] == ["9000", "v1", "8"]
    assert "PORT" not in config.services["web"].env


def test_a_bad_dotenv_beside_the_config_is_named(write: WriteConfig, tmp: Path) -> None:
    (tmp / ".env").write_text("A=1\nnot a pair\n")
    path = write('[services.web]\ncommand = "x"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.errors == [".env line 2: expected KEY=VALUE, not 'not a pair'"]


def test_env_file_expands_with_the_config_environment(write: WriteConfig, tmp: Path) -> None:
    (tmp / ".env").write_text("REGION=eu\n")
    (tmp / "app.env").write_text('BUCKET="data-${REGION}"\nUSER_HOME=${HOME:-none}\n')
    path = write("""\
        [services.web]
        command = "x"
        env_file = "app.env"
        env = { EXTRA = "1" }
        """)
    env = load_config(path, environ={"HOME": "/home/u"}).services["web"].env
    assert env == {"BUCKET": "data-eu", "USER_HOME": "/home/u", "EXTRA": "1"}


def _errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.errors


def test_env_file_must_be_a_regular_file_under_the_limit(write: WriteConfig, tmp: Path) -> None:
    (tmp / "big.env").write_text("A=" + "x" * MAX_BYTES + "\n")
    path = write("""\
        [services.zero]
        command = "x"
        env_file = "/dev/zero"
        [services.big]
        command = "x"
        env_file = "big.env"
        """)
    assert _errors(path) == [
        "herdsman.toml:3: services.zero.env_file: '/dev/zero' is not a regular file"
        " (it is a character device)",
        "herdsman.toml:6: services.big.env_file: 'big.env' is larger than 1024 KiB",
    ]


def test_a_fifo_env_file_does_not_hang_check(write: WriteConfig, tmp: Path) -> None:
    os.mkfifo(tmp / "pipe.env")
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "x"\nenv_file = "pipe.env"\n')
    done = subprocess.run(
        [sys.executable, "-m", "herdsman", "check"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "herdsman: herdsman.toml:3: services.web.env_file: 'pipe.env' is not a regular file"
        " (it is a FIFO)\n"
    )


def test_clients_find_the_socket_through_dotenv(write: WriteConfig, tmp: Path) -> None:
    (tmp / ".env").write_text("STATE=run/state\n")
    path = write('[settings]\nstate_dir = "${STATE}"\n[services.web]\ncommand = "x"\n')
    expected = tmp / "run/state/herdsman.sock"
    assert (
        socket_path(path, {}) == str(expected) == str(load_config(path, environ={}).settings.socket)
    )
