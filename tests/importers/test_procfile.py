"""`herdsman import procfile` on Procfiles as Heroku, foreman and honcho users write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from herdsman.cli.main import main
from tests.importers.helpers import FIXTURES, check, procfile, write_and_load


def test_rails_procfile_with_release_and_dotenv(tmp: Path) -> None:
    path = FIXTURES / "rails" / "Procfile"
    data, result = procfile(path)
    services = data["services"]
    assert list(services) == ["web", "worker", "release"]
    for name, port in (("web", "5000"), ("worker", "5100"), ("release", "5200")):
        service = services[name]
        assert service["shell"] is True
        assert service["cwd"] == str(path.parent)
        assert service["env_file"] == str(path.parent / ".env")
        assert service["env"] == {"PORT": port}
    # herdsman's own ${...} is escaped, so the shell still sees ${PORT:-3000}.
    assert services["web"]["command"] == "bundle exec puma -C config/puma.rb -p $${PORT:-3000}"
    assert services["worker"]["command"] == "bundle exec sidekiq -C config/sidekiq.yml"
    # Heroku's release phase: once, before the others.
    assert services["release"]["restart"] == "never"
    assert services["web"]["depends_on"] == {"release": "completed"}
    assert services["worker"]["depends_on"] == {"release": "completed"}
    assert "depends_on" not in services["release"]
    assert result.warnings == []

    config = write_and_load(result, tmp)
    web = config.services["web"]
    assert web.command == ["/bin/sh", "-c", "bundle exec puma -C config/puma.rb -p ${PORT:-3000}"]
    assert web.env == {
        "RAILS_ENV": "development",
        "REDIS_URL": "redis://localhost:6379/1",
        "PORT": "5000",
    }


def test_python_procfile_without_dotenv() -> None:
    data, result = procfile(FIXTURES / "python" / "Procfile")
    services = data["services"]
    assert list(services) == ["web", "worker", "clock"]
    assert services["web"]["command"] == "gunicorn -b 0.0.0.0:$PORT app:app --log-file -"
    assert services["clock"]["command"] == "python clock.py"
    assert [s["env"]["PORT"] for s in services.values()] == ["5000", "5100", "5200"]
    assert all("env_file" not in s and "depends_on" not in s for s in services.values())
    assert len(result.warnings) == 1
    assert ":5: skipped 'web.2: gunicorn" in result.warnings[0]
    assert "# warning: " in result.toml


@pytest.mark.parametrize("name", ["rails", "python"])
def test_every_import_passes_check(name: str, tmp: Path) -> None:
    _, result = procfile(FIXTURES / name / "Procfile")
    assert check(result, tmp) == 0


def test_base_port_from_option_then_dotenv(tmp: Path) -> None:
    (tmp / "Procfile").write_text("web: ./web\napi: ./api\n")
    (tmp / ".env").write_text("PORT=8000\n")
    data, _ = procfile(tmp / "Procfile")
    assert [s["env"]["PORT"] for s in data["services"].values()] == ["8000", "8100"]
    data, _ = procfile(tmp / "Procfile", port=3000)
    assert [s["env"]["PORT"] for s in data["services"].values()] == ["3000", "3100"]


def test_a_dotenv_herdsman_cannot_read_is_left_out_with_a_warning(tmp: Path) -> None:
    (tmp / "Procfile").write_text("web: ./web\n")
    (tmp / ".env").write_text('GOOD=1\nBAD="unterminated\n')
    data, result = procfile(tmp / "Procfile")
    assert "env_file" not in data["services"]["web"]
    assert "line 2" in result.warnings[0]
    assert "not used" in result.warnings[0]
    # A .env beside the config is read for ${VAR} (as docker compose does): fix it first.
    assert check(result, tmp) == 2
    (tmp / ".env").write_text('GOOD=1\nBAD="terminated"\n')
    assert check(result, tmp) == 0


def test_dollars_reach_the_shell_unchanged(tmp: Path) -> None:
    line = "echo $$ $HOME ${HOME} ${X:-d} $${Y} '$' \"$\" $"
    (tmp / "Procfile").write_text(f"job: {line}\n")
    _, result = procfile(tmp / "Procfile")
    config = write_and_load(result, tmp)
    assert config.services["job"].command == ["/bin/sh", "-c", line]


def test_replica_placeholder_is_warned_about(tmp: Path) -> None:
    (tmp / "Procfile").write_text("job: echo {replica}\n")
    _, result = procfile(tmp / "Procfile")
    assert "replaces {replica}" in result.warnings[0]


def test_duplicate_names_keep_the_last(tmp: Path) -> None:
    (tmp / "Procfile").write_text("web: one\nweb: two\n")
    data, result = procfile(tmp / "Procfile")
    assert data["services"]["web"]["command"] == "two"
    assert "defined again (first on line 1)" in result.warnings[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no processes found"), ("# only a comment\n\n", "no processes found")],
)
def test_errors(text: str, message: str, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp / "Procfile"
    path.write_text(text)
    assert main(["import", "procfile", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"herdsman: {path}: {message} (expected lines like 'web: command')\n"


def test_unreadable(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "procfile", str(tmp)]) == 2
    assert capsys.readouterr().err == f"herdsman: cannot read {tmp}: Is a directory\n"


def test_port_only_goes_with_procfile(capsys: pytest.CaptureFixture[str]) -> None:
    conf = FIXTURES / "docker" / "supervisord.conf"
    assert main(["import", "supervisord", str(conf), "--port", "80"]) == 2
    assert "--port only goes with import procfile" in capsys.readouterr().err


def test_an_unreadable_dotenv_is_an_error(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp / "Procfile").write_text("web: ./web\n")
    (tmp / ".env").write_bytes(b"A=\xff\n")
    assert main(["import", "procfile", str(tmp / "Procfile")]) == 2
    assert capsys.readouterr().err == f"herdsman: cannot read {tmp}/.env: it is not UTF-8 text\n"
