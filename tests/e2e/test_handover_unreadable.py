"""A new image that cannot read what the old one handed over (a corrupt pickle, a
version it does not know, a key missing) says why in one sentence and adopts the services in
place, as after a crash: the same daemon and service pids, their output still
captured, their exits still reaped with their status, the re-exec counted."""

from __future__ import annotations

import os
import pickle
import signal
import textwrap
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import TICKER, herdsman, inject, instances, status

# Overwrites the hand-over in its memfd just before the exec (in the daemon only,
# once: while the file named by the variable exists, holding what to write).
SPOIL = textwrap.dedent(
    """
    import os
    path = os.environ.get("HERDSMAN_TEST_SPOIL")
    if path:
        execv = os.execv

        def spoiling(program, argv):
            if "herdsman.cli.resume" in argv and os.path.exists(path):
                with open(path, "rb") as f:
                    payload = f.read()
                os.unlink(path)
                fd = int(argv[argv.index("herdsman.cli.resume") + 1])
                os.ftruncate(fd, 0)
                os.pwrite(fd, payload, 0)
            execv(program, argv)

        os.execv = spoiling
    """
)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x80\x05not a pickle at all", "the hand-over cannot be unpickled"),
        (pickle.dumps({"version": 99}), "the hand-over is of version 99"),
        (pickle.dumps({"version": 2}), "the hand-over has no 'records'"),
    ],
    ids=["corrupt", "unknown-version", "missing-key"],
)
def test_an_unreadable_handover_adopts_the_services_in_place(
    tmp: Path, payload: bytes, why: str
) -> None:
    (tmp / "herdsman.toml").write_text(TICKER)
    env = inject(tmp, SPOIL, HERDSMAN_TEST_SPOIL=str(tmp / "spoil"))
    assert herdsman(tmp, "up", "-d", "--wait", env=env).returncode == 0
    try:
        before = status(tmp)
        pids = {i["name"]: i["pid"] for i in before["services"]}
        (tmp / "spoil").write_bytes(payload)
        done = herdsman(tmp, "reexec")
        assert done.returncode == 0, done.stderr
        assert not (tmp / "spoil").exists()  # the new image did get the spoilt hand-over

        after = status(tmp)
        assert after["daemon"]["pid"] == before["daemon"]["pid"]
        assert after["daemon"]["started_at"] == before["daemon"]["started_at"]
        assert after["daemon"]["reexecs"] == 1
        assert {i["name"]: (i["pid"], i["state"]) for i in after["services"]} == {
            name: (pid, "running") for name, pid in pids.items()
        }
        said = [
            line
            for line in (tmp / ".herdsman/logs/herdsman.log").read_text().splitlines()
            if "cannot take over from the previous image" in line
        ]
        assert len(said) == 1, said
        assert why in said[0]
        assert "adopting the services it ran as after a crash" in said[0]

        ticker = tmp / ".herdsman/logs/ticker.log"
        size = ticker.stat().st_size
        wait_for(lambda: ticker.stat().st_size > size + 50)  # still captured

        # Still the daemon's child: its exit is reaped with its status, and it restarts.
        os.kill(pids["sleeper"], signal.SIGKILL)
        wait_for(lambda: instances(tmp)["sleeper"]["pid"] not in (None, pids["sleeper"]))
        assert instances(tmp)["sleeper"]["exit_signal"] == "SIGKILL"
    finally:
        assert herdsman(tmp, "down").returncode == 0
