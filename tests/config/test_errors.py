"""Every config error: one sentence each, with file, line and key path, all at once."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.config.errors import is_bare_key
from tests.config.conftest import WriteConfig
from tests.config.helpers import errors

MANY_TOML = """\
[settings]
state_dir = "state"
tcp = "127.0.0.1:9900"
colour = "blue"

[services.db]
command = "redis-server --port ${DB_PORT}"
restrat = "always"
backoff = { initial = "100ms", max = "50ms", factor = 0.5 }
depends_on = ["dbb", "db"]

[services.web]
command = ["serve"]
restart = "alwys"
replicas = 0
stop_signal = "TREM"
memory_limit = "5 parsecs"
depends_on = { db = "redy", worker = "started" }

[services.web.ready]
tcp = "localhost"

[services.web.health]
exec = "check"
http = "http://x/"

[services.worker]
command = ""
env_file = "missing.env"
depends_on.web = "started"
start_limit = { burst = 0, interval = "0s" }
log = { max_bytes = "10MB", backups = -1 }

[services."bad name"]
command = "x"

[sevices.x]
command = "y"
"""

MANY_TOML_ERRORS = [
    "herdsman.toml:3: settings.tcp: needs token_file too: TCP clients must send its token",
    "herdsman.toml:4: settings.colour: unknown key",
    "herdsman.toml:7: services.db.command: ${DB_PORT} is not set and has no default",
    "herdsman.toml:8: services.db.restrat: unknown key (did you mean 'restart'?)",
    "herdsman.toml:9: services.db.backoff.max: must be at least initial (0.1s), not 0.05s",
    "herdsman.toml:9: services.db.backoff.factor: must be at least 1, not 0.5",
    "herdsman.toml:10: services.db.depends_on: 'dbb' is not a service",
    "herdsman.toml:10: services.db.depends_on: a service cannot depend on itself",
    "herdsman.toml:14: services.web.restart: must be one of always, on-failure, never, not 'alwys'",
    "herdsman.toml:15: services.web.replicas: must be at least 1, not 0",
    "herdsman.toml:16: services.web.stop_signal: 'TREM' is not a signal name"
    " (use e.g. 'TERM', 'INT', 'HUP' or a number)",
    "herdsman.toml:17: services.web.memory_limit: '5 parsecs' is not a size"
    " (use e.g. '64KiB', '512MiB', '1GiB', '10MB' or a number of bytes)",
    "herdsman.toml:18: services.web.depends_on: dependency cycle: web -> worker -> web",
    "herdsman.toml:18: services.web.depends_on.db: must be one of started, ready, completed,"
    " not 'redy'",
    "herdsman.toml:21: services.web.ready.tcp: 'localhost' is not a host:port address"
    " (use e.g. '127.0.0.1:8000')",
    "herdsman.toml:23: services.web.health: needs exactly one of tcp, http, exec, plugin"
    " (found http and exec)",
    "herdsman.toml:28: services.worker.command: is empty",
    "herdsman.toml:29: services.worker.env_file: 'missing.env' does not exist (looked for {tmp}/missing.env)",
    "herdsman.toml:31: services.worker.start_limit.burst: must be at least 1, not 0",
    "herdsman.toml:31: services.worker.start_limit.interval: must be greater than 0, not '0s'",
    "herdsman.toml:32: services.worker.log.backups: must be at least 0, not -1",
    "herdsman.toml:34: services.\"bad name\": service name 'bad name' may only use letters,"
    " digits, '_' and '-'",
    "herdsman.toml:37: sevices: unknown key (did you mean 'services'?)",
]


def test_many_errors_come_back_together_with_their_lines(write: WriteConfig, tmp: Path) -> None:
    expected = [line.replace("{tmp}", str(tmp)) for line in MANY_TOML_ERRORS]
    assert errors(write(MANY_TOML)) == expected


MANY_YAML = """\
settings:
  state_dir: state
  tcp: 127.0.0.1:9900
  colour: blue
