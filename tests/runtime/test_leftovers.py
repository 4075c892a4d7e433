"""Finding a state_dir's processes by their environment (real processes, marked as
herdsman marks them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from herdsman.core.states import State
from herdsman.runtime import leftovers
from herdsman.runtime.leftovers import Marked, find, main_candidates, scan, take_census
from tests.conftest import wait_for


def test_a_setsid_child_of_a_main_process_is_not_a_main_candidate() -> None:
    main = Marked(pid=10, instance="web", start_time=100, ppid=1, session=10, uid=0)
    escaped = Marked(pid=11, instance="web", start_time=101, ppid=10, session=11, uid=0)
    in_group = Marked(pid=12, instance="web", start_time=102, ppid=10, session=10, uid=0)
    copy = Marked(pid=9, instance="web", start_time=150, ppid=1, session=9, uid=0)
    other = Marked(pid=20, instance="db", start_time=50, ppid=1, session=20, uid=0)
    found = main_candidates([escaped, copy, main, in_group, other])
    assert found == {"web": [main, copy], "db": [other]}  # oldest first


def test_find_keeps_the_oldest_and_names_the_rest(tmp: Path) -> None:
    state_dir = tmp / "state"
    state_dir.mkdir()
    # The same directory by another path counts too (a symlink to it).
    link = tmp / "link"
    link.symlink_to(state_dir)

    def start(instance: str, where: Path, *argv: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HERDSMAN_STATE_DIR": str(where), "HERDSMAN_INSTANCE": instance}
        return subprocess.Popen(list(argv), env=env, start_new_session=True)

    first = start("web", state_dir, "sleep", "600")
    wait_for(lambda: scan(state_dir, [first.pid]))
    second = start("web", link, "sh", "-c", "setsid sleep 601 & wait")
    elsewhere = start("web", tmp, "sleep", "602")  # another state_dir's
    try:
        # first, second and its setsid child, settled: the child has its own session
        # and runs sleep (between fork and exec its environment can read as empty).
        wait_for(lambda: settled(scan(state_dir)))
        found = find(None, state_dir)
        assert list(found.mains) == ["web"]
        pid, record = found.mains["web"]
        assert pid == first.pid
        assert record.found_by_environment
        assert record.state is State.RUNNING
        assert found.extras == [("web", second.pid, "is a second process of it")]
        # What the second one started goes with it; nothing of the other state_dir.
        assert {p for _, p in found.strays} == {m.pid for m in scan(state_dir)} - {
            first.pid,
            second.pid,
        }
        assert elsewhere.pid not in set(found.every_pid())
        refused = find(None, state_dir, lambda _instance, _uid: False)
        assert not refused.mains  # anyone can set the marker: its user must fit too
    finally:
        for child in (first, second, elsewhere):
            child.kill()
            child.wait()
        # The setsid child may still be between fork and exec when sh is killed:
        # look again until none is left.
        wait_for(lambda: not kill_all(scan(state_dir)))


def test_a_marker_beyond_the_first_read_of_an_environment_is_found(tmp: Path) -> None:
    # /proc/PID/environ is read 64 KiB at a time: the marker comes after 200 KB of
    # other variables.
    env = {"BIG": "x" * 100_000, "BIGGER": "y" * 100_000}
    env["HERDSMAN_STATE_DIR"], env["HERDSMAN_INSTANCE"] = str(tmp), "web"
    child = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    try:
        wait_for(lambda: scan(tmp, [child.pid]))
        (found,) = scan(tmp)
        assert (found.pid, found.instance) == (child.pid, "web")
    finally:
        child.kill()
        child.wait()


def test_a_scan_after_a_census_finds_what_started_since_and_not_what_ended(tmp: Path) -> None:
    # `up` takes the census while its plan is on its way, before it knows its
    # state_dir; the scan comes after the lock.
    def start(where: Path = tmp) -> subprocess.Popen[bytes]:
        env = {**os.environ, "HERDSMAN_STATE_DIR": str(where), "HERDSMAN_INSTANCE": "web"}
        child = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
        wait_for(lambda: scan(where, [child.pid]))
        return child

    (tmp / "other").mkdir()
    before, ended, elsewhere = start(), start(), start(tmp / "other")
    try:
        census = take_census()
        assert {before.pid, ended.pid, elsewhere.pid} <= set(census.marked)
        ended.kill()
        ended.wait()
        since = start()
        try:
            found = {m.pid for m in scan(tmp, census=census)}
            assert found == {before.pid, since.pid} == {m.pid for m in scan(tmp)}
        finally:
            since.kill()
            since.wait()
    finally:
        for child in (before, elsewhere):
            child.kill()
            child.wait()


def test_after_a_census_only_new_processes_and_this_state_dirs_are_read(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "HERDSMAN_STATE_DIR": str(tmp), "HERDSMAN_INSTANCE": "web"}
    ours = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
    try:
        wait_for(lambda: scan(tmp, [ours.pid]))
        census = take_census()
        read: list[int] = []
        real = leftovers._read_environ

        def counted(pid: int) -> bytes | None:
            read.append(pid)
            return real(pid)

        monkeypatch.setattr(leftovers, "_read_environ", counted)
        assert [m.pid for m in scan(tmp, census=census)] == [ours.pid]
        # Every other process the census listed is taken as it saw it.
        assert set(read) & census.listed == {ours.pid}
    finally:
        ours.kill()
        ours.wait()


def settled(marked: list[Marked]) -> bool:
    if len(marked) != 3 or any(m.session != m.pid for m in marked):
        return False
    try:
        return any(
            Path(f"/proc/{m.pid}/cmdline").read_bytes() == b"sleep\x00601\x00" for m in marked
        )
    except OSError:
        return False


def kill_all(marked: list[Marked]) -> list[Marked]:
    for m in marked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(m.pid, 9)
    return marked
