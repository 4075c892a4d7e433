"""herdsman.log is bounded: rotated at `settings.daemon_log.max_bytes`, keeping
`backups` files, like the services' logs; a detached daemon's stderr follows."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import wait_for
from tests.e2e.helpers import herdsman

CONFIG = """
[settings]
daemon_log = { max_bytes = "4KiB", backups = 2 }

# Many instances: each one's state changes are logged 20 per 10 s at most.
[services.crashy]
replicas = 20
command = ["sh", "-c", "exit 3"]
start_seconds = "0.1s"
backoff = { initial = "10ms", max = "10ms" }
start_limit = { burst = 100000, interval = "1s" }
"""


def test_herdsman_log_rotates_and_keeps_its_backups(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(CONFIG)
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr
    logs = tmp / ".herdsman/logs"
    try:
        # Crash-looping writes a few lines per restart: many times 4 KiB soon.
        wait_for(lambda: (logs / "herdsman.log.2").exists(), timeout=20)
        wait_for(lambda: (logs / "herdsman.log.2").stat().st_size > 0)
    finally:
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr
    names = sorted(p.name for p in logs.iterdir() if p.name.startswith("herdsman.log"))
    assert names == ["herdsman.log", "herdsman.log.1", "herdsman.log.2"]
    for name in names:
        # Whole lines, never much over the limit (one record may cross it).
        data = (logs / name).read_bytes()
        assert len(data) <= 4096 + 512, name
        assert data.endswith(b"\n") or not data, name
    assert "herdsman stopped" in (logs / "herdsman.log").read_text()
