"""herdsman under a real systemd: the unit `herdsman systemd-unit` prints, run by
systemd 252 booted as PID 1 of private namespaces (real-systemd.sh, next to this
file). Start, READY=1, StatusText following the instances, reload, a SIGKILL of the
daemon and a watchdog kill (every service keeps its pid, no output line is lost,
thanks to systemd's fd store), and stop (nothing left in the unit's cgroup).

One systemd per module (per xdist worker), each with its own directory; each test
installs its own unit and stops it. The namespace is killed at the end, with
whatever is still in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MARK, wait_for
from tests.e2e.helpers import numbers
from tests.e2e.test_reexec import WRITER

SCRIPT = Path(__file__).with_name("real-systemd.sh")
# The console script the unit runs, as `pip install` made it (not `python -m`).
HERDSMAN = Path(sys.executable).parent / "herdsman"


def why_not() -> str | None:
    """Why this machine cannot boot a systemd in namespaces, if it cannot."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "systemctl", "setsid", "pgrep"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs systemd and util-linux)"
    if not Path("/lib/systemd/systemd").exists():
        return "/lib/systemd/systemd is missing (.ci/run installs systemd)"
    cgroup2 = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
    if not any(_is_cgroup2(path) for path in cgroup2):
        return "no cgroup2 hierarchy on this host"
    if not HERDSMAN.exists():
        return f"{HERDSMAN} is missing: herdsman is not installed in this interpreter's prefix"
    return None


def _is_cgroup2(path: str) -> bool:
    return Path(path, "cgroup.controllers").exists()


class Systemd:
    """A running systemd in namespaces: commands inside it, units in its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "SYSD_DIR": str(root)}

    def inside(self, *argv: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(SCRIPT), "in", *argv], env=self.env, capture_output=True, text=True, timeout=90
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def show(self, unit: str, prop: str) -> str:
        return self.inside("systemctl", "show", "-P", prop, unit).strip()

    def console(self) -> str:
        return (self.root / "console.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def systemd() -> Iterator[Systemd]:
    reason = why_not()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="sd", dir="/tmp"))
    # What runs outside the namespace outlives single tests: it carries no test's mark.
    env = {k: v for k, v in os.environ.items() if k != MARK}
    env["SYSD_DIR"] = str(root)
    try:
        started = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120
        )
        launcher = root / "launcher.log"
        said = launcher.read_text() if launcher.exists() else ""
        if started.returncode != 0 and "Operation not permitted" in said:
            pytest.skip(f"this machine does not allow the namespaces: {said.strip()}")
        assert started.returncode == 0, started.stdout + started.stderr + said
        state = started.stdout.strip().rsplit("state: ", 1)[-1]
        assert state in ("running", "degraded"), started.stdout
        yield Systemd(root)
    finally:
        stopped = subprocess.run(
            [str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120
        )
        shutil.rmtree(root, ignore_errors=True)
    assert "procs=0 cgroups=0" in stopped.stdout, stopped.stdout + stopped.stderr


CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.web]
command = "sleep 600"
replicas = 2
start_seconds = "0.3s"

[services.writer]
command = ["python3", "-c", {writer}]
start_seconds = "0.3s"

[services.bad]
command = "false"
restart = "on-failure"
backoff = {{ initial = "10ms" }}
start_limit = {{ burst = 1 }}
"""


