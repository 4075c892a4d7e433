"""What a loaded config holds: defaults, command forms, env, replicas, probes, paths."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from herdsman.config import Backoff, HealthCheck, LogSettings, Probe, StartLimit
from tests.config.conftest import WriteConfig
from tests.config.helpers import load


def test_every_default(write: WriteConfig, tmp: Path) -> None:
    config = load(write('[services.web]\ncommand = "serve"\n'))
    assert config.path == tmp / "herdsman.toml"
    settings = config.settings
    assert settings.state_dir == tmp / ".herdsman"
    assert settings.log_dir == tmp / ".herdsman" / "logs"
    assert settings.socket == tmp / ".herdsman" / "herdsman.sock"
    assert settings.shutdown_timeout == 30.0
    assert settings.tcp is None
    assert settings.token_file is None
    assert settings.socket_mode == 0o600
    assert settings.socket_group is None
    web = config.services["web"]
    assert web.name == "web"
    assert web.command == ["serve"]
    assert web.shell is False
    assert web.cwd == tmp
    assert web.env == {}
    assert web.env_file is None
    assert (web.user, web.group, web.umask) == (None, None, None)
    assert web.autostart is True
    assert web.replicas == 1
    assert web.restart == "always"
    assert web.backoff == Backoff(initial=0.1, max=30.0, factor=2.0, jitter=0.1)
    assert web.start_limit == StartLimit(burst=5, interval=60.0)
    assert web.start_seconds == 1.0
    assert web.stop_signal == signal.SIGTERM
    assert web.stop_timeout == 10.0
    assert web.depends_on == {}
    assert web.ready is None
    assert web.health is None
    assert web.memory_limit is None
    assert web.log == LogSettings(max_bytes=10 * 1024 * 1024, backups=5)


def test_probe_and_health_defaults(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.web]
            command = "serve"
            ready = { notify = true }
            health = { http = "http://127.0.0.1:8000/health" }
            """
        )
    )
    ready = config.services["web"].ready
    assert ready == Probe(notify=True, interval=1.0, timeout=1.0, initial_delay=0.0)
    assert ready is not None
    assert ready.kind == "notify"
    health = config.services["web"].health
    assert health == HealthCheck(
        http="http://127.0.0.1:8000/health",
        interval=10.0,
        timeout=2.0,
        failure_threshold=3,
        initial_delay=0.0,
    )
    assert health is not None
    assert health.kind == "http"


