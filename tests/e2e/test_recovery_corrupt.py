"""Recovery that fails safe: whatever became of state.json and state.journal while the
daemon was dead (truncated, random bytes, empty, wrong types, a directory, a
non-UTF-8 or torn journal, gone), the next `up -d` says so (on its output and in
herdsman.log), moves the file aside, and adopts exactly one process per instance,
found by its environment; `down` without a daemon stops them all the same way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import herdsman, instances, status
from tests.e2e.test_recovery import live_processes_of

CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.quiet]
command = "sleep 600"
start_seconds = "0.1s"
replicas = 2

[services.talker]
# Writes on while no daemon reads (its writes fail with EPIPE meanwhile).
command = ["sh", "-c", "trap '' PIPE; while :; do sleep 0.2; echo tick; done"]
start_seconds = "0.1s"
"""
NAMES = ("quiet.0", "quiet.1", "talker")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _wrong_types(path: Path) -> None:
    document = json.loads(path.read_text())
    for record in document["instances"].values():
        record["pid"] = str(record["pid"])  # a pid as text
    path.write_text(json.dumps(document))


def _a_list(path: Path) -> None:
    path.write_text("[1, 2, 3]")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("in the way")


def _journal_not_utf8(path: Path) -> None:
    path.with_suffix(".journal").write_bytes(b"\xff\xfe 12 34 \x80\x81\n")


def _journal_torn(path: Path) -> None:
    with open(path.with_suffix(".journal"), "ab") as journal:
        journal.write(b"1234 5")  # cut off by the crash


def _gone(path: Path) -> None:
    path.unlink()


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "truncated": (_truncate, "state.json is corrupt"),
    "random bytes": (_random, "state.json is corrupt"),
    "empty": (_empty, "state.json is corrupt"),
    "wrong types": (_wrong_types, "state.json is corrupt"),
    "a list": (_a_list, "state.json is corrupt"),
    "a directory": (_directory, "state.json cannot be read"),
    "journal not UTF-8": (_journal_not_utf8, "state.journal is corrupt"),
    "journal torn": (_journal_torn, "state.journal is corrupt"),
    "gone": (_gone, None),  # nothing to report: found by the environment all the same
}


def _crash(tmp: Path) -> dict[str, int]:
    """Start the config, SIGKILL the daemon; the pids of its instances."""
    (tmp / "herdsman.toml").write_text(CONFIG)
    started = herdsman(tmp, "up", "-d", "--wait")
    assert started.returncode == 0, started.stderr
    document = status(tmp)
    pids = {i["name"]: i["pid"] for i in document["services"]}
    state = tmp / ".herdsman/state.json"
    wait_for(lambda: json.loads(state.read_text())["instances"]["talker"]["pid"] == pids["talker"])
    os.kill(document["daemon"]["pid"], signal.SIGKILL)
    wait_for(lambda: not alive(document["daemon"]["pid"]))
    return pids


@pytest.mark.parametrize("variant", list(CORRUPTIONS))
def test_up_after_a_corrupt_state_adopts_one_process_per_instance(tmp: Path, variant: str) -> None:
    pids = _crash(tmp)
    corrupt, sentence = CORRUPTIONS[variant]
    state = tmp / ".herdsman/state.json"
    corrupt(state)
    try:
        again = herdsman(tmp, "up", "-d", "--wait")
        assert again.returncode == 0, again.stderr
        now = instances(tmp)
        for name in NAMES:
            # Exactly one process each, and it is the one that ran before: adopted.
            assert live_processes_of(name) == [pids[name]], name
            assert now[name]["pid"] == pids[name], name
            assert now[name]["state"] == "running", name
        daemon_log = (tmp / ".herdsman/logs/herdsman.log").read_text()
        assert "adopted 3 running instance(s) of a previous daemon" in daemon_log
        if sentence is not None:
            assert sentence in again.stderr
            assert sentence in daemon_log
            assert "finding this config's processes by their environment" in again.stderr
            moved = [p.name for p in state.parent.iterdir() if ".corrupt-" in p.name]
            assert len(moved) == 1, moved
        # The adopted talker's output is captured again, through its reopened pipe.
        talker_log = tmp / ".herdsman/logs/talker.log"
        size = talker_log.stat().st_size
        wait_for(lambda: talker_log.stat().st_size > size)
    finally:
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not alive(pid)


def test_a_second_copy_of_an_instance_is_stopped_and_the_oldest_kept(tmp: Path) -> None:
    pids = _crash(tmp)
    state_dir = tmp / ".herdsman"
    # What the old bug made: a second daemon's copy of quiet.0, with state.json lost.
    env = {**os.environ, "HERDSMAN_STATE_DIR": str(state_dir), "HERDSMAN_INSTANCE": "quiet.0"}
    copy = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    (state_dir / "state.json").write_text("{")
    try:
        again = herdsman(tmp, "up", "-d", "--wait")
        assert again.returncode == 0, again.stderr
        assert instances(tmp)["quiet.0"]["pid"] == pids["quiet.0"]
        assert copy.wait(timeout=10) == -signal.SIGTERM
        assert live_processes_of("quiet.0") == [pids["quiet.0"]]
        daemon_log = (state_dir / "logs/herdsman.log").read_text()
        assert f"quiet.0: pid {copy.pid} of a previous daemon is a second process of it" in (
            daemon_log
        )
    finally:
        copy.kill()
        copy.wait()
        assert herdsman(tmp, "down").returncode == 0


@pytest.mark.parametrize("variant", ["random bytes", "a directory", "journal not UTF-8"])
def test_down_without_a_daemon_stops_everything_despite_a_corrupt_state(
    tmp: Path, variant: str
) -> None:
    pids = _crash(tmp)
    corrupt, sentence = CORRUPTIONS[variant]
    corrupt(tmp / ".herdsman/state.json")
    down = herdsman(tmp, "down")
    assert down.returncode == 0, down.stderr
    assert "stopped what a daemon that died had left running: quiet.0, quiet.1, talker" in (
        down.stdout
    )
    assert sentence is not None
    assert sentence in down.stderr
    for pid in pids.values():
        assert not alive(pid)
    for name in NAMES:
        assert live_processes_of(name) == []


def test_down_with_a_read_only_state_dir_still_stops_what_was_left(tmp: Path) -> None:
    """After a crash the file system of state_dir went read-only: `down` cannot take
    the lock for writing nor remove state.json, and still stops the services."""
    state_dir = tmp / ".herdsman"
    state_dir.mkdir(mode=0o700)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(state_dir)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        pids = _crash(tmp)
        subprocess.run(["mount", "-o", "remount,ro", str(state_dir)], check=True)
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr
        assert "stopped what a daemon that died had left running: quiet.0, quiet.1, talker" in (
            down.stdout
        )
        assert "Read-only file system" in down.stderr  # why state.json is still there
        for pid in pids.values():
            assert not alive(pid)
    finally:
        subprocess.run(["umount", "-l", str(state_dir)], check=False)
