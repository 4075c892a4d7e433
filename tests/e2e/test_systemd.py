"""herdsman under systemd: sd_notify to its manager, and its own unit file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERDSMAN = [sys.executable, "-m", "herdsman"]


def test_daemon_reports_to_its_manager_and_children_do_not_inherit_it(tmp: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp / "manager.sock"))
    listener.settimeout(10)
    (tmp / "herdsman.toml").write_text(
        '[services.env]\ncommand = ["sh", "-c", "echo notify=$${NOTIFY_SOCKET:-unset}; '
        'exec sleep 60"]\n'
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp / "manager.sock"), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([*HERDSMAN, "up"], cwd=tmp, env=env, stdout=subprocess.PIPE, text=True)
    try:
        first = listener.recv(4096).decode().split("\n")
        assert first[0] == "READY=1"
        assert "STATUS=1 starting" in first or "STATUS=1 running" in first
        assert f"MAINPID={proc.pid}" in first
        # watchdog pings at half of WATCHDOG_USEC: several within a second
        pings, deadline = 0, time.monotonic() + 1.2
        while time.monotonic() < deadline:
            if listener.recv(4096) == b"WATCHDOG=1":
                pings += 1
        assert pings >= 3
        proc.send_signal(signal.SIGHUP)  # reload: RELOADING=1 then READY=1
        seen = []
        while not any(m.startswith("READY=1") for m in seen):
            seen.append(listener.recv(4096).decode())
        reload_msgs = [m for m in seen if not m.startswith("WATCHDOG")]
        assert reload_msgs[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
        proc.send_signal(signal.SIGTERM)
        seen = []
        while not any(m.startswith("STOPPING=1") for m in seen):
            seen.append(listener.recv(4096).decode())
        assert proc.wait(15) == 0
        assert proc.stdout is not None
        assert "notify=unset" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


def test_systemd_unit_passes_systemd_analyze_verify(tmp: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    (tmp / "herdsman.toml").write_text(
        '[settings]\nshutdown_timeout = "20s"\n[services.s]\ncommand = "sleep 1"\n'
    )
    result = subprocess.run(
        [*HERDSMAN, "systemd-unit"], cwd=tmp, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "KillMode=process" in unit
    assert "FileDescriptorStoreMax=4096" in unit and "Environment=HERDSMAN_FDSTORE=4096" in unit
    assert f"-c {tmp}/herdsman.toml up" in unit
    assert "TimeoutStopSec=35" in unit
    path = tmp / "herdsman-test.service"
    # systemd-analyze checks ExecStart's binary exists; point it at this interpreter.
    path.write_text(unit.replace(unit.split("ExecStart=")[1].split(" ")[0], sys.executable))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (verify.stdout + verify.stderr).splitlines()
        if "herdsman-test.service" in line
    ]
    assert verify.returncode == 0 and problems == [], verify.stdout + verify.stderr
