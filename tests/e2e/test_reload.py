"""`herdsman reload` and SIGHUP against a real daemon: only what changed restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import alive, wait_for

BEFORE = """
[services.db]
command = "sleep 600"
start_seconds = "0.1s"
[services.web]
command = ["sleep", "601"]
depends_on = ["db"]
start_seconds = "0.1s"
[services.old]
command = "sleep 602"
start_seconds = "0.1s"
"""

AFTER = """
[services.db]
command = "sleep 600"
start_seconds = "0.1s"
backoff = { initial = "1s" }      # applies in place: db keeps its pid
[services.web]
command = ["sleep", "603"]        # changed: web restarts
depends_on = ["db"]
start_seconds = "0.1s"
[services.new]
command = "sleep 604"
start_seconds = "0.1s"
"""


def herdsman(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pids(cwd: Path) -> dict[str, int | None]:
    status = json.loads(herdsman(cwd, "status", "--json").stdout)
    return {i["name"]: i["pid"] for i in status["services"] if i["state"] == "running"}


def test_reload_restarts_only_what_changed_and_refuses_an_invalid_config(tmp: Path) -> None:
    config = tmp / "herdsman.toml"
    config.write_text(textwrap.dedent(BEFORE))
    assert herdsman(tmp, "up", "-d", "--wait").returncode == 0
    daemon = int((tmp / ".herdsman" / "herdsman.lock").read_text())
    try:
        before = pids(tmp)
        assert set(before) == {"db", "web", "old"}

        config.write_text('[services.db]\ncommand = "sleep 600"\nrestart = "sometimes"\n')
        refused = herdsman(tmp, "reload")
        assert refused.returncode == 1
        assert "services.db.restart" in refused.stderr
        assert "nothing was changed" in refused.stderr
        assert pids(tmp) == before

        config.write_text(textwrap.dedent(AFTER))
        done = herdsman(tmp, "reload")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "added: new",
            "removed: old",
            "changed: web",
            "unchanged: db",
        ]
        wait_for(lambda: set(pids(tmp)) == {"db", "web", "new"}, timeout=10)
        after = pids(tmp)
        assert after["db"] == before["db"]
        assert after["web"] != before["web"]
        assert not alive(before["old"])
        assert not alive(before["web"])

        config.write_text(textwrap.dedent(AFTER).replace("sleep 604", "sleep 605"))
        os.kill(daemon, signal.SIGHUP)
        wait_for(lambda: pids(tmp).get("new") not in (None, after["new"]), timeout=10)
        assert pids(tmp)["db"] == before["db"]
    finally:
        assert herdsman(tmp, "down").returncode == 0
