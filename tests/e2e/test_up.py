"""`herdsman up` and `herdsman check` as a user types them."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import inject

HERDSMAN = [sys.executable, "-m", "herdsman"]


class Up:
    """A running `herdsman up` whose output is collected line by line."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*HERDSMAN, "up", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def matching(self, text: str) -> list[str]:
        """Lines containing `text`, ignoring the padding before the `│` column."""
        return [line for line in self.lines if text in re.sub(r" +│", " │", line)]

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        return str(wait_for(lambda: next(iter(self.matching(text)), None), timeout))

    def finish(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def up(tmp: Path):
    started: list[Up] = []

    def make(toml: str, *args: str) -> Up:
        (tmp / "herdsman.toml").write_text(textwrap.dedent(toml))
        runner = Up(tmp, *args)
        started.append(runner)
        return runner

    yield make
    for runner in started:
        runner.close()


def pids_in(lines: list[str]) -> list[int]:
    return [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in lines]


def test_up_prefixes_output_and_ctrl_c_stops_everything(up) -> None:
    run = up(
        """
        [services.web]
        command = ["sh", "-c", 'echo web says hi; echo oops >&2; exec sleep 60']
        depends_on = ["db"]
        [services.db]
        command = ["sh", "-c", 'echo db ready; exec sleep 60']
        start_seconds = "200ms"
        """
    )
    run.wait_line("web │ web says hi")
    run.wait_line("web │ oops")
    assert run.matching("db │ db ready")
    pids = pids_in(run.matching("started (pid"))
    assert len(pids) == 2
    assert all(alive(p) for p in pids)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 0
    assert not any(alive(p) for p in pids)
    assert run.matching("SIGINT: stopping all services")
    # reverse dependency order: web is stopped before db
    stopped = [line.split("│ ")[1].split(":")[0] for line in run.matching(": stopped")]
    assert stopped == ["web", "db"]


def test_up_respawns_a_killed_service(up) -> None:
    run = up(
        """
        [services.s]
        command = "sleep 60"
        backoff = { initial = 0 }
        """
    )
    first = pids_in([run.wait_line("s: started")])[0]
    os.kill(first, signal.SIGKILL)
    run.wait_line("killed by SIGKILL; restarting now")
    wait_for(lambda: len(run.matching("s: started")) == 2)
    second = pids_in(run.matching("s: started"))[1]
    assert second != first
    assert alive(second)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    assert not alive(second)


def test_up_keeps_the_validating_helper_to_itself(up) -> None:
    # The config is validated in a fork of `up`: pydantic and the environment the
    # helper runs with stay in the helper, out of the daemon and its services.
    run = up(
        """
        [services.env]
        command = ["sh", "-c", 'env; echo END; exec sleep 60']
        """
    )
    run.wait_line("env │ END")
    assert run.matching("env │ HERDSMAN_INSTANCE=env")
    assert not run.matching("PYDANTIC")
    assert "pydantic" not in Path(f"/proc/{run.proc.pid}/maps").read_text()
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0


def test_second_ctrl_c_kills_at_once(up) -> None:
    run = up(
        """
        [services.stubborn]
        command = ["sh", "-c", 'trap "" TERM; echo up; while :; do sleep 0.05; done']
        stop_timeout = "60s"
        """
    )
    run.wait_line("stubborn │ up")
    pid = pids_in(run.matching("started (pid"))[0]
    run.proc.send_signal(signal.SIGINT)
    run.wait_line("stopping all services")
    time.sleep(0.2)
    assert run.proc.poll() is None, "a stubborn service must hold the graceful stop"
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=10) == 0
    assert run.matching("second signal: killing all services now")
    assert not alive(pid)


def test_up_only_named_services_and_their_dependencies(up) -> None:
    run = up(
        """
        [services.a]
        command = "sleep 60"
        [services.b]
        command = "sleep 60"
        depends_on = ["a"]
        [services.c]
        command = "sleep 60"
        """,
        "b",
    )
    run.wait_line("b: started")
    assert run.matching("a: started")
    assert not run.matching("c: started")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0


