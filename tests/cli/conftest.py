"""Fixtures for the client commands: a project dir with a config, the CLI run in
process (exit code, stdout, stderr), and a fake daemon on the project's socket."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from herdsman.cli.main import main
from tests.cli.fake import FakeDaemon


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    dir: Path
    config: Path

    @property
    def socket(self) -> Path:
        return self.dir / ".herdsman" / "herdsman.sock"

    @property
    def log_dir(self) -> Path:
        return self.dir / ".herdsman" / "logs"


@pytest.fixture
def project(tmp: Path) -> Project:
    config = tmp / "herdsman.toml"
    config.write_text(
        '[services.web]\ncommand = "sleep 100"\nreplicas = 2\n\n'
        '[services.db]\ncommand = "sleep 100"\n'
    )
    return Project(tmp, config)


@pytest.fixture
def cli(project: Project, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Runs `herdsman -c <project config> ARGS...` in this process."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(["-c", str(project.config), *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def fake(project: Project) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(project.socket).start()
    yield daemon
    daemon.stop()