class Unit:
    """One herdsman project under systemd: its directory, unit and CLI."""

    def __init__(self, systemd: Systemd, name: str, dropin: str = "") -> None:
        self.systemd = systemd
        self.name = f"{name}.service"
        self.project = systemd.root / name
        self.project.mkdir()
        self.config = self.project / "herdsman.toml"
        self.config.write_text(CONFIG.format(writer=json.dumps(WRITER)))
        printed = subprocess.run(
            [str(HERDSMAN), "-c", str(self.config), "systemd-unit"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        self.text = printed.stdout
        units = systemd.root / "units"
        (units / self.name).write_text(self.text)
        # No journald in there: herdsman's own output goes to a file.
        (units / f"{self.name}.d").mkdir()
        (units / f"{self.name}.d" / "test.conf").write_text(
            f"[Service]\nStandardOutput=append:{self.project}/herdsman.out\n"
            f"StandardError=inherit\n{dropin}"
        )
        systemd.inside("systemctl", "daemon-reload")

    def systemctl(self, *argv: str) -> str:
        return self.systemd.inside("systemctl", *argv, self.name)

    def show(self, prop: str) -> str:
        return self.systemd.show(self.name, prop)

    def main_pid(self) -> int:
        return int(self.show("MainPID"))

    def herdsman(self, *argv: str) -> str:
        # The control socket is in the project directory, seen alike from outside.
        result = subprocess.run(
            [sys.executable, "-m", "herdsman", "-c", str(self.config), *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def instances(self) -> dict[str, dict[str, Any]]:
        return {i["name"]: i for i in json.loads(self.herdsman("status", "--json"))["services"]}

    def pids(self) -> dict[str, int]:
        return {name: doc["pid"] for name, doc in self.instances().items() if doc["pid"]}

    def lines(self) -> list[int]:
        log = self.project / ".herdsman/logs/writer.log"
        return numbers(log) if log.exists() else []

    def alive_inside(self, pids: list[int]) -> list[int]:
        """Which of `pids` (of the namespace) still exist in it."""
        script = (
            "for p in " + " ".join(map(str, pids)) + "; do kill -0 $p 2>/dev/null && echo $p; done"
        )
        return [int(p) for p in self.systemd.inside("sh", "-c", script, check=False).split()]

    def stop(self) -> None:
        """`systemctl stop`, and what must follow: no process of the unit is left."""
        cgroup = self.show("ControlGroup")
        pids = list(self.pids().values())
        self.systemctl("stop")
        assert self.show("ActiveState") in ("inactive", "failed")
        left = self.systemd.inside(
            "sh", "-c", f"cat /sys/fs/cgroup{cgroup}/cgroup.procs 2>/dev/null", check=False
        )
        assert left.split() == [], f"left in {cgroup}: {left}"
        assert self.alive_inside(pids) == []


@pytest.fixture
def unit(systemd: Systemd, request: pytest.FixtureRequest) -> Iterator[Unit]:
    made = Unit(systemd, f"hm-{request.node.name.removeprefix('test_')[:20]}")
    try:
        yield made
    finally:
        systemd.inside("systemctl", "stop", made.name, check=False)
        systemd.inside("systemctl", "reset-failed", made.name, check=False)


def start(unit: Unit) -> None:
    """`systemctl start` returns on READY=1: by then every instance has settled."""
    began = time.monotonic()
    unit.systemctl("start")
    assert unit.show("ActiveState") == "active", unit.systemd.console()[-3000:]
    assert time.monotonic() - began >= 0.3  # not before start_seconds
    assert unit.show("StatusText") == "3 running, 1 failed"
    states = {name: doc["state"] for name, doc in unit.instances().items()}
    assert states == {"web.0": "running", "web.1": "running", "writer": "running", "bad": "failed"}


def test_start_status_text_and_stop(unit: Unit) -> None:
    start(unit)
    assert unit.show("Type") == "notify"
    assert unit.show("KillMode") == "process"
    # StatusText follows the instances, not just READY=1.
    unit.herdsman("stop", "web.1")
    wait_for(lambda: unit.show("StatusText") == "2 running, 1 failed, 1 stopped", timeout=10)
    unit.herdsman("start", "web.1")
    wait_for(lambda: unit.show("StatusText") == "3 running, 1 failed", timeout=10)
    unit.stop()


def test_reload(unit: Unit) -> None:
    start(unit)
    before = unit.pids()
    unit.config.write_text(unit.config.read_text() + '\n[services.extra]\ncommand = "sleep 600"\n')
    # ExecReload is `herdsman reload`: systemctl returns once the reload is done.
    unit.systemctl("reload")
    assert unit.show("ActiveState") == "active"
    after = unit.pids()
    assert {name: after[name] for name in before} == before
    assert "extra" in after
    wait_for(lambda: unit.show("StatusText") == "4 running, 1 failed", timeout=10)
    # A config that does not validate: the reload fails, and says why; nothing moves.
    good = unit.config.read_text()
    unit.config.write_text(good + '\n[services.broken]\nreplicas = "two"\n')
    refused = subprocess.run(
        [str(SCRIPT), "in", "systemctl", "reload", unit.name],
        env=unit.systemd.env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert refused.returncode != 0
    assert unit.show("ActiveState") == "active"
    assert unit.pids() == after
    assert "replicas" in (unit.project / "herdsman.out").read_text()
    unit.stop()


def crash_and_recover(unit: Unit, crash: str) -> None:
    """The daemon dies (`crash`), systemd starts it again, and it adopts the services:
    same pids, and the writer's lines go on without a gap or a repeat."""
    start(unit)
    wait_for(lambda: len(unit.lines()) > 1000, timeout=15)
    before = unit.pids()
    daemon = unit.main_pid()
    restarts = int(unit.show("NRestarts"))
    if crash == "kill":
        unit.systemctl("kill", "--signal=SIGKILL", "--kill-who=main")
    else:
        # Hung: no WATCHDOG=1 for WatchdogSec, so systemd aborts and restarts it.
        unit.systemd.inside("kill", "-STOP", str(daemon))

    def restarted() -> bool:
        return (
            int(unit.show("NRestarts")) == restarts + 1
            and unit.show("ActiveState") == "active"
            and unit.main_pid() not in (0, daemon)
        )

    wait_for(restarted, timeout=40, interval=0.2)
    assert unit.pids() == before
    count = len(unit.lines())
    wait_for(lambda: len(unit.lines()) > count + 2000, timeout=15)
    got = unit.lines()
    missing = sorted(set(range(got[-1] + 1)) - set(got))
    assert got == list(range(len(got))), (
        f"{len(missing)} lines lost (first {missing[:5]}), {len(got) - len(set(got))} twice"
    )
    unit.stop()


def test_sigkill_of_the_daemon_loses_no_line(unit: Unit) -> None:
    crash_and_recover(unit, "kill")


@pytest.fixture
def watched(systemd: Systemd, request: pytest.FixtureRequest) -> Iterator[Unit]:
    made = Unit(systemd, "hm-watchdog", dropin="WatchdogSec=2\n")
    try:
        yield made
    finally:
        # SIGCONT first: a stopped daemon would not act on `systemctl stop`.
        pid = systemd.show(made.name, "MainPID")
        if pid not in ("", "0"):
            systemd.inside("kill", "-CONT", pid, check=False)
        systemd.inside("systemctl", "stop", made.name, check=False)
        systemd.inside("systemctl", "reset-failed", made.name, check=False)


def test_watchdog_kill_of_a_hung_daemon_loses_no_line(watched: Unit) -> None:
    crash_and_recover(watched, "watchdog")
    assert f"{watched.name}: Watchdog timeout" in watched.systemd.console()


def test_the_daemon_and_its_services_get_the_units_fd_limit(unit: Unit) -> None:
    limit = next(
        line.split("=", 1)[1] for line in unit.text.splitlines() if line.startswith("LimitNOFILE=")
    )
    start(unit)

    def open_files(pid: int) -> tuple[str, str]:
        limits = unit.systemd.inside("cat", f"/proc/{pid}/limits")
        row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        soft, hard = row.split()[3:5]
        return soft, hard

    # Soft and hard alike (systemd's default soft limit of 1024 would hold about 340
    # instances), as high as systemd can give: without CAP_SYS_RESOURCE (a container)
    # no more than its own hard limit.
    most = min(int(limit), int(open_files(1)[1]))
    assert open_files(unit.main_pid()) == (str(most), str(most))
    assert open_files(unit.pids()["web.0"]) == (str(most), str(most))
    assert most > 1024
    unit.stop()
