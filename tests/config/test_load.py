"""Finding the config file, and TOML and YAML loading into the same Config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.config import ConfigError, find_config_file, socket_path
from tests.config.conftest import WriteConfig
from tests.config.helpers import load


def test_toml_first_then_yaml_then_yml(tmp: Path) -> None:
    home = {"HOME": str(tmp)}  # the search stops there
    with pytest.raises(ConfigError) as caught:
        find_config_file(None, tmp, home)
    assert caught.value.errors == [
        f"no herdsman.toml, herdsman.yaml or herdsman.yml in {tmp} (use -c FILE)"
    ]
    (tmp / "herdsman.yml").touch()
    assert find_config_file(None, tmp, home) == str(tmp / "herdsman.yml")
    (tmp / "herdsman.yaml").touch()
    assert find_config_file(None, tmp, home) == str(tmp / "herdsman.yaml")
    (tmp / "herdsman.toml").touch()
    assert find_config_file(None, tmp, home) == str(tmp / "herdsman.toml")


def test_the_nearest_parent_with_a_config_wins(tmp: Path) -> None:
    """As git and docker compose look: from a subdirectory of the project."""
    deep = tmp / "project" / "src" / "app"
    deep.mkdir(parents=True)
    (tmp / "herdsman.yaml").touch()
    (tmp / "project" / "herdsman.toml").touch()
    home = {"HOME": str(tmp)}
    assert find_config_file(None, deep, home) == str(tmp / "project" / "herdsman.toml")
    (tmp / "project" / "herdsman.toml").unlink()
    assert find_config_file(None, deep, home) == str(tmp / "herdsman.yaml")
    # Not above the home directory, nor above a repository's top.
    with pytest.raises(ConfigError):
        find_config_file(None, deep, {"HOME": str(tmp / "project")})


def test_the_search_stops_at_a_repository_or_home(tmp: Path) -> None:
    deep = tmp / "repo" / "src"
    deep.mkdir(parents=True)
    (tmp / "herdsman.toml").touch()
    (tmp / "repo" / ".git").mkdir()
    for environ in ({}, {"HOME": str(tmp / "repo")}):
        with pytest.raises(ConfigError) as caught:
            find_config_file(None, deep, environ)
        assert caught.value.errors == [
            "no herdsman.toml, herdsman.yaml or herdsman.yml in "
            f"{deep} or its parents up to {tmp / 'repo'} (use -c FILE)"
        ]


def test_explicit_file_then_environment(tmp: Path) -> None:
    (tmp / "herdsman.toml").touch()
    (tmp / "conf").mkdir()
    (tmp / "conf" / "a.toml").touch()
    (tmp / "b.yaml").touch()
    environ = {"HERDSMAN_CONFIG": "b.yaml"}
    assert find_config_file("conf/a.toml", tmp, environ) == str(tmp / "conf" / "a.toml")
    assert find_config_file(str(tmp / "b.yaml"), Path("/"), {}) == str(tmp / "b.yaml")
    assert find_config_file(None, tmp, environ) == str(tmp / "b.yaml")
    assert find_config_file(None, tmp, {"HERDSMAN_CONFIG": ""}) == str(tmp / "herdsman.toml")


def test_a_named_file_must_exist(tmp: Path) -> None:
    (tmp / "herdsman.toml").touch()
    with pytest.raises(ConfigError, match=r"^x.toml: config file does not exist \(given by -c\)$"):
        find_config_file("x.toml", tmp, {})
    with pytest.raises(ConfigError, match=r"^y.toml: .* \(given by \$HERDSMAN_CONFIG\)$"):
        find_config_file(None, tmp, {"HERDSMAN_CONFIG": "y.toml"})
    with pytest.raises(ConfigError, match=r"^\.: config file is a directory \(given by -c\)$"):
        find_config_file(".", tmp, {})


TOML = """\
[settings]
state_dir = "run"
shutdown_timeout = "45s"
socket_mode = "0660"

[services.db]
command = "redis-server --port ${DB_PORT:-6390}"
restart = "on-failure"
backoff = { initial = "100ms", max = "30s", factor = 2.0, jitter = 0.1 }
ready = { tcp = "127.0.0.1:6390" }
health = { exec = "redis-cli ping", interval = "5s" }
memory_limit = "512MiB"
stop_signal = "INT"
umask = "022"

[services.web]
command = ["python3", "-m", "http.server", "8000"]
depends_on = { db = "ready" }
replicas = 2
env = { PORT = 8000, DEBUG = true }
log = { max_bytes = "1MiB", backups = 2 }
"""

YAML = """\
settings:
  state_dir: run
  shutdown_timeout: 45s
  socket_mode: 0660          # YAML reads this as octal
services:
  db:
    command: redis-server --port ${DB_PORT:-6390}
    restart: on-failure
    backoff: {initial: 100ms, max: 30s, factor: 2.0, jitter: 0.1}
    ready: {tcp: "127.0.0.1:6390"}
    health:
      exec: redis-cli ping
      interval: 5s
    memory_limit: 512MiB
    stop_signal: INT
    umask: "022"
  web:
    command: [python3, -m, http.server, "8000"]
    depends_on: {db: ready}
    replicas: 2
    env: {PORT: 8000, DEBUG: "true"}
    log: {max_bytes: 1MiB, backups: 2}
