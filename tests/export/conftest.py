"""Running `herdsman export` in-process, and reading back what it wrote."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from herdsman.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("herdsman: warning: ")]


@pytest.fixture
def export(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`export(config_path, "systemd", "-o", dir)` -> Result."""

    def run(config: Path, *args: str) -> Result:
        capsys.readouterr()
        code = main(["-c", str(config), "export", *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def split_stream(text: str) -> dict[str, str]:
    """`# --- file: NAME` sections of `export systemd`'s stdout, by file name."""
    files: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("# --- file: "):
            name = line.removeprefix("# --- file: ").strip()
            files[name] = ""
        elif name is not None:
            files[name] += line
    return {key: value.rstrip("\n") + "\n" for key, value in files.items()}


def settings(unit: str, section: str) -> list[tuple[str, str]]:
    """(key, value) pairs of one section of a unit file, in order."""
    pairs, current = [], None
    for line in unit.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def values(unit: str, section: str, key: str) -> list[str]:
    return [value for k, value in settings(unit, section) if k == key]


def value(unit: str, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"{key}= in [{section}]: {found}\n{unit}"
    return found[0]


def notes(text: str) -> list[str]:
    return [
        line.removeprefix("# herdsman: ")
        for line in text.splitlines()
        if line.startswith("# herdsman: ")
    ]


def systemd_verify(paths: list[Path]) -> str:
    """What `systemd-analyze verify` says about these unit files ("" when happy)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    result = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    said = (result.stdout + result.stderr).strip()
    return said if result.returncode or said else ""


RICH = r"""
[services.db]
command = "redis-server --port 6390"
user = "999"
group = "www-data"
umask = "0027"
stop_signal = "INT"
stop_timeout = "20s"
memory_limit = "512MiB"
ready = { tcp = "127.0.0.1:6390" }
health = { exec = "redis-cli -p 6390 ping", interval = "5s", timeout = "2s", failure_threshold = 4 }
kubernetes = { image = "redis:7.2" }

[services.migrate]
command = "./bin/migrate --to latest"
restart = "never"
env_file = "app.env"

[services.web_app]
command = ["python3", "-m", "http.server", "80{replica}"]
replicas = 3
env = { GREETING = "hello \"world\" 100% $HOME \\o/", LINES = "a\nb", PORT = "80{replica}" }
env_file = "app.env"
depends_on = { db = "ready", migrate = "completed" }
restart_with = ["db"]
backoff = { initial = "1s", max = "16s", factor = 2.0, jitter = 0 }
start_limit = { burst = 3, interval = "30s" }
ready = { http = "http://127.0.0.1:80{replica}/health?deep=1", interval = "2s", initial_delay = "3s" }

[services.notifier]
command = "python3 -c 'print(1)'"
shell = false
ready = { notify = true, watchdog = "15s" }
restart = "on-failure"
autostart = false
depends_on = ["web_app"]

[services.report]
shell = true
command = "echo \"done at $(date)\" > /tmp/report-%Y.txt; exit 0"
restart = "on-failure"
ready = { log = "^done" }

[services.after_report]
command = "sleep 1"
depends_on = { report = "completed" }
"""

APP_ENV = "DATABASE_URL=postgres://db/app\nMODE=production\n"


def write_rich(tmp: Path) -> Path:
    """A config using nearly every key, with an env_file and a ./bin program."""
    (tmp / "app.env").write_text(APP_ENV)
    (tmp / "bin").mkdir()
    (tmp / "bin" / "migrate").write_text("#!/bin/sh\nexit 0\n")
    (tmp / "bin" / "migrate").chmod(0o755)
    path = tmp / "herdsman.toml"
    path.write_text(RICH)
    return path
