"""The daemon's cyclic garbage collector: off while `up` imports and builds, then on,
with what start-up built frozen out of its way (cmd_up, cli/up.py). Seen from inside
the daemon by a hook plugin, in the foreground and detached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for

PLUGIN = """\
import gc, json

def record(event, path):
    with open(path, "a") as f:
        f.write(json.dumps([gc.isenabled(), gc.get_freeze_count() > 0]) + "\\n")
"""


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detached"])
def test_the_collector_runs_once_the_services_start(tmp: Path, detach: bool) -> None:
    seen = tmp / "seen"
    (tmp / "gcstate.py").write_text(PLUGIN)
    (tmp / "herdsman.toml").write_text(
        '[settings]\nplugins = ["gcstate:record"]\nshutdown_timeout = "5s"\n\n'
        f'[[hooks]]\non = "running"\nplugin = "record"\noptions = {{ path = "{seen}" }}\n\n'
        '[services.web]\ncommand = ["sleep", "60"]\nstart_seconds = 0\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp), os.environ.get("PYTHONPATH")])),
    }
    herdsman = [sys.executable, "-m", "herdsman"]
    if detach:
        up = subprocess.run(
            [*herdsman, "up", "-d"], cwd=tmp, env=env, capture_output=True, text=True, timeout=60
        )
        assert up.returncode == 0, up.stderr
        pid = int((tmp / ".herdsman" / "herdsman.lock").read_text())
    else:
        daemon = subprocess.Popen(
            [*herdsman, "up"], cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        pid = daemon.pid
    try:
        wait_for(lambda: seen.exists() and seen.read_text().endswith("\n"))
        assert json.loads(seen.read_text().splitlines()[0]) == [True, True]
    finally:
        if detach:
            subprocess.run([*herdsman, "down"], cwd=tmp, env=env, capture_output=True, timeout=60)
        else:
            daemon.send_signal(signal.SIGTERM)
            daemon.communicate(timeout=30)
        wait_for(lambda: not alive(pid))