"""


@pytest.mark.parametrize("suffix", ["yaml", "yml"])
def test_yaml_and_toml_give_the_same_config(write: WriteConfig, suffix: str) -> None:
    from_toml = load(write(TOML))
    from_yaml = load(write(YAML, f"herdsman.{suffix}"))
    assert from_yaml.path.name == f"herdsman.{suffix}"
    assert from_yaml.model_dump(exclude={"path"}) == from_toml.model_dump(exclude={"path"})
    assert from_toml.services["web"].env == {"PORT": "8000", "DEBUG": "true"}
    assert from_toml.settings.socket_mode == 0o660


def test_yaml_empty_sections_and_anchors(write: WriteConfig) -> None:
    text = """\
        settings:
        x-defaults: &defaults
          restart: never
        """
    path = write(text, "herdsman.yaml")
    with pytest.raises(ConfigError, match=r"x-defaults: unknown key"):
        load(path)
    text = """\
        settings:
        services:
          a: &base
            command: a
            restart: never
          b:
            <<: *base
            command: b
        """
    config = load(write(text, "herdsman.yaml"))
    assert config.services["b"].restart == "never"
    assert config.services["b"].command == ["b"]


def test_yaml_keys_are_names_as_written(write: WriteConfig) -> None:
    text = """\
        services:
          on:
            command: x
            env: {NO: 1, null: 2, 3: three}
          1:
            command: y
        """
    config = load(write(text, "herdsman.yaml"))
    assert list(config.services) == ["on", "1"]
    assert config.services["on"].env == {"NO": "1", "null": "2", "3": "three"}


def test_environ_defaults_to_the_process_environment(
    write: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from herdsman.config import load_config

    monkeypatch.setenv("HM_TEST_CMD", "from-env")
    config = load_config(write('[services.web]\ncommand = "${HM_TEST_CMD}"\n'))
    assert config.services["web"].command == ["from-env"]


@pytest.mark.parametrize(
    "settings",
    [
        "",
        '[settings]\nstate_dir = "var/hm"\n',
        '[settings]\nstate_dir = "/run/hm"\n',
        '[settings]\nstate_dir = "${STATE:-st}"\n',
        '[settings]\nstate_dir = ""\n',
        '[settings]\nsocket = "~/hm.sock"\n',
        '[settings]\nstate_dir = "x"\nsocket = "../s/${NAME}.sock"\n',
    ],
)
def test_socket_path_agrees_with_load_config(
    write: WriteConfig, monkeypatch: pytest.MonkeyPatch, settings: str
) -> None:
    monkeypatch.setenv("HOME", "/home/herd")
    environ = {"NAME": "daemon"}
    path = write(settings + '[services.web]\ncommand = "x"\n')
    assert socket_path(path, environ) == str(load(path, environ).settings.socket)


def test_socket_path_from_yaml_ignores_problems_elsewhere(write: WriteConfig, tmp: Path) -> None:
    path = write("settings:\n  state_dir: st\nservices:\n  web: {restart: sometimes}\n", "h.yaml")
    assert socket_path(path, {}) == str(tmp / "st" / "herdsman.sock")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[settings]\nsocket = "${SOCK}"\n', "herdsman.toml: settings.socket: ${SOCK} is not set"),
        ("[settings]\nstate_dir = 1\n", "herdsman.toml: settings.state_dir: must be a string"),
        ("settings = 1\nstate_dir = 1\n", "herdsman.toml: settings: must be a table"),
        ("[settings]\nstate_dir = \n", "herdsman.toml:2: syntax error: Invalid value"),
    ],
)
def test_socket_path_errors(write: WriteConfig, text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        socket_path(write(text), {})
    assert caught.value.errors[0].startswith(error)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("herdsman.toml", '[services.web]\ncommand = "x"\n'),
        ("herdsman.toml", "settings = \n[broken"),  # being edited: the daemon still answers
        ("h.yaml", "services:\n  web: {command: x}\n"),
    ],
)
def test_a_config_naming_neither_setting_is_not_parsed(
    write: WriteConfig, tmp: Path, name: str, text: str
) -> None:
    """Neither `socket` nor `state_dir` (nor an escape that could spell them) in the
    file: the default socket, without loading a parser."""
    path = write(text, name)
    code = (
        "import sys, pathlib, herdsman.config as c;"
        f"print(c.socket_path(pathlib.Path({str(path)!r}), {{}}),"
        " sorted(m for m in ('tomllib', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{tmp / '.herdsman' / 'herdsman.sock'} []"


@pytest.mark.parametrize(
    "text",
    [
        '"\\u0073ocket" = "x"\n',  # the key spelled with an escape
        'x = "socket"\n',  # the word anywhere (a value, a comment) is enough to parse
    ],
)
def test_a_config_that_may_name_a_setting_is_parsed(write: WriteConfig, text: str) -> None:
    path = write("[settings]\n" + text)
    code = (
        "import sys, pathlib, herdsman.config as c;"
        f"c.socket_path(pathlib.Path({str(path)!r}), {{}}); print('tomllib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_client_path_imports_neither_pydantic_nor_yaml(write: WriteConfig) -> None:
    path = write('[services.web]\ncommand = "x"\n')
    code = (
        "import sys, pathlib, herdsman.config as c;"
        f"c.socket_path(c.find_config_file({str(path)!r}, pathlib.Path('/'), {{}}));"
        "print(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_named_config_is_written_as_pathlib_writes_it(tmp: Path) -> None:
    (tmp / "conf").mkdir()
    (tmp / "conf" / "a.toml").write_text("")
    for spelled in ("./conf//a.toml", "conf/./a.toml", f"{tmp}//conf/a.toml"):
        assert find_config_file(spelled, tmp, {}) == str(tmp / "conf" / "a.toml")
    assert find_config_file("conf/../conf/a.toml", tmp, {}) == f"{tmp}/conf/../conf/a.toml"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/.a~", max_size=12))
def test_config_paths_are_written_as_pathlib_writes_them(path: str) -> None:
    from herdsman.config.paths import _pure

    assert _pure(path) == str(PurePosixPath(path))