def test_up_with_an_unknown_service_is_a_usage_error(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 1"\n')
    result = subprocess.run(
        [*HERDSMAN, "up", "wbe"], cwd=tmp, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "herdsman: unknown service 'wbe' (did you mean 'web'?)"


def test_check_reports_every_error_with_exit_2(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        textwrap.dedent(
            """
            [services.web]
            command = "sleep 1"
            restart = "alwys"
            depends_on = ["dbb"]

            [services.db]
            comand = "x"
            """
        )
    )
    result = subprocess.run(
        [*HERDSMAN, "check"], cwd=tmp, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) >= 3, errors
    joined = "\n".join(errors)
    assert "services.web.restart" in joined
    assert "dbb" in joined
    assert "did you mean 'command'" in joined
    assert all(line.startswith("herdsman: ") for line in errors)


def test_check_ok_and_up_refuses_invalid_config(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 1"\nreplicas = 3\n')
    result = subprocess.run([*HERDSMAN, "check"], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 0
    assert "ok (1 services, 3 instances)" in result.stdout
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 1"\nreplicas = 0\n')
    result = subprocess.run([*HERDSMAN, "up"], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 2
    assert "services.web.replicas" in result.stderr


def test_up_d_refused_starts_no_daemon(tmp: Path) -> None:
    # `up -d` starts the daemon's process while the config is validated: refused (an
    # invalid config, an unknown service), it says why and that process never serves.
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 60"\nreplicas = 0\n')
    result = subprocess.run([*HERDSMAN, "up", "-d"], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 2
    assert "services.web.replicas" in result.stderr
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 60"\n')
    result = subprocess.run([*HERDSMAN, "up", "-d", "wbe"], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown service 'wbe' (did you mean 'web'?)" in result.stderr
    status = subprocess.run([*HERDSMAN, "status"], cwd=tmp, capture_output=True, text=True)
    assert status.returncode == 3, status.stdout


def test_no_config_file_is_a_usage_error(tmp: Path) -> None:
    result = subprocess.run([*HERDSMAN, "check"], cwd=tmp, capture_output=True, text=True)
    assert result.returncode == 2
    assert "herdsman.toml" in result.stderr


def test_up_as_pid_1_reaps_orphans(tmp: Path) -> None:
    """In a fresh PID namespace herdsman is PID 1: orphans must not stay zombies."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a PID namespace")
    (tmp / "herdsman.toml").write_text(
        textwrap.dedent(
            """
            [services.forker]
            command = ["sh", "-c", 'for i in 1 2 3; do (sleep 0.1 &) ; done; echo spawned; exec sleep 60']
            """
        )
    )
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", *HERDSMAN, "up"],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.search(r"forker +│ spawned", line):
                break
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            daemon = int(f.read().split()[0])  # herdsman, PID 1 inside the namespace

        def children() -> list[str]:  # of every thread: the spawning one's too
            found = []
            for task in os.listdir(f"/proc/{daemon}/task"):
                with open(f"/proc/{daemon}/task/{task}/children") as f:
                    found.extend(f.read().split())
            return found

        # Each `( ... & )` subshell was waited for before the next: its orphan was
        # PID 1's child before "spawned" was said. Once every orphan exited and was
        # reaped, the forker is PID 1's one child (a zombie would still be listed).
        wait_for(lambda: len(children()) == 1)

        def zombie_children() -> list[str]:
            out = subprocess.run(["ps", "-eo", "stat=,ppid=,cmd="], capture_output=True, text=True)
            rows = [line.split(None, 2) for line in out.stdout.splitlines()]
            return [r[2] for r in rows if r[0].startswith("Z") and int(r[1]) == daemon]

        assert zombie_children() == []
        os.kill(daemon, signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)


def test_second_up_on_the_same_config_is_refused(up, tmp: Path) -> None:
    run = up(
        """
        [services.s]
        command = "sleep 60"
        """
    )
    run.wait_line("s: started")
    second = subprocess.run([*HERDSMAN, "up"], cwd=tmp, capture_output=True, text=True, timeout=10)
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"herdsman: another herdsman (pid {run.proc.pid}) already runs this config "
        f"({tmp}/.herdsman/herdsman.lock)"
    )
    assert len(run.matching("started (pid")) == 1
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0


def test_daemon_log_records_spawns_exits_and_backoff(up, tmp: Path) -> None:
    run = up(
        """
        [settings]
        log_format = "json"
        [services.crash]
        command = ["sh", "-c", "exit 3"]
        backoff = { initial = "200ms", jitter = 0 }
        """
    )
    run.wait_line("crash: exited with code 3; restarting in 200ms")
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == 0
    log = tmp / ".herdsman" / "logs" / "herdsman.log"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(set(e) == {"time", "level", "component", "message"} for e in events)
    messages = [e["message"] for e in events]
    assert any(re.fullmatch(r"crash: spawned pid \d+", m) for m in messages)
    assert "crash: starting -> restarting: exited with code 3; restarting in 200ms" in messages
    assert "SIGTERM: stopping all services" in messages


def test_up_d_reports_a_socket_it_cannot_listen_on(tmp: Path) -> None:
    (tmp / "blocker").write_text("a file where a directory should be\n")
    (tmp / "herdsman.toml").write_text(
        '[settings]\nsocket = "blocker/herdsman.sock"\n[services.s]\ncommand = "sleep 60"\n'
    )
    result = subprocess.run(
        [*HERDSMAN, "up", "-d"], cwd=tmp, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert result.stderr.startswith("herdsman: the daemon did not start: ")
    assert "blocker/herdsman.sock" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# Run first by the daemon (see helpers.inject): its first spawn request says which
# of the API server's modules are loaded, then waits for the test's go on stdin.
FIRST_SPAWN = """
import sys
from herdsman.runtime import spawn

_start = spawn.Spawner.start
_seen = []


def start(self, *args, **kwargs):
    if not _seen:
        _seen.append(True)
        server = ("herdsman.api.server", "herdsman.api.routes", "h11")
        loaded = [name for name in server if name in sys.modules]
        print(f"first spawn; loaded: {loaded}", file=sys.stderr, flush=True)
        sys.stdin.buffer.read(1)
    return _start(self, *args, **kwargs)


spawn.Spawner.start = start
"""


def test_up_loads_the_api_server_after_its_first_spawn_and_answers_what_came_before(
    tmp: Path,
) -> None:
    # The HTTP stack is no part of the way to the first spawn (issue 12: start 300);
    # the socket is bound before it, and a request that comes meanwhile waits in the
    # backlog and is answered once the server is loaded.
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 600"\nreplicas = 2\n')
    proc = subprocess.Popen(
        [*HERDSMAN, "up"],
        cwd=tmp,
        env=inject(tmp, FIRST_SPAWN),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    said: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for text in proc.stderr:
            said.append(text)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        line = wait_for(lambda: next((s for s in said if s.startswith("first spawn")), None))
        assert line == "first spawn; loaded: []\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(tmp / ".herdsman" / "herdsman.sock"))
            client.sendall(
                b"GET /v1/status HTTP/1.1\r\nHost: herdsman\r\nConnection: close\r\n\r\n"
            )
            proc.stdin.write("go")
            proc.stdin.flush()
            answer = b"".join(iter(lambda: client.recv(65536), b""))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert [i["name"] for i in json.loads(body)["services"]] == ["web.0", "web.1"]
    finally:
        proc.stdin.close()  # a daemon still waiting for the go gets EOF
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        reader.join(10)
