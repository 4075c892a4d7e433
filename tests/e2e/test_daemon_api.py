"""The control API of a real daemon (`herdsman up -d`): TCP auth, malformed input,
memory limits seen through the CLI, and schemathesis against the served document."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis

from herdsman.api.openapi import DOCUMENT
from tests.conftest import MARK, alive, wait_for

TOKEN = "s3cret-token-for-tests"


@dataclass
class Daemon:
    dir: Path
    pid: int
    port: int

    def cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "herdsman", *argv],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def tcp(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def status(self) -> dict[str, dict[str, object]]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return {i["name"]: i for i in json.loads(result.stdout)["services"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_daemon(directory: Path, services: str, *, marked: bool = True) -> Daemon:
    """`up -d` in `directory`. Unmarked, the daemon outlives a single test's leak check
    (a module-scoped daemon); its fixture then owns the cleanup."""
    port = free_port()
    (directory / "token").write_text(TOKEN + "\n")
    (directory / "token").chmod(0o600)  # a token others can read is refused
    (directory / "herdsman.toml").write_text(
        textwrap.dedent(
            f"""
            [settings]
            tcp = "127.0.0.1:{port}"
            token_file = "token"
            shutdown_timeout = "5s"
            """
        )
        + textwrap.dedent(services)
    )
    up = subprocess.run(
        [sys.executable, "-m", "herdsman", "up", "-d", "--wait", "--wait-timeout", "20"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        env=None if marked else {k: v for k, v in os.environ.items() if k != MARK},
    )
    assert up.returncode == 0, up.stderr
    pid = int((directory / ".herdsman" / "herdsman.lock").read_text())
    return Daemon(directory, pid, port)


def stop_daemon(daemon: Daemon) -> None:
    down = daemon.cli("down")
    if down.returncode != 0 or alive(daemon.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGKILL)
    wait_for(lambda: not alive(daemon.pid), 15)


@pytest.fixture
def daemon(tmp: Path) -> Iterator[Daemon]:
    running = start_daemon(
        tmp,
        """
        [services.web]
        command = ["sleep", "600"]
        replicas = 2
        start_seconds = "0.2s"
        stop_timeout = "1s"
        """,
    )
    try:
        yield running
    finally:
        stop_daemon(running)


def test_socket_is_owner_only(daemon: Daemon) -> None:
    mode = stat.S_IMODE((daemon.dir / ".herdsman" / "herdsman.sock").stat().st_mode)
    assert mode == 0o600


def test_tcp_needs_the_token_on_every_path(daemon: Daemon) -> None:
    for path in ("/v1/status", "/metrics", "/openapi.json"):
        status, body = daemon.tcp("GET", path)
        assert status == 401, path
        assert "error" in json.loads(body)
        status, _ = daemon.tcp("GET", path, {"Authorization": "Bearer wrong-token"})
        assert status == 401, path
        status, body = daemon.tcp("GET", path, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, path
    log = (daemon.dir / ".herdsman" / "logs" / "herdsman.log").read_text()
    assert TOKEN not in log
    assert log.count("refused a control request from 127.0.0.1:") == 6


def test_the_daemon_loads_pydantic_never_and_psutil_once_asked(tmp: Path) -> None:
    # What the daemon keeps in memory for good: the config is validated in a helper
    # process, psutil is loaded at the first resource sample, not before, and ssl
    # only once an https URL asks for it (none here).
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = ["sleep", "600"]\n')
    up = subprocess.run(
        [sys.executable, "-m", "herdsman", "up", "-d"], cwd=tmp, capture_output=True, timeout=60
    )
    assert up.returncode == 0, up.stderr
    running = Daemon(tmp, int((tmp / ".herdsman" / "herdsman.lock").read_text()), 0)
    try:
        maps = Path(f"/proc/{running.pid}/maps")
        assert "_psutil_linux" not in maps.read_text()
        assert running.cli("status").returncode == 0  # samples every instance
        assert "_psutil_linux" in maps.read_text()
        assert "pydantic_core" not in maps.read_text()
        assert "libssl" not in maps.read_text()
    finally:
        stop_daemon(running)


def test_garbage_gets_4xx_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    sock_path = str(daemon.dir / ".herdsman" / "herdsman.sock")
    for garbage in (
        b"\x00\xff garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/instances/web/start HTTP/1.1\r\nContent-Length: 5\r\n\r\n{{{{{",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(sock_path)
            s.sendall(garbage)
            answer = s.recv(65536)
        assert answer == b"" or answer.split(b" ", 2)[1].startswith(b"4"), answer[:80]
    assert daemon.cli("status").returncode == 0
    assert all(i["state"] == "running" for i in daemon.status().values())


def test_memory_hog_restarted_by_memory_limit(tmp: Path) -> None:
    running = start_daemon(
        tmp,
        """
        [services.hog]
        command = ["python3", "-c", 'import time; x = b"x" * (80 * 2**20); print("hog", flush=True); time.sleep(600)']
        memory_limit = "40MiB"
        start_seconds = "0.1s"
        """,
    )
    try:
        first = running.status()["hog"]["pid"]
        wait_for(lambda: running.status()["hog"]["restarts"] >= 1, timeout=25, interval=0.5)
        hog = running.status()["hog"]
        assert hog["pid"] != first
        assert str(hog["message"]).startswith("memory limit exceeded (")
        assert str(hog["message"]).endswith("MiB > 40 MiB)")
        table = running.cli("status").stdout
        assert "memory limit exceeded" in table
    finally:
        stop_daemon(running)


# --- schemathesis against the real daemon -------------------------------------

_schema = (
    schemathesis.openapi.from_dict(
        DOCUMENT,
        config=schemathesis.Config.from_dict(
            {
                "generation": {"mode": "all", "max-examples": 15, "database": "none"},
                "phases": {"stateful": {"enabled": False}},
            }
        ),
    )
    .exclude(path="/v1/events")
    .exclude(path="/v1/shutdown")
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Daemon]:
    directory = Path(tempfile.mkdtemp(prefix="hm", dir="/tmp"))
    running = start_daemon(
        directory,
        """
        [services.web]
        command = ["sleep", "600"]
        start_seconds = "0.1s"
        stop_timeout = "0.5s"
        backoff = { initial = 0 }
        start_limit = { burst = 1000, interval = "1s" }
        """,
        marked=False,
    )
    try:
        yield running
    finally:
        stop_daemon(running)
        shutil.rmtree(directory, ignore_errors=True)


@_schema.parametrize()
def test_real_daemon_conforms_to_its_document(case: schemathesis.Case, fuzzed: Daemon) -> None:
    follow = (case.query or {}).get("follow")
    if any(str(v) in ("true", "1") for v in (follow if isinstance(follow, list) else [follow])):
        case.query["follow"] = "false"  # a stream that never ends
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{fuzzed.port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert alive(fuzzed.pid)