services:
  db:
    command: redis-server --port ${DB_PORT}
    restrat: always
    backoff: {initial: 100ms, max: 50ms, factor: 0.5}
    depends_on:
      - dbb
      - db
  web:
    command: [serve]
    restart: alwys
    replicas: 0
    stop_signal: TREM
    memory_limit: 5 parsecs
    depends_on:
      db: redy
      worker: started
    ready:
      tcp: localhost
    health:
      exec: check
      http: http://x/
  worker:
    command: ""
    env_file: missing.env
    depends_on: {web: started}
    start_limit: {burst: 0, interval: 0s}
    log: {max_bytes: 10MB, backups: -1}
  bad name:
    command: x
sevices:
  x: {command: y}
"""

MANY_YAML_ERRORS = [
    "herdsman.yaml:3: settings.tcp: needs token_file too: TCP clients must send its token",
    "herdsman.yaml:4: settings.colour: unknown key",
    "herdsman.yaml:7: services.db.command: ${DB_PORT} is not set and has no default",
    "herdsman.yaml:8: services.db.restrat: unknown key (did you mean 'restart'?)",
    "herdsman.yaml:9: services.db.backoff.max: must be at least initial (0.1s), not 0.05s",
    "herdsman.yaml:9: services.db.backoff.factor: must be at least 1, not 0.5",
    "herdsman.yaml:11: services.db.depends_on: 'dbb' is not a service",
    "herdsman.yaml:12: services.db.depends_on: a service cannot depend on itself",
    "herdsman.yaml:15: services.web.restart: must be one of always, on-failure, never, not 'alwys'",
    "herdsman.yaml:16: services.web.replicas: must be at least 1, not 0",
    "herdsman.yaml:17: services.web.stop_signal: 'TREM' is not a signal name"
    " (use e.g. 'TERM', 'INT', 'HUP' or a number)",
    "herdsman.yaml:18: services.web.memory_limit: '5 parsecs' is not a size"
    " (use e.g. '64KiB', '512MiB', '1GiB', '10MB' or a number of bytes)",
    "herdsman.yaml:20: services.web.depends_on.db: must be one of started, ready, completed,"
    " not 'redy'",
    "herdsman.yaml:21: services.web.depends_on: dependency cycle: web -> worker -> web",
    "herdsman.yaml:23: services.web.ready.tcp: 'localhost' is not a host:port address"
    " (use e.g. '127.0.0.1:8000')",
    "herdsman.yaml:24: services.web.health: needs exactly one of tcp, http, exec, plugin"
    " (found http and exec)",
    "herdsman.yaml:28: services.worker.command: is empty",
    "herdsman.yaml:29: services.worker.env_file: 'missing.env' does not exist (looked for {tmp}/missing.env)",
    "herdsman.yaml:31: services.worker.start_limit.burst: must be at least 1, not 0",
    "herdsman.yaml:31: services.worker.start_limit.interval: must be greater than 0, not '0s'",
    "herdsman.yaml:32: services.worker.log.backups: must be at least 0, not -1",
    "herdsman.yaml:33: services.\"bad name\": service name 'bad name' may only use letters,"
    " digits, '_' and '-'",
    "herdsman.yaml:35: sevices: unknown key (did you mean 'services'?)",
]


def test_many_yaml_errors_come_back_together_with_their_lines(
    write: WriteConfig, tmp: Path
) -> None:
    expected = [line.replace("{tmp}", str(tmp)) for line in MANY_YAML_ERRORS]
    assert errors(write(MANY_YAML, "herdsman.yaml")) == expected


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('autostart = "maybe"', "4: services.web.autostart: must be true or false, not 'maybe'"),
        ('replicas = "two"', "4: services.web.replicas: must be a whole number, not 'two'"),
        ("replicas = 1.5", "4: services.web.replicas: must be a whole number, not 1.5"),
        ('backoff = "fast"', "4: services.web.backoff: must be a table, not 'fast'"),
        ('backoff.factor = "x"', "4: services.web.backoff.factor: must be a number, not 'x'"),
        ("backoff.jitter = 2", "4: services.web.backoff.jitter: must be at most 1, not 2"),
        ("env = { A = { B = 1 } }", "4: services.web.env.A: must be a string, not a table"),
        ('env = { "A=B" = "1" }', "4: services.web.env: 'A=B' is not a valid environment"),
        ('env = "A=1"', "4: services.web.env: must be a table, not 'A=1'"),
        ('stop_timeout = "-1s"', "4: services.web.stop_timeout: must not be negative, not '-1s'"),
        ('start_seconds = "soon"', "4: services.web.start_seconds: 'soon' is not a duration"),
        ('umask = "999"', "4: services.web.umask: '999' is not an octal mode"),
        ("user = 0", "4: services.web.user: must be a string, not 0"),
        ('group = ""', "4: services.web.group: must not be empty"),
        ('depends_on = "db"', "4: services.web.depends_on: must be a table, not 'db'"),
        ("depends_on = [1]", "4: services.web.depends_on: must list service names (strings)"),
        ("shell = true", "2: services.web.command: must be a string when shell = true, not a list"),
        ('ready = "tcp"', "4: services.web.ready: must be a table, not 'tcp'"),
        ("ready = {}", "4: services.web.ready: needs exactly one of tcp, http, exec, notify, log"),
        ("ready = { notify = false }", "4: services.web.ready: needs exactly one of tcp, http"),
        (
            'ready = { log = "(unclosed" }',
            "4: services.web.ready.log: '(unclosed' is not a valid regular expression: missing ),",
        ),
        ('ready = { http = "localhost:80" }', "4: services.web.ready.http: 'localhost:80' is not"),
        ('ready = { exec = "" }', "4: services.web.ready.exec: is empty"),
        (
            'ready = { tcp = "a:1", interval = 0 }',
            "4: services.web.ready.interval: must be greater than 0, not 0",
        ),
        (
            "health = { notify = true }",
            "4: services.web.health.notify: unknown key",
        ),
        (
            'health = { tcp = "a:1", failure_treshold = 2 }',
            "4: services.web.health.failure_treshold: unknown key"
            " (did you mean 'failure_threshold'?)",
        ),
        ('log = { max_byte = "1MiB" }', "4: services.web.log.max_byte: unknown key (did you mean"),
        ("memory_limit = 0", "4: services.web.memory_limit: must be greater than 0, not 0"),
        ('name = "other"', "4: services.web.name: unknown key (a service's name is its key)"),
    ],
)
def test_one_error(write: WriteConfig, body: str, error: str) -> None:
    text = f'[services.web]\ncommand = ["serve"]\n\n{body}\n'
    found = errors(write(text))
    assert len(found) == 1, found
    assert found[0].startswith(f"herdsman.toml:{error}")


def test_command_errors(write: WriteConfig) -> None:
    text = """\
        [services.a]
        command = "echo 'unclosed"
        [services.b]
        command = []
        [services.c]
        command = 5
        [services.d]
        shell = true
        command = "  "
        [services.e]
        command = ["ok", 1]
        [services.f]
        autostart = false
        """
    assert errors(write(text)) == [
        "herdsman.toml:2: services.a.command: cannot be split into arguments: no closing quotation",
        "herdsman.toml:4: services.b.command: is empty",
        "herdsman.toml:6: services.c.command: must be a string or a list of strings, not 5",
        "herdsman.toml:9: services.d.command: is empty",
        "herdsman.toml:11: services.e.command[1]: must be a string, not 1",
        "herdsman.toml:12: services.f.command: is required",
    ]


def test_unknown_dependency_suggests_a_name(write: WriteConfig) -> None:
    text = """\
        [services.db]
        command = "db"

        [services.web]
        command = "serve"
        depends_on = [
            "db",
            "dbb",
        ]
        """
    assert errors(write(text)) == [
        "herdsman.toml:8: services.web.depends_on: 'dbb' is not a service (did you mean 'db'?)"
    ]


def test_long_cycle_and_completed_on_a_service_that_restarts(write: WriteConfig) -> None:
    text = """\
        [services.a]
        command = "a"
        depends_on = { b = "started" }
        [services.b]
        command = "b"
        depends_on = { c = "ready" }
        [services.c]
        command = "c"
        depends_on = { a = "completed" }
        """
    assert errors(write(text)) == [
        "herdsman.toml:3: services.a.depends_on: dependency cycle: a -> b -> c -> a",
        "herdsman.toml:9: services.c.depends_on.a: 'a' never completes: it has restart = 'always'"
        " (use 'never' or 'on-failure' for a one-shot task)",
    ]


def test_unset_variables_name_the_key_and_are_not_reported_twice(write: WriteConfig) -> None:
    text = """\
        [settings]
        socket = "${SOCK}"

        [services.web]
        command = "${CMD}"
        env = { A = "${A:-x}", B = "$${B}", C = "${C}" }
        ready = { tcp = "127.0.0.1:${PORT}" }
        """
    assert errors(write(text), {"A": "set"}) == [
        "herdsman.toml:2: settings.socket: ${SOCK} is not set and has no default",
        "herdsman.toml:5: services.web.command: ${CMD} is not set and has no default",
        "herdsman.toml:6: services.web.env.C: ${C} is not set and has no default",
        "herdsman.toml:7: services.web.ready.tcp: ${PORT} is not set and has no default",
    ]


def test_env_file_problems(write: WriteConfig, tmp: Path) -> None:
    (tmp / "bad.env").write_text("A=1\nnot a pair\n")
    (tmp / "dir.env").mkdir()
    text = """\
        [services.a]
        command = "a"
        env_file = "bad.env"
        [services.b]
        command = "b"
        env_file = "dir.env"
        """
    assert errors(write(text)) == [
        "herdsman.toml:3: services.a.env_file: bad.env line 2: expected KEY=VALUE,"
        " not 'not a pair'",
        "herdsman.toml:6: services.b.env_file: 'dir.env' is not a regular file (it is a directory)",
    ]


def test_settings_errors(write: WriteConfig) -> None:
    text = """\
        [settings]
        state_dir = "/tmp/%s"
        socket_mode = "rw-rw----"
        shutdown_timeout = "forever"
        tcp = "no-port"
        token_file = "token"

        [services.web]
        command = "x"
        """ % ("d" * 100)
    assert errors(write(text)) == [
        "herdsman.toml:2: settings.socket: /tmp/%s/herdsman.sock is 119 bytes long, and a Unix"
        " socket path must be shorter than 108 bytes (choose a shorter state_dir or socket)"
        % ("d" * 100),
        "herdsman.toml:3: settings.socket_mode: 'rw-rw----' is not an octal mode"
        " (use e.g. '0660' or '022')",
        "herdsman.toml:4: settings.shutdown_timeout: 'forever' is not a duration"
        " (use e.g. '250ms', '1.5s', '10s', '5m', '1h', '1m30s' or a number of seconds)",
        "herdsman.toml:5: settings.tcp: 'no-port' is not a host:port address"
        " (use e.g. '127.0.0.1:8000')",
    ]


def test_socket_path_at_the_limit(write: WriteConfig) -> None:
    fits = "/" + "s" * 106
    write(f'[settings]\nsocket = "{fits}"\n[services.web]\ncommand = "x"\n')
    too_long = fits + "s"
    path = write(f'[settings]\nsocket = "{too_long}"\n[services.web]\ncommand = "x"\n')
    assert errors(path) == [
        f"herdsman.toml:2: settings.socket: {too_long} is 108 bytes long, and a Unix socket"
        " path must be shorter than 108 bytes (choose a shorter state_dir or socket)"
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "herdsman.toml: services: no services are defined (add a [services.NAME] table)"),
        (
            '[settings]\nstate_dir = "x"\n',
            "herdsman.toml: services: no services are defined (add a [services.NAME] table)",
        ),
        ("[services]\n", "herdsman.toml:1: services: no services are defined"),
        ("services = 3\n", "herdsman.toml:1: services: must be a table, not 3"),
        ('[services]\nweb = "serve"\n', "herdsman.toml:2: services.web: must be a table, not"),
        ("settings = []\n[services.w]\ncommand='x'", "herdsman.toml:1: settings: must be a table"),
    ],
)
def test_structure_errors(write: WriteConfig, text: str, error: str) -> None:
    found = errors(write(text))
    assert len(found) == 1, found
    assert found[0].startswith(error), found


def test_toml_syntax_error_gives_its_line(write: WriteConfig) -> None:
    path = write('[services.web]\ncommand = "x"\nrestart = always\n')
    assert errors(path) == ["herdsman.toml:3: syntax error: Invalid value (column 11)"]


def test_toml_duplicate_key_is_a_syntax_error(write: WriteConfig) -> None:
    path = write('[services.web]\ncommand = "x"\ncommand = "y"\n')
    assert errors(path) == ["herdsman.toml:3: syntax error: Cannot overwrite a value (column 14)"]


def test_yaml_syntax_error_gives_its_line(write: WriteConfig) -> None:
    path = write("services:\n  web:\n    command: [x\n    restart: always\n", "herdsman.yml")
    (error,) = errors(path)
    assert error.startswith("herdsman.yml:4: syntax error: while parsing a flow sequence")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("- a\n- b\n", "herdsman.yaml:1: the file must be a mapping with settings and services"),
        ("", "herdsman.yaml: services: no services are defined (add a [services.NAME] table)"),
        ("settings:\nservices:\n", "herdsman.yaml:2: services: no services are defined"),
        ("services:\n  web: x\n", "herdsman.yaml:2: services.web: must be a mapping, not 'x'"),
    ],
)
def test_yaml_structure_errors(write: WriteConfig, text: str, error: str) -> None:
    found = errors(write(text, "herdsman.yaml"))
    assert len(found) == 1, found
    assert found[0].startswith(error), found


def test_yaml_duplicate_keys_are_errors(write: WriteConfig) -> None:
    text = """\
        services:
          web:
            command: a
            command: b
          web:
            command: c
        """
    assert errors(write(text, "herdsman.yaml")) == [
        "herdsman.yaml:4: services.web.command: is given twice (YAML would keep only the last)",
        "herdsman.yaml:5: services.web: is given twice (YAML would keep only the last)",
    ]


def test_file_outside_the_cwd_is_named_in_full(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp / "conf.toml"
    path.write_text('[services.web]\nrestart = "x"\n')
    monkeypatch.chdir("/")
    assert errors(path) == [
        f"{path}:1: services.web.command: is required",
        f"{path}:2: services.web.restart: must be one of always, on-failure, never, not 'x'",
    ]


def test_unreadable_files(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)
    assert errors(tmp / "nope.toml") == ["nope.toml: config file does not exist"]
    (tmp / "latin1.toml").write_bytes(b"# caf\xe9\n")
    assert errors(tmp / "latin1.toml") == ["latin1.toml: config file is not UTF-8 text"]


def test_yaml_booleans_and_fractions_in_env_must_be_quoted(write: WriteConfig) -> None:
    """YAML's boolean trap: `NORWAY: no` is false, `VERSION: 1.10` is 1.1."""
    text = """\
        services:
          web:
            command: serve
            env:
              NORWAY: no
              DEBUG: on
              VERSION: 1.10
              PORT: 8000
              QUOTED: "no"
        """
    assert errors(write(text, "herdsman.yaml")) == [
        "herdsman.yaml:5: services.web.env.NORWAY: is the YAML boolean false (YAML reads yes,"
        ' no, on, off, true and false so): quote the text the variable should hold, e.g. "no"',
        "herdsman.yaml:6: services.web.env.DEBUG: is the YAML boolean true (YAML reads yes,"
        ' no, on, off, true and false so): quote the text the variable should hold, e.g. "no"',
        "herdsman.yaml:7: services.web.env.VERSION: is the YAML number 1.1, which loses how it"
        " was written (1.10 becomes 1.1): quote it",
    ]


def test_flags_take_only_true_or_false(write: WriteConfig) -> None:
    text = """\
        [services.web]
        command = "serve"
        autostart = "yes"
        shell = 1

        [[services.web.hooks]]
        on = "failed"
        exec = "true"
        shell = "no"
        """
    assert errors(write(text)) == [
        "herdsman.toml:3: services.web.autostart: must be true or false, not 'yes'",
        "herdsman.toml:4: services.web.shell: must be true or false, not 1",
        "herdsman.toml:9: services.web.hooks[0].shell: must be true or false, not 'no'",
    ]


@given(st.text(max_size=8))
def test_a_bare_key_is_what_toml_spells_without_quotes(key: str) -> None:
    # One test of the one definition: service names, key paths in messages and the
    # line scanner all ask is_bare_key; TOML's own grammar is the reference.
    assert is_bare_key(key) == bool(re.fullmatch(r"[A-Za-z0-9_-]+", key))
    if is_bare_key(key):
        assert tomllib.loads(f"{key} = 1") == {key: 1}
