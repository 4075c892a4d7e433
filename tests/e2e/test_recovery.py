"""Crash recovery: SIGKILL the daemon, `up -d` again, and every instance has exactly
one live process: the survivors adopted (same pid, output captured again through
their reopened pipes), the ones that died restarted, none started twice, nothing
of a removed service left running, and an unrelated process with a recorded pid
left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import alive, wait_for
from tests.e2e.helpers import herdsman, instances, processes_by_instance, processes_of, status

CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.quiet]
command = "sleep 600"
start_seconds = "0.1s"
replicas = 2

[services.talker]
# Quiet until poked through a FIFO: then it writes a line.
command = ["sh", "-c", "while :; do read x < poke; echo \\"got $x\\"; done"]
start_seconds = "0.1s"

[services.chatty]
command = ["sh", "-c", "while :; do echo chat; sleep 0.01; done"]
start_seconds = "0.1s"
"""

GONE = """
[services.gone]
command = "sleep 602"
start_seconds = "0.1s"
"""


def live_processes_of(instance: str) -> list[int]:
    """Live processes of this test that run as `instance`'s main process."""
    return processes_of(instance, main_only=True)


def test_sigkill_of_the_daemon_then_up_adopts_survivors_and_restarts_the_dead(
    tmp: Path,
) -> None:
    config = tmp / "herdsman.toml"
    config.write_text(CONFIG + GONE)
    os.mkfifo(tmp / "poke")
    assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
    try:
        before = status(tmp)
        old_daemon = before["daemon"]["pid"]
        pids = {i["name"]: i["pid"] for i in before["services"]}
        state = json.loads((tmp / ".herdsman/state.json").read_text())
        assert state["instances"]["quiet.0"]["pid"] == pids["quiet.0"]
        assert state["instances"]["quiet.0"]["start_time"] > 0

        os.kill(old_daemon, signal.SIGKILL)
        wait_for(lambda: not alive(old_daemon))
        # Nobody reads the pipes now: the chatty one dies of it, the quiet ones live on.
        wait_for(lambda: not live_processes_of("chatty"), timeout=10)
        assert all(alive(pids[n]) for n in ("quiet.0", "quiet.1", "talker", "gone"))
        config.write_text(CONFIG)  # `gone` is no longer in the config

        again = herdsman(tmp, "up", "-d", "--wait")
        assert again.returncode == 0, again.stderr
        after = status(tmp)
        assert after["daemon"]["pid"] != old_daemon
        now = {i["name"]: i for i in after["services"]}
        assert set(now) == {"quiet.0", "quiet.1", "talker", "chatty"}
        for name in ("quiet.0", "quiet.1", "talker"):
            assert now[name]["pid"] == pids[name], name
            assert now[name]["state"] == "running"
        assert now["chatty"]["pid"] != pids["chatty"]
        assert now["chatty"]["state"] == "running"
        wait_for(lambda: not alive(pids["gone"]), timeout=10)
        # Exactly one live process per instance: none was started twice.
        for name, inst in now.items():
            assert live_processes_of(name) == [inst["pid"]], name
        daemon_log = (tmp / ".herdsman/logs/herdsman.log").read_text()
        assert "adopted 3 running instance(s) of a previous daemon" in daemon_log
        assert f"gone: pid {pids['gone']} of a previous daemon is no longer in the config" in (
            daemon_log
        )

        # The adopted talker's output reaches its log again, through its reopened pipe.
        with open(tmp / "poke", "w") as fifo:
            fifo.write("hello\n")
        talker_log = tmp / ".herdsman/logs/talker.log"
        wait_for(lambda: talker_log.exists() and b" out got hello\n" in talker_log.read_bytes())
        assert instances(tmp)["talker"]["pid"] == pids["talker"]  # it wrote, and lives on

        # An adopted instance stops (and restarts) like any other.
        stopped = herdsman(tmp, "stop", "quiet.0")
        assert stopped.returncode == 0, stopped.stderr
        assert not alive(pids["quiet.0"])
        assert instances(tmp)["quiet.0"]["state"] == "stopped"
        assert herdsman(tmp, "start", "quiet.0").returncode == 0
        assert instances(tmp)["quiet.0"]["pid"] not in (None, pids["quiet.0"])

        # A process that exits on its own while adopted is restarted, status read off /proc.
        os.kill(pids["quiet.1"], signal.SIGTERM)
        wait_for(lambda: instances(tmp)["quiet.1"]["pid"] not in (None, pids["quiet.1"]))
        assert instances(tmp)["quiet.1"]["restarts"] == 1
    finally:
        assert herdsman(tmp, "down").returncode == 0
    for pid in pids.values():
        assert not alive(pid)


