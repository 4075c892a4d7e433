"""Imported configs run: `herdsman up -d --wait` on what the importers printed, then
`herdsman down`. Every test takes its daemon down (and kills it if down fails)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.config.importers import Imported
from herdsman.config.importers.procfile import import_procfile
from herdsman.config.importers.supervisord import import_supervisord
from tests.conftest import alive, wait_for


def herdsman(dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextlib.contextmanager
def running(dir: Path, result: Imported) -> Iterator[dict[str, dict[str, object]]]:
    """The imported config up in `dir`; yields its instances by name once settled."""
    (dir / "herdsman.toml").write_text(result.toml)
    up = herdsman(dir, "up", "-d", "--wait", "--wait-timeout", "20")
    pid = None
    try:
        proc = herdsman(dir, "status", "--json")
        if proc.returncode == 0:
            pid = int(json.loads(proc.stdout)["daemon"]["pid"])
        assert up.returncode == 0, up.stderr
        yield {i["name"]: i for i in json.loads(proc.stdout)["services"]}
    finally:
        down = herdsman(dir, "down")
        if pid is not None and alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert down.returncode == 0, down.stderr


def logs(dir: Path) -> list[str]:
    proc = herdsman(dir, "logs", "-n", "1000")
    assert proc.returncode == 0, proc.stderr
    return [line.replace(" ", "") for line in proc.stdout.splitlines()]


def test_an_imported_supervisord_conf_runs(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp / "supervisord.conf"
    conf.write_text(
        """\
[supervisord]
environment = GREETING="hello, world"

[program:db]
command = sh -c 'echo "%(program_name)s up in $PWD"; exec sleep 1000'
directory = %(here)s
priority = 1
startsecs = 0
stopwaitsecs = 2

[program:worker]
process_name = %(program_name)s_%(process_num)d
numprocs = 2
command = sh -c 'echo "worker %(process_num)d says $GREETING to ${WHO:-nobody} ($$)"; exec sleep 1000'
environment = WHO=%(ENV_USER_NAME)s
startsecs = 0
stopwaitsecs = 2

[program:migrate]
command = sh -c 'echo migrated'
autorestart = false
startsecs = 0
"""
    )
    # The import writes ${USER_NAME}; the daemon, which inherits this, reads it.
    monkeypatch.setenv("USER_NAME", "ops")
    result = import_supervisord(conf)
    with running(tmp, result) as instances:
        assert {name: i["state"] for name, i in instances.items()} == {
            "db": "running",
            "worker.0": "running",
            "worker.1": "running",
            "migrate": "exited",
        }
        assert instances["migrate"]["exit_code"] == 0

        def lines() -> list[str]:
            text = logs(tmp)
            wanted = [
                "worker0sayshello,worldtoops(",
                "worker1saysh",
                f"dbupin{tmp}",
                "migrated",
            ]
            return text if all(any(w in line for line in text) for w in wanted) else []

        wait_for(lines, timeout=10)


def test_an_imported_procfile_runs(tmp: Path) -> None:
    (tmp / "Procfile").write_text(
        "release: echo migrated > migrated.txt\n"
        "web: test -f migrated.txt && echo web on port $PORT as $APP_ENV && exec sleep 1000\n"
        "worker: echo worker on ${PORT:-none} && exec sleep 1000\n"
    )
    (tmp / ".env").write_text("APP_ENV=dev\n")
    result = import_procfile(tmp / "Procfile")
    with running(tmp, result) as instances:
        assert {name: i["state"] for name, i in instances.items()} == {
            "release": "exited",
            "web": "running",
            "worker": "running",
        }

        def lines() -> list[str]:
            text = logs(tmp)
            wanted = ["webonport5100asdev", "workeron5200"]
            return text if all(any(w in line for line in text) for w in wanted) else []

        wait_for(lines, timeout=10)
