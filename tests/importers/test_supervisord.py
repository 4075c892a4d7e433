"""`herdsman import supervisord` on realistic configs, checked field by field."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.importers.helpers import FIXTURES, check, supervisord, write_and_load


@pytest.fixture(autouse=True)
def api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "s3cret")


def test_django_celery_stack() -> None:
    data, result = supervisord(FIXTURES / "django" / "supervisord.conf")
    services = data["services"]
    assert list(services) == ["gunicorn", "celery", "celerybeat", "flower"]
    shared = {"DJANGO_SETTINGS_MODULE": "mysite.settings.production", "LANG": "en_US.UTF-8"}

    web = services["gunicorn"]
    # A continuation line is part of the command; shlex reads the newline as a space.
    assert shlex.split(web["command"]) == [
        "/srv/mysite/venv/bin/gunicorn", "mysite.wsgi:application", "--bind",
        "unix:/run/gunicorn.sock", "--workers", "3", "--timeout", "120",
    ]  # fmt: skip
    assert web["cwd"] == "/srv/mysite"
    assert web["user"] == "django"
    assert web["env"] == shared
    assert web["restart"] == "always"
    assert web["start_limit"] == {"burst": 3}
    assert web["stop_signal"] == "TERM"
    assert web["log"] == {"max_bytes": "50MiB", "backups": 10}  # supervisord's MB is 1024**2
    assert "depends_on" not in web  # the lowest priority starts first

    celery = services["celery"]
    assert celery["replicas"] == 2
    assert celery["command"].endswith("-n worker{replica}@%h")  # %% is a literal %
    assert celery["env"] == {
        **shared,
        "C_FORCE_ROOT": "false",
        "CELERY_BROKER_URL": "redis://localhost:6379/0",
    }
    assert celery["start_seconds"] == "10s"
    assert celery["stop_timeout"] == "600s"
    assert celery["restart"] == "always"
    # Inside [group:mysite] the programs start by their own priority: 100, 999, 1000.
    assert celery["depends_on"] == {"celerybeat": "started"}
    assert services["celerybeat"]["depends_on"] == {"gunicorn": "started"}

    flower = services["flower"]
    assert flower["autostart"] is False
    assert flower["restart"] == "on-failure"
    assert flower["start_limit"] == {"burst": 1}  # startretries = 0; herdsman needs >= 1
    # The group's priority 999 comes before flower's own group of priority 1000.
    assert flower["depends_on"] == {"celery": "started"}

    assert any("exitcodes = 0,2" in w and "[program:flower]" in w for w in result.warnings)
    assert any("/var/log/celery/worker.err.log" in w for w in result.warnings)
    assert "[unix_http_server] not imported" in result.toml
    assert "in supervisord's [group:mysite]" in result.toml


def test_docker_stack_logging_to_stdout(tmp: Path) -> None:
    path = FIXTURES / "docker" / "supervisord.conf"
    data, result = supervisord(path)
    nginx, app, cron = (data["services"][name] for name in ("nginx", "app", "cron"))

    # `;` without whitespace before it is not a comment (it is inside the quotes here).
    assert nginx["command"] == 'nginx -g "daemon off;"'
    assert nginx["stop_signal"] == "QUIT"
    assert "user" not in nginx  # [supervisord] user is the daemon's, not the programs'
    assert "log" not in nginx  # maxbytes = 0 goes with /dev/stdout: nothing to rotate

    assert app["command"] == "gunicorn --bind 0.0.0.0:8000 --access-logfile - app:app"
    assert app["env"] == {
        "PYTHONUNBUFFERED": "1",
        "APP_HOME": str(path.parent),  # %(here)s
        "TOKEN": "${API_TOKEN}",  # read when herdsman loads the config, as supervisord does
        "GREETING": "hello, world",
    }
    assert app["restart"] == "on-failure"
    assert app["depends_on"] == {"nginx": "started"}
    assert "stopasgroup/killasgroup = false" in result.toml

    assert cron["restart"] == "never"
    assert "start_limit" not in cron
    assert any("stdout_logfile = NONE" in w for w in result.warnings)
    assert not any("/dev/stdout" in w for w in result.warnings)  # a note, not a warning

    # What herdsman runs is what supervisord ran: `%%` became `%`, `${HOSTNAME}` is
    # left for the shell, the token comes from the environment.
    config = write_and_load(result, tmp, {"API_TOKEN": "s3cret"})
    assert config.services["cron"].argv_for(0) == [
        "sh", "-c", 'while :; do echo "tick at $(date +%s) for ${HOSTNAME}"; sleep 60; done'
    ]  # fmt: skip
    assert config.services["app"].env["TOKEN"] == "s3cret"


def test_numprocs_workers() -> None:
    data, result = supervisord(FIXTURES / "workers" / "supervisord.conf")
    services = data["services"]
    assert list(services) == ["laravel-worker", "backend-1", "backend-2", "backend-3", "my_app"]

    worker = services["laravel-worker"]
    assert worker["replicas"] == 8
    assert worker["command"].endswith("--name=laravel-worker-{replica}")
    assert worker["user"] == "forge"
    assert worker["stop_timeout"] == "3600s"
    assert "laravel-worker_00 ... laravel-worker_07" in result.toml

    # numprocs_start = 1 and %(process_num)02d: {replica} cannot say 8001, so one
    # service per process, named as supervisord named them.
    for n in (1, 2, 3):
        backend = services[f"backend-{n}"]
        assert backend["command"] == f"/usr/bin/python3 -m http.server 800{n} --bind 127.0.0.1"
        assert backend["env"] == {"BACKEND_INDEX": str(n)}
        assert "replicas" not in backend
        assert backend["restart"] == "on-failure"
    # The program's warnings once, though it became three services.
    assert [w for w in result.warnings if "[program:backend]" in w] == [
        f"{FIXTURES}/workers/supervisord.conf:16: [program:backend]: exitcodes = 0,3:"
        " herdsman's on-failure restarts after any non-zero exit, so exit 3 restarts it too",
        f"{FIXTURES}/workers/supervisord.conf:16: [program:backend]: stdout_logfile ="
        " /var/log/backend-%(process_num)02d.log: herdsman writes <log_dir>/<instance>.log"
        " instead (its lines marked out)",
    ]

    app = services["my_app"]
    assert app["command"] == "/opt/my.app/bin/run --threads 1"  # %(numprocs)d
    assert app["stop_signal"] == "INT"
    assert app["start_seconds"] == "0s"
    assert app["umask"] == "0022"
    assert "renamed from 'my.app'" in result.toml


def test_includes_are_relative_to_the_main_file_and_here_to_each_file() -> None:
    base = FIXTURES / "includes"
    data, result = supervisord(base / "supervisord.conf")
    services = data["services"]
    assert list(services) == ["redis", "api", "worker"]  # sorted within each glob
    assert services["redis"]["command"] == f"redis-server {base}/conf.d/redis.conf"
    assert services["api"]["cwd"] == f"{base}/conf.d"
    assert services["api"]["depends_on"] == {"redis": "started"}
    assert services["worker"]["depends_on"] == {"redis": "started"}
    assert "cwd" not in services["worker"]  # [supervisord] directory only applies daemonized
    assert services["api"]["restart"] == "on-failure"
    warnings = "\n".join(result.warnings)
    assert "exitcodes = 2: supervisord restarted it after exit 0 too" in warnings
    assert "exit 2 restarts it too" in warnings
    assert "no file matches 'missing/*.conf'" in warnings
    assert "worker.ini: its [include] section is ignored" in warnings
    assert f"# Included: {base}/extra/worker.ini" in result.toml


@pytest.mark.parametrize("name", ["django", "docker", "workers", "includes"])
def test_every_import_passes_check(name: str, tmp: Path) -> None:
    _, result = supervisord(FIXTURES / name / "supervisord.conf")
    assert check(result, tmp) == 0


def test_supervisord_directory_applies_when_it_daemonizes(tmp: Path) -> None:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "[supervisord]\ndirectory = /srv/app\numask = 027\n\n"
        "[program:a]\ncommand = ./run\n\n[program:b]\ncommand = ./run\ndirectory = /opt/b\numask = 002\n"
    )
    data, _ = supervisord(conf)
    a, b = data["services"]["a"], data["services"]["b"]
    assert (a["cwd"], a["umask"]) == ("/srv/app", "0027")
    assert (b["cwd"], b["umask"]) == ("/opt/b", "0002")


def test_expansions_and_quoting(tmp: Path) -> None:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "[supervisord]\nenvironment = REGION=eu,HOME_DIR=%(ENV_HOME)s\n\n"
        "[program:echo]\n"
        "command = sh -c 'echo %(program_name)s in %(group_name)s on %(host_node_name)s: $$ ${X:-y} $PATH' ; a comment\n"
        'environment = MSG="a, b",REGION_COPY="%(ENV_REGION)s",DIR=%(here)s\n'
        "directory = %(ENV_HOME_DIR)s/%(ENV_REGION)s\n"
    )
    data, result = supervisord(conf)
    echo = data["services"]["echo"]
    import platform

    host = platform.node()
    assert echo["env"] == {
        "REGION": "eu",
        "HOME_DIR": "${HOME}",
        "MSG": "a, b",
        "REGION_COPY": "eu",  # a variable the file sets is its value
        "DIR": str(tmp),
    }
    assert echo["cwd"] == "${HOME}/eu"
    config = write_and_load(result, tmp, {"HOME": "/home/me"})
    service = config.services["echo"]
    # herdsman's own `${...}` and `$$` are escaped: the shell gets them as written.
    assert service.argv_for(0) == ["sh", "-c", f"echo echo in echo on {host}: $$ ${{X:-y}} $PATH"]
    assert service.env["HOME_DIR"] == "/home/me"
    assert str(service.cwd) == "/home/me/eu"


def test_names_are_sanitized_and_kept_unique(tmp: Path) -> None:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "[program:my.app]\ncommand = a\n\n[program:my_app]\ncommand = b\n\n[program:é]\ncommand = c\n"
    )
    data, result = supervisord(conf)
    assert list(data["services"]) == ["my_app", "my_app_2", "program"]
    assert "# renamed from 'my.app': herdsman names use letters" in result.toml
    assert "# renamed from 'my_app': another service has that name" in result.toml
    assert "# renamed from 'é'" in result.toml
    assert check(result, tmp) == 0


def test_other_sections(tmp: Path) -> None:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        "[inet_http_server]\nport = 127.0.0.1:9001\n\n"
        "[eventlistener:memmon]\ncommand = memmon -a 200MB\nevents = TICK_60\n\n"
        "[fcgi-program:php]\ncommand = php-cgi\nsocket = unix:///run/php.sock\n\n"
        "[program:web]\ncommand = web\nstdout_events_enabled = true\nfrobnicate = yes\n\n"
        "[weird]\nx = 1\n"
    )
    data, result = supervisord(conf)
    assert list(data["services"]) == ["web"]
    warnings = "\n".join(result.warnings)
    assert "[eventlistener:memmon]: not imported" in warnings
    assert "[fcgi-program:php]: not imported" in warnings
    assert "stdout_events_enabled not imported" in warnings
    assert "unknown key 'frobnicate' ignored" in warnings
    assert "[weird]: unknown section" in warnings
    assert "# [eventlistener:memmon] command = memmon -a 200MB" in result.toml
    assert "[inet_http_server] not imported: herdsman serves its API over TCP" in result.toml


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[program:x]\ndirectory = /\n", ":1: [program:x]: has no command"),
        ("[program:x]\ncommand = a\nautostart = maybe\n", "autostart: 'maybe' is not a boolean"),
        ("[program:x]\ncommand = a\nnumprocs = two\n", "numprocs: 'two' is not a whole number"),
        ("[program:x]\ncommand = a %(nope)s\n", "command: %(nope)s cannot be expanded"),
        ("[program:x]\ncommand = a %(program_name)\n", "is badly formatted"),
        ("[program:x]\ncommand = a\nenvironment = A=1,B\n", "environment: cannot read 'A=1,B'"),
        ("[program:x]\ncommand = a\nautorestart = sometimes\n", "autorestart: 'sometimes'"),
        ("[program:x]\ncommand = a\nstopsignal = FOO\n", "stopsignal: 'FOO' is not a signal"),
        ("[program:x]\ncommand = a\nexitcodes = 0,x\n", "exitcodes: '0,x'"),
        ("[group:g]\nprograms = nope\n", ":1: [group:g]: programs names 'nope'"),
        ("command = a\n", ":1: 'command = a' comes before any [section] header"),
        ("[program:x]\ncommand = a\n!!!\n", ":3: cannot parse '!!!'"),
        ("[supervisord]\n", "no [program:x] sections found"),
        ("[include]\nfile = a.conf\n", ":1: [include]: has no files = setting"),
    ],
)
def test_errors_name_the_file_and_where(
    text: str, message: str, tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from herdsman.cli.main import main

    conf = tmp / "supervisord.conf"
    conf.write_text(text)
    assert main(["import", "supervisord", str(conf)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"herdsman: {conf}")
    assert message in err
    assert len(err.splitlines()) == 1


def test_unreadable_file(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from herdsman.cli.main import main

    assert main(["import", "supervisord", str(tmp / "nope.conf")]) == 2
    assert capsys.readouterr().err == (
        f"herdsman: cannot read {tmp}/nope.conf: No such file or directory\n"
    )


def test_cli_prints_toml_on_stdout_and_warnings_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from herdsman.cli.main import main

    assert main(["import", "supervisord", str(FIXTURES / "includes" / "supervisord.conf")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("# Imported from ")
    base = FIXTURES / "includes"
    assert err.splitlines() == [
        f"herdsman: warning: {base}/extra/worker.ini: its [include] section is ignored"
        " (supervisord only reads [include] in the main file)",
        f"herdsman: warning: {base}/supervisord.conf:5: [include]: no file matches 'missing/*.conf'",
        f"herdsman: warning: {base}/conf.d/20-api.conf:1: [program:api]: exitcodes = 2:"
        " herdsman's on-failure restarts after any non-zero exit, so exit 2 restarts it too",
        f"herdsman: warning: {base}/conf.d/20-api.conf:1: [program:api]: exitcodes = 2:"
        " supervisord restarted it after exit 0 too; herdsman's on-failure does not",
    ]