def test_everything_set_is_parsed_once(write: WriteConfig, tmp: Path) -> None:
    (tmp / "token").write_text("secret\n")
    config = load(
        write(
            """
            [settings]
            state_dir = "/run/hm"
            log_dir = "logs"
            shutdown_timeout = "1m"
            tcp = "127.0.0.1:9900"
            token_file = "token"
            socket_mode = "0660"
            socket_group = "herd"

            [services.db]
            command = ["redis-server", "--port", "6390"]
            cwd = "data"
            env = { REDIS_LOG = "1", PORT = 6390, DEBUG = true, RATIO = 0.5 }
            user = "redis"
            group = "redis"
            umask = "027"
            autostart = false
            restart = "on-failure"
            backoff = { initial = 0, max = "2m", factor = 1.5, jitter = 0 }
            start_limit = { burst = 3, interval = "10s" }
            start_seconds = "250ms"
            stop_signal = "INT"
            stop_timeout = "1m30s"
            ready = { tcp = "127.0.0.1:6390", interval = "100ms", timeout = "2s", initial_delay = 1 }
            health = { exec = "redis-cli -p 6390 ping", interval = "5s", failure_threshold = 2 }
            memory_limit = "512MiB"
            log = { max_bytes = "64KiB", backups = 0 }

            [services.web]
            command = "serve"
            depends_on = { db = "ready" }
            ready = { log = "listening on .* port \\\\d+" }
            """
        )
    )
    settings = config.settings
    assert settings.state_dir == Path("/run/hm")
    assert settings.log_dir == tmp / "logs"
    assert settings.socket == Path("/run/hm/herdsman.sock")
    assert settings.shutdown_timeout == 60.0
    assert settings.tcp == "127.0.0.1:9900"
    assert settings.token_file == tmp / "token"
    assert settings.socket_mode == 0o660
    assert settings.socket_group == "herd"
    db = config.services["db"]
    assert db.command == ["redis-server", "--port", "6390"]
    assert db.cwd == tmp / "data"
    assert db.env == {"REDIS_LOG": "1", "PORT": "6390", "DEBUG": "true", "RATIO": "0.5"}
    assert (db.user, db.group, db.umask) == ("redis", "redis", 0o27)
    assert db.autostart is False
    assert db.restart == "on-failure"
    assert db.backoff == Backoff(initial=0.0, max=120.0, factor=1.5, jitter=0.0)
    assert db.start_limit == StartLimit(burst=3, interval=10.0)
    assert db.start_seconds == 0.25
    assert db.stop_signal == signal.SIGINT
    assert db.stop_timeout == 90.0
    assert db.ready == Probe(tcp="127.0.0.1:6390", interval=0.1, timeout=2.0, initial_delay=1.0)
    assert db.health == HealthCheck(
        exec=["redis-cli", "-p", "6390", "ping"], interval=5.0, failure_threshold=2
    )
    assert db.memory_limit == 512 * 1024**2
    assert db.log == LogSettings(max_bytes=65536, backups=0)
    web = config.services["web"]
    assert web.depends_on == {"db": "ready"}
    assert web.ready is not None
    assert web.ready.log == "listening on .* port \\d+"
    assert list(config.services) == ["db", "web"]


def test_services_keep_file_order(write: WriteConfig) -> None:
    names = ["zeta", "alpha", "m-1", "B_2"]
    text = "".join(f'[services.{name}]\ncommand = "x"\n' for name in names)
    assert list(load(write(text)).services) == names


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ('"sleep 60"', ["sleep", "60"]),
        ("""'python3 -c "print(1)"'""", ["python3", "-c", "print(1)"]),
        ("\"echo 'a b' c\\\\ d\"", ["echo", "a b", "c d"]),
        ('["echo", "a b", "$HOME"]', ["echo", "a b", "$HOME"]),
    ],
)
def test_command_forms(write: WriteConfig, command: str, argv: list[str]) -> None:
    config = load(write(f"[services.web]\ncommand = {command}\n"))
    assert config.services["web"].command == argv


def test_shell_runs_the_string_through_sh(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.web]
            shell = true
            command = "echo $HOME | tr a-z A-Z && exec sleep 60"
            """
        )
    )
    web = config.services["web"]
    assert web.shell is True
    assert web.command == ["/bin/sh", "-c", "echo $HOME | tr a-z A-Z && exec sleep 60"]


def test_replicas_substitute_their_number(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.web]
            command = "serve --port 800{replica} --json '{\\"id\\": {replica}}' {0}"
            replicas = 3
            env = { SLOT = "{replica}", FIXED = "x" }
            ready = { tcp = "127.0.0.1:800{replica}" }
            health = { http = "http://localhost:800{replica}/" }
            """
        )
    )
    web = config.services["web"]
    assert web.instance_names() == ["web.0", "web.1", "web.2"]
    assert web.argv_for(2) == ["serve", "--port", "8002", "--json", '{"id": 2}', "{0}"]
    assert web.env_for(1) == {"SLOT": "1", "FIXED": "x"}
    assert web.command[2] == "800{replica}"
    assert web.ready is not None
    assert web.ready.for_replica(1).tcp == "127.0.0.1:8001"
    assert web.health is not None
    assert web.health.for_replica(2).http == "http://localhost:8002/"


def test_one_replica_is_named_after_its_service(write: WriteConfig) -> None:
    web = load(write('[services.web]\ncommand = "x {replica}"\n')).services["web"]
    assert web.instance_names() == ["web"]
    assert web.argv_for(0) == ["x", "0"]