def test_a_recorded_pid_now_used_by_another_process_is_left_alone(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(CONFIG.split("[services.talker]")[0])
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        state_dir = tmp / ".herdsman"
        state_dir.mkdir()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        record = {"state": "running", "pid": stranger.pid, "start_time": 1, "pipes": []}
        (state_dir / "state.json").write_text(
            json.dumps(
                {
                    "format": 1,
                    "boot_id": boot,
                    "config": str(tmp / "herdsman.toml"),
                    "instances": {"quiet.0": record, "removed": record},
                }
            )
        )
        assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
        try:
            quiet = instances(tmp)["quiet.0"]
            assert quiet["pid"] != stranger.pid
            assert quiet["state"] == "running"
            assert stranger.poll() is None  # neither adopted nor killed
        finally:
            assert herdsman(tmp, "down").returncode == 0
        assert stranger.poll() is None
        assert not (state_dir / "state.json").exists()  # a clean stop leaves nothing to adopt
    finally:
        stranger.kill()
        stranger.wait()


def test_state_json_is_rewritten_as_instances_change(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        textwrap.dedent(
            """
            [services.crashy]
            command = ["sh", "-c", "exit 4"]
            start_seconds = "0.1s"
            backoff = { initial = "0.1s", max = "0.1s" }
            start_limit = { burst = 3, interval = "60s" }
            """
        )
    )
    assert herdsman(tmp, "up", "-d").returncode == 0
    try:
        path = tmp / ".herdsman/state.json"
        wait_for(lambda: instances(tmp)["crashy"]["state"] == "failed", timeout=10)
        # It follows within state.WRITE_DELAY.
        wait_for(lambda: json.loads(path.read_text())["instances"]["crashy"]["state"] == "failed")
        record = json.loads(path.read_text())["instances"]["crashy"]
        assert record["restarts"] == 3
        assert record["exit_code"] == 4
        assert record["pid"] is None
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_down_without_a_daemon_stops_what_a_dead_one_left_running(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        textwrap.dedent(
            """
            [services.quiet]
            command = "sleep 600"
            start_seconds = "0.1s"
            replicas = 2
            [services.stubborn]
            # Ignores its stop signal: SIGKILL after the shutdown timeout.
            command = ["sh", "-c", "trap '' TERM; sleep 600 & wait; wait"]
            start_seconds = "0.1s"
            [settings]
            shutdown_timeout = "1s"
            """
        )
    )
    assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
    document = status(tmp)
    pids = {i["name"]: i["pid"] for i in document["services"]}
    os.kill(document["daemon"]["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(document["daemon"]["pid"]))
    assert all(alive(pid) for pid in pids.values())

    down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    assert "no daemon was running" in down.stdout
    assert (
        "stopped what a daemon that died had left running: quiet.0, quiet.1, stubborn"
        in down.stdout
    )
    for pid in pids.values():
        assert not alive(pid)
    assert not (tmp / ".herdsman/state.json").exists()
    again = herdsman(tmp, "down")
    assert again.stdout.strip() == f"herdsman: no daemon was running for {tmp}/herdsman.toml"


def test_sigkill_in_the_middle_of_a_burst_of_spawns_leaves_no_duplicate(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        '[services.many]\ncommand = "sleep 600"\nreplicas = 200\nstart_seconds = "0.1s"\n'
    )
    starting = subprocess.Popen(
        [sys.executable, "-m", "herdsman", "up", "-d"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp / ".herdsman/logs/herdsman.log"
    lock = tmp / ".herdsman/herdsman.lock"
    wait_for(lambda: log.exists() and log.read_text().count("spawned pid") >= 20, 30, 0.001)
    os.kill(int(lock.read_text()), signal.SIGKILL)  # long before the burst is over
    starting.wait(timeout=30)
    live = processes_by_instance(main_only=True)
    spawned = [p for i in range(200) for p in live.get(f"many.{i}", [])]
    assert 20 <= len(spawned) < 200  # some were spawned, not all
    again = herdsman(tmp, "up", "-d", "--wait")
    assert again.returncode == 0, again.stderr
    try:
        now = instances(tmp)
        assert len(now) == 200
        live = processes_by_instance(main_only=True)
        for name, inst in now.items():
            assert live.get(name) == [inst["pid"]], name  # exactly one each
        # Every one journalled is adopted; one spawned as the daemon died, before its
        # pid reached the journal, is found by its environment and replaced.
        kept = sum(inst["pid"] in spawned for inst in now.values())
        assert kept in (len(spawned), len(spawned) - 1)
        if kept < len(spawned):
            assert "of a previous daemon was not recorded; stopping it" in log.read_text()
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_the_same_config_by_another_path_adopts_too(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.quiet]\ncommand = "sleep 600"\n')
    assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
    document = status(tmp)
    pid = document["services"][0]["pid"]
    os.kill(document["daemon"]["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(document["daemon"]["pid"]))
    link = Path(f"{tmp}-link")
    link.symlink_to(tmp)
    try:
        again = herdsman(tmp, "-c", f"{link}/herdsman.toml", "up", "-d", "--wait")
        assert again.returncode == 0, again.stderr
        assert instances(tmp)["quiet"]["pid"] == pid
        assert live_processes_of("quiet") == [pid]
    finally:
        assert herdsman(tmp, "down").returncode == 0
        link.unlink()
