"""The README's Quick start, run as written: its config is examples/quickstart's file,
and `herdsman up -d --wait` brings every instance up and ready."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path

from tests.conftest import alive
from tests.e2e.helpers import herdsman, instances

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart" / "herdsman.toml"


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found, "the Quick start has no TOML block"
    return found.group(1)


def test_the_readme_shows_the_example_file() -> None:
    assert quick_start() == EXAMPLE.read_text()


def test_the_quick_start_runs(tmp: Path) -> None:
    shutil.copy(EXAMPLE, tmp / "herdsman.toml")
    up = herdsman(tmp, "up", "-d", "--wait")
    pid = None
    try:
        status = herdsman(tmp, "status", "--json")
        if status.returncode == 0:
            pid = int(json.loads(status.stdout)["daemon"]["pid"])
        assert up.returncode == 0, up.stderr
        assert up.stdout == f"herdsman: daemon started (pid {pid}) for {tmp / 'herdsman.toml'}\n"
        found = instances(tmp)
        assert list(found) == ["migrate", "web.0", "web.1"]
        assert (found["migrate"]["state"], found["migrate"]["exit_code"]) == ("exited", 0)
        for name in ("web.0", "web.1"):
            assert (found[name]["state"], found[name]["ready"]) == ("running", True), found[name]
        table = herdsman(tmp, "status").stdout.splitlines()
        assert table[0].split() == [
            "INSTANCE",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "READY",
            "CPU",
            "MEM",
            "MESSAGE",
        ]
        assert table[1].split()[:2] == ["migrate", "exited"]
    finally:
        down = herdsman(tmp, "down")
        if pid is not None and alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert (down.returncode, down.stdout) == (0, "herdsman: stopped\n")
