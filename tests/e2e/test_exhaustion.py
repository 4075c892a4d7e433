"""Out of file descriptors, herdsman keeps supervising: the daemon started under a
low `prlimit` raises its soft limit to the hard one, says (in `check` and on `up`'s
output) how many instances the limit holds, and the instances that cannot get
their pipes are failed starts retried by their backoff (`too many open files`),
never an exception that ends the daemon and leaves its services unsupervised."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import alive, marked_pids, wait_for
from tests.e2e.helpers import herdsman, instances, status

pytestmark = pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit")

TOO_MANY = "cannot start: too many open files"
TOO_MANY_PROCS = "cannot start: too many processes (ulimit -u, TasksMax= or pids.max"


def limited(limit: str, *argv: str) -> list[str]:
    return ["prlimit", f"--nofile={limit}", "--", sys.executable, "-m", "herdsman", *argv]


def run(tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=60)


def daemon_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open files line")


def test_replicas_beyond_the_fd_limit_are_retried_and_the_daemon_lives_on(tmp: Path) -> None:
    # 150 instances at two pipes each cannot fit in 256 fds.
    (tmp / "herdsman.toml").write_text(
        '[services.s]\ncommand = "sleep 600"\nreplicas = 150\nstart_seconds = "0.1s"\n'
    )
    up = run(tmp, *limited("256:256", "up", "-d"))
    try:
        assert up.returncode == 0, up.stderr
        assert "Traceback" not in up.stderr
        assert "open files limit (256) holds about" in up.stderr
        daemon = status(tmp)["daemon"]["pid"]

        def split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
            found = instances(tmp).values()
            running = [i for i in found if i["state"] == "running"]
            retrying = [i for i in found if i["state"] in ("restarting", "starting")]
            return (running, retrying) if len(running) + len(retrying) == 150 else None

        running, retrying = wait_for(split, timeout=30)  # type: ignore[misc]
        assert running
        assert retrying
        assert all(i["message"].startswith(TOO_MANY) for i in retrying if i["message"])
        assert any(i["message"].startswith(f"{TOO_MANY}; retrying in ") for i in retrying)
        assert alive(daemon)
        # Stopping some (the first ones started, s.20 to s.49) frees their fds: the
        # waiting ones get them on a retry.
        assert herdsman(tmp, "stop", "s.[2-4]?").returncode == 0
        started = {i["name"] for i in retrying}

        def took_over() -> bool:
            now = instances(tmp)
            return any(now[name]["state"] == "running" for name in started)

        wait_for(took_over, timeout=60, interval=0.2)
        log = (tmp / ".herdsman/logs/herdsman.log").read_text()
        assert "Traceback" not in log
        assert "internal error" not in log
        assert alive(daemon)
    finally:
        down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    assert wait_for(lambda: not marked_pids(os.environ["HERDSMAN_TEST_MARK"]), timeout=10)


def test_the_daemon_raises_its_soft_limit_to_the_hard_one(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.s]\ncommand = "sleep 600"\n')
    up = run(tmp, *limited("200:5000", "up", "-d"))
    try:
        assert up.returncode == 0, up.stderr
        assert "open files limit" not in up.stderr  # one instance fits
        found = status(tmp)
        assert daemon_limit(found["daemon"]["pid"]) == (5000, 5000)
        # Services inherit it, as under a unit's LimitNOFILE=.
        assert daemon_limit(found["services"][0]["pid"]) == (5000, 5000)
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_reload_says_when_the_new_config_outgrows_the_limit(tmp: Path) -> None:
    """`up` says it at start; a reload that adds instances beyond the limit says it too,
    to whoever reloaded (and in the log), and still applies the config."""
    config = tmp / "herdsman.toml"
    config.write_text('[services.s]\ncommand = "sleep 600"\nreplicas = 2\n')
    up = run(tmp, *limited("256:256", "up", "-d"))
    try:
        assert up.returncode == 0, up.stderr
        assert "open files limit" not in up.stderr
        config.write_text('[services.s]\ncommand = "sleep 600"\nreplicas = 100\n')
        grown = herdsman(tmp, "reload")
        assert grown.returncode == 0, grown.stderr
        assert "added: s.2, s.3," in grown.stdout
        held = (256 - 64 - 128) // 3
        said = f"the open files limit (256) holds about {held} of the 100 instances"
        assert f"herdsman: warning: {said}" in grown.stderr
        assert said in (tmp / ".herdsman/logs/herdsman.log").read_text()
        config.write_text('[services.s]\ncommand = "sleep 600"\nreplicas = 2\n')
        shrunk = herdsman(tmp, "reload")
        assert shrunk.returncode == 0, shrunk.stderr
        assert "warning" not in shrunk.stderr
    finally:
        assert herdsman(tmp, "down").returncode == 0


def test_check_says_how_many_instances_the_limit_holds(tmp: Path) -> None:
    config = tmp / "herdsman.toml"
    config.write_text('[services.s]\ncommand = "sleep 600"\nreplicas = 400\n')
    # The hard limit counts: the daemon raises its soft limit to it.
    tight = run(tmp, *limited("256:1024", "check"))
    assert tight.returncode == 0, tight.stderr
    assert "400 instances" in tight.stdout
    held = (1024 - 64 - 128) // 3
    assert f"the open files limit (1024) holds about {held} of the 400 instances" in tight.stderr
    roomy = run(tmp, *limited("1024:4096", "check"))
    assert roomy.returncode == 0
    assert roomy.stderr == ""
    # A TCP listener may hold its own connections' worth.
    config.write_text(
        '[settings]\ntcp = "127.0.0.1:9999"\ntoken_file = "t"\nmax_connections = 100\n'
        '[services.s]\ncommand = "sleep 600"\nreplicas = 300\n'
    )
    (tmp / "t").write_text("secret\n")
    with_tcp = run(tmp, *limited("1024:1024", "check"))
    assert with_tcp.returncode == 0, with_tcp.stderr
    assert f"holds about {(1024 - 64 - 200) // 3} of the 300" in with_tcp.stderr


def test_the_unit_sets_a_generous_fd_limit(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.s]\ncommand = "sleep 600"\n')
    unit = herdsman(tmp, "systemd-unit")
    assert unit.returncode == 0, unit.stderr
    [line] = [x for x in unit.stdout.splitlines() if x.startswith("LimitNOFILE=")]
    assert int(line.removeprefix("LimitNOFILE=")) >= 65536


def test_a_spawn_out_of_fds_is_a_retried_start_in_the_foreground_too(tmp: Path) -> None:
    """`up` in the foreground says it on the terminal, and SIGINT still stops all."""
    (tmp / "herdsman.toml").write_text(
        '[services.s]\ncommand = "sleep 600"\nreplicas = 150\nstart_seconds = "0.1s"\n'
    )
    proc = subprocess.Popen(
        limited("256:256", "up"),
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: (tmp / ".herdsman/herdsman.sock").exists(), timeout=30)
        wait_for(
            lambda: any(i["message"].startswith(TOO_MANY) for i in instances(tmp).values()),
            timeout=30,
        )
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-2000:]
    assert "open files limit (256) holds about" in output
    assert "too many open files; retrying in" in output
    assert "Traceback" not in output


PIDS_V1 = Path("/sys/fs/cgroup/pids")


def pids_cgroup(name: str) -> Path | None:
    """A cgroup of our own under the v1 pids hierarchy, or None if there is none to make."""
    if not (PIDS_V1 / "cgroup.procs").exists() or not os.access(PIDS_V1, os.W_OK):
        return None
    group = PIDS_V1 / name
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def test_past_the_cgroups_pids_limit_starts_are_retried_and_up_says_why(tmp: Path) -> None:
    """As under a unit's TasksMax= or a container's pids limit: `up` says how many more
    processes the limit leaves room for; the instances past it are retried (not failed)
    with the reason; once the limit is raised they all run."""
    group = pids_cgroup(f"hs{os.getpid()}")
    if group is None:
        pytest.skip("needs a writable cgroup v1 pids hierarchy at /sys/fs/cgroup/pids")
    try:
        (group / "pids.max").write_text("25\n")
        (tmp / "herdsman.toml").write_text(
            '[services.s]\ncommand = "sleep 600"\nreplicas = 40\nstart_seconds = "0.1s"\n'
            'backoff = { initial = "0.2s", max = "1s" }\n'
        )
        inside = f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -m herdsman up -d"
        up = run(tmp, "sh", "-c", inside)
        assert up.returncode == 0, up.stderr
        assert f"the process limit (pids.max of cgroup {group}: 25) leaves room for" in up.stderr
        assert "fewer than the 40 instances: raise it (TasksMax=" in up.stderr
        daemon = status(tmp)["daemon"]["pid"]

        def split() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
            found = instances(tmp).values()
            running = [i for i in found if i["state"] == "running"]
            waiting = [i for i in found if i["message"].startswith(TOO_MANY_PROCS)]
            return (running, waiting) if running and waiting else None

        running, waiting = wait_for(split, timeout=30)  # type: ignore[misc]
        assert len(running) <= 25
        assert all(i["state"] in ("restarting", "starting") for i in waiting)
        assert any("; retrying in " in i["message"] for i in waiting)
        assert alive(daemon)
        inside = f"echo $$ > {group}/cgroup.procs && exec {sys.executable} -m herdsman check"
        check = run(tmp, "sh", "-c", inside)
        assert "the process limit (pids.max of cgroup" in check.stderr
        (group / "pids.max").write_text("max\n")
        wait_for(lambda: all(i["state"] == "running" for i in instances(tmp).values()), timeout=30)
        assert "Traceback" not in (tmp / ".herdsman/logs/herdsman.log").read_text()
    finally:
        down = herdsman(tmp, "down")
        wait_for(lambda: (group / "cgroup.procs").read_text() == "", timeout=30)
        group.rmdir()
    assert down.returncode == 0, down.stderr