def test_shell_replica_substitution(write: WriteConfig) -> None:
    text = '[services.w]\nshell = true\ncommand = "echo {replica} ${X:-$}HOME"\nreplicas = 2\n'
    web = load(write(text)).services["w"]
    assert web.argv_for(1) == ["/bin/sh", "-c", "echo 1 $HOME"]


def test_env_file_is_merged_under_env(write: WriteConfig, tmp: Path) -> None:
    (tmp / "conf").mkdir()
    (tmp / "conf" / "web.env").write_text(
        "# shared\nexport DB_URL='postgres://db/app'\nPORT=7000\nMODE=\"prod\"\n"
    )
    config = load(
        write(
            """
            [services.web]
            command = "serve"
            env_file = "conf/web.env"
            env = { PORT = 8000, EXTRA = "${HOME_DIR:-/home}" }
            """
        )
    )
    web = config.services["web"]
    assert web.env_file == tmp / "conf" / "web.env"
    assert web.env == {
        "DB_URL": "postgres://db/app",
        "PORT": "8000",
        "MODE": "prod",
        "EXTRA": "/home",
    }


def test_depends_on_list_means_started(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.db]
            command = "db"
            [services.cache]
            command = "cache"
            [services.web]
            command = "serve"
            depends_on = ["db", "cache"]
            """
        )
    )
    assert config.services["web"].depends_on == {"db": "started", "cache": "started"}


def test_completed_dependency_on_a_one_shot_task(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.migrate]
            command = "migrate"
            restart = "on-failure"
            [services.web]
            command = "serve"
            depends_on = { migrate = "completed" }
            """
        )
    )
    assert config.services["web"].depends_on == {"migrate": "completed"}


def test_settings_paths_are_relative_to_the_config_dir(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp / "etc").mkdir()
    path = tmp / "etc" / "herdsman.toml"
    path.write_text(
        '[settings]\nstate_dir = "../var"\nsocket = "~/hm.sock"\n'
        '[services.web]\ncommand = "x"\ncwd = "www"\n'
    )
    monkeypatch.setenv("HOME", "/home/herd")
    monkeypatch.chdir("/")
    config = load(path)
    assert config.settings.state_dir == tmp / "etc" / "../var"
    assert config.settings.log_dir == tmp / "etc" / "../var/logs"
    assert config.settings.socket == Path("/home/herd/hm.sock")
    assert config.services["web"].cwd == tmp / "etc" / "www"


def test_a_relative_config_path_is_made_absolute(write: WriteConfig, tmp: Path) -> None:
    write('[services.web]\ncommand = "x"\n')
    config = load(Path("herdsman.toml"))
    assert config.path == tmp / "herdsman.toml"
    assert config.services["web"].cwd == tmp


def test_a_missing_cwd_is_left_for_spawn_time(write: WriteConfig, tmp: Path) -> None:
    config = load(write('[services.web]\ncommand = "x"\ncwd = "nowhere"\n'))
    assert config.services["web"].cwd == tmp / "nowhere"


def test_interpolation_feeds_numbers_and_durations(write: WriteConfig) -> None:
    config = load(
        write(
            """
            [services.web]
            command = "serve --port ${PORT}"
            replicas = "${REPLICAS:-2}"
            stop_timeout = "${STOP:-5s}"
            autostart = "${AUTOSTART}"
            """
        ),
        {"PORT": "8000", "AUTOSTART": "false"},
    )
    web = config.services["web"]
    assert web.command == ["serve", "--port", "8000"]
    assert (web.replicas, web.stop_timeout, web.autostart) == (2, 5.0, False)


def test_models_are_frozen(write: WriteConfig) -> None:
    config = load(write('[services.web]\ncommand = "x"\n'))
    with pytest.raises(ValueError, match="frozen"):
        config.services["web"].replicas = 2  # type: ignore[misc]
