"""`herdsman logs --since`: a duration back from now, or a UTC time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import wait_for


def herdsman(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_since_filters_by_time_with_and_without_a_daemon(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        '[services.talk]\ncommand = ["sh", "-c", "echo said it; exec sleep 600"]\n'
    )
    assert herdsman(tmp, "up", "-d").returncode == 0
    try:
        wait_for(lambda: "said it" in herdsman(tmp, "logs", "talk").stdout)
        assert "said it" in herdsman(tmp, "logs", "--since", "1h").stdout
        assert herdsman(tmp, "logs", "--since", "2099-01-01T00:00:00Z").stdout == ""
        bad = herdsman(tmp, "logs", "--since", "yesterday-ish")
        assert bad.returncode == 2
        assert "neither a duration (10m) nor a time" in bad.stderr
    finally:
        assert herdsman(tmp, "down").returncode == 0
    offline = herdsman(tmp, "logs", "--since", "10m")
    assert offline.returncode == 0
    assert "said it" in offline.stdout
    assert herdsman(tmp, "logs", "--since", "2099-01-01T00:00:00").stdout == ""


def test_a_replayed_stream_skips_by_count_what_was_shown_at_the_last_time() -> None:
    from herdsman.cli.commands import _After

    def entry(time: str, line: str) -> dict[str, str]:
        return {"time": time, "instance": "web", "stream": "out", "line": line}

    after = _After()
    shown = [entry("T1", "a"), entry("T2", "tick"), entry("T2", "tick")]
    assert [after.fresh(e) for e in shown] == [True, True, True]  # one batch, same text twice
    after.replay()
    again = [*shown, entry("T2", "tick"), entry("T3", "b")]
    assert [after.fresh(e) for e in again] == [False, False, False, True, True]
