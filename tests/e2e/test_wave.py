"""A big start wave goes out a slice at a time (issue 15: no command may wait
silently): in the middle of it the daemon answers a status, acts on SIGTERM, stops
a service and re-execs, and what it had not spawned yet it never spawns, or (a
re-exec) the new image does, once."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import wait_for
from tests.e2e.helpers import herdsman, inject, instances, processes_by_instance

REPLICAS = 1500

CONFIG = f"""
[settings]
shutdown_timeout = "10s"

[services.many]
command = "sleep 1000"
replicas = {REPLICAS}
start_seconds = 0
"""

# A slow machine, on any machine: each spawn holds the loop 2 ms more, so the wave
# lasts 3 s at least, and what the test does comes in the middle of it.
SLOW = """
import time
from herdsman.runtime import spawn

_start = spawn.Spawner.start


def start(self, *args, **kwargs):
    time.sleep(0.002)
    return _start(self, *args, **kwargs)


spawn.Spawner.start = start
"""


def launch(tmp: Path) -> subprocess.Popen[bytes]:
    (tmp / "herdsman.toml").write_text(CONFIG)
    with open(tmp / "up.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "herdsman", "up"],
            cwd=tmp,
            env=inject(tmp, SLOW),
            stdout=subprocess.DEVNULL,  # a line per spawn, which nobody reads here
            stderr=err,
        )


def connected(path: Path) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):  # not bound, or not listening yet
        client.close()
        return None
    return client


def request(tmp: Path, method: str, path: str) -> dict[str, Any]:
    """The API's answer, over the socket as soon as it listens (raw: no client)."""
    sock = tmp / ".herdsman" / "herdsman.sock"
    client = wait_for(lambda: connected(sock))
    assert isinstance(client, socket.socket)
    with client:
        client.settimeout(60)
        client.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: herdsman\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = b"".join(iter(lambda: client.recv(1 << 20), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 202 ")), head
    document: dict[str, Any] = json.loads(body)
    return document


def mid_wave(tmp: Path) -> Counter[tuple[str, bool]]:
    """A status asked for as the daemon starts: answered while the wave is out,
    (state, has a pid) counted."""
    services = request(tmp, "GET", "/v1/status")["services"]
    counted = Counter((i["state"], i["pid"] is not None) for i in services)
    # Answered in the middle of the wave: some instances are not spawned yet.
    assert counted[("starting", False)] > 0, counted
    return counted


def spawned(tmp: Path) -> list[str]:
    """The instance of each spawn, from the daemon's log, in order."""
    log = (tmp / ".herdsman" / "logs" / "herdsman.log").read_text()
    return [line.split()[3].rstrip(":") for line in log.splitlines() if ": spawned pid " in line]


def stop(up: subprocess.Popen[bytes]) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
    assert up.wait(60) == 0


def test_a_status_is_answered_in_the_middle_of_a_start_wave(tmp: Path) -> None:
    up = launch(tmp)
    try:
        counted = mid_wave(tmp)
        assert sum(counted.values()) == REPLICAS
        assert set(counted) <= {("starting", False), ("running", True)}, counted
    finally:
        stop(up)


def test_sigterm_in_the_middle_of_a_start_wave_spawns_nothing_more(tmp: Path) -> None:
    up = launch(tmp)
    try:
        mid_wave(tmp)
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        # What was not spawned yet never is; what was is stopped, nothing is left.
        names = spawned(tmp)
        assert 0 < len(names) < REPLICAS
        assert len(set(names)) == len(names)
        assert processes_by_instance() == {}
    finally:
        stop(up)


def test_a_stop_in_the_middle_of_a_start_wave_leaves_nothing_running(tmp: Path) -> None:
    up = launch(tmp)
    try:
        mid_wave(tmp)
        result = herdsman(tmp, "stop", "many")
        assert result.returncode == 0, result.stderr
        states = Counter((i["state"], i["pid"]) for i in instances(tmp).values())
        assert states == {("stopped", None): REPLICAS}  # nothing queued either
        assert processes_by_instance() == {}
    finally:
        stop(up)
    assert 0 < len(spawned(tmp)) < REPLICAS


def test_a_reexec_in_the_middle_of_a_start_wave_leaves_the_rest_to_the_new_image(
    tmp: Path,
) -> None:
    up = launch(tmp)
    try:
        mid_wave(tmp)
        request(tmp, "POST", "/v1/reexec")

        def all_running() -> bool:
            document = request(tmp, "GET", "/v1/status")
            if document["daemon"]["reexecs"] != 1:
                return False
            return all(i["state"] == "running" for i in document["services"])

        wait_for(all_running, timeout=60)
        # Each instance spawned once, some of them by the new image.
        log = (tmp / ".herdsman" / "logs" / "herdsman.log").read_text()
        before_handover = log.split("handing over to a new image")[0].count(": spawned pid ")
        names = spawned(tmp)
        assert sorted(names) == sorted(f"many.{r}" for r in range(REPLICAS))
        assert 0 < before_handover < REPLICAS
        mains = processes_by_instance(main_only=True)
        assert len(mains) == REPLICAS
        assert all(len(pids) == 1 for pids in mains.values())
        assert request(tmp, "GET", "/v1/status")["daemon"]["pid"] == up.pid
    finally:
        stop(up)
    assert processes_by_instance() == {}
