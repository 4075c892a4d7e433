"""Fixtures for plugin tests: the test package installed with pip into a temp dir, a
real daemon with that dir on its PYTHONPATH, and a tiny HTTP server for webhooks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import alive, wait_for

PACKAGE = Path(__file__).parent / "pkg"
# Offline, with the setuptools of this environment (a dev dependency).
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index")
PIP_INSTALL += ("--no-build-isolation",)


@pytest.fixture(scope="session")
def plugin_path() -> Iterator[Path]:
    """A directory holding the installed test package (its code and its dist-info,
    which is where entry points are found)."""
    work = Path(tempfile.mkdtemp(prefix="hmpkg", dir="/tmp"))
    try:
        source = work / "src"
        # Built from a copy: a build writes into the source tree, and xdist workers
        # would race on it.
        shutil.copytree(PACKAGE, source)
        target = work / "site"
        subprocess.run(
            [*PIP_INSTALL, "--target", str(target), str(source)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert (target / "hmplug" / "hooks.py").exists()
        yield target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def environment(plugin_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_path), env.get("PYTHONPATH")]))
    return env


@dataclass
class Daemon:
    dir: Path
    env: dict[str, str]
    pid: int | None = None

    def cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herdsman", *argv],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        result = self.cli("up", "-d", *extra, timeout=60)
        lock = self.dir / ".herdsman" / "herdsman.lock"
        if result.returncode == 0:
            self.pid = int(lock.read_text())
        return result

    def status(self) -> dict[str, dict[str, Any]]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return {i["name"]: i for i in json.loads(result.stdout)["services"]}

    def log(self) -> str:
        return (self.dir / ".herdsman" / "logs" / "herdsman.log").read_text()

    def down(self) -> None:
        if self.pid is None:
            return
        self.cli("down")
        if alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        wait_for(lambda: not alive(self.pid), 15)


@pytest.fixture
def daemon(tmp: Path, plugin_path: Path) -> Iterator[Daemon]:
    running = Daemon(tmp, environment(plugin_path))
    try:
        yield running
    finally:
        running.down()


def write_config(directory: Path, text: str) -> None:
    (directory / "herdsman.toml").write_text(textwrap.dedent(text))


@dataclass
class WebhookServer:
    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """An HTTP server on 127.0.0.1 that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            body["_path"] = self.path
            body["_content_type"] = self.headers["Content-Type"]
            received.append(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookServer(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
