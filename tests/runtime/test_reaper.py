"""The reaper tells each exit as soon as it is collected.

`waitpid(-1)` looks at every child of the daemon, thousands of them: the look that
finds no more exits must not stand between an exit and its respawn.

Each scenario runs in a fresh Python process: `waitpid(-1)` would also collect
whatever children earlier tests left to this one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from herdsman.runtime.reaper import Reaper

ROOT = Path(__file__).resolve().parents[2]


def _in_a_fresh_process(scenario: str) -> object:
    code = f"import json; from tests.runtime.test_reaper import {scenario}; print(json.dumps({scenario}()))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _zombies(count: int, code: int) -> list[int]:
    """`count` children that exited with `code`, not collected yet, in spawn order."""
    pids = [os.posix_spawn("/bin/sh", ["sh", "-c", f"exit {code}"], {}) for _ in range(count)]
    for pid in pids:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    return pids


def _waitable(pid: int) -> bool:
    """Whether `pid` is a zombie not collected yet (without collecting it)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return False


def told_in_turn() -> list[bool]:
    """Per exit told, whether the other was still uncollected then."""
    loop = asyncio.new_event_loop()
    reaper = Reaper(loop)
    first, second = _zombies(2, 3)
    seen: list[bool] = []

    def exited(other: int, _pid: int, code: int | None, sig: int | None) -> None:
        assert (code, sig) == (3, None)
        seen.append(_waitable(other))

    reaper.watch(first, exited, second)
    reaper.watch(second, exited, first)
    try:
        reaper.reap()
    finally:
        reaper.close()
        loop.close()
    return seen


def told_before_collected() -> list[bool]:
    """Whether the process was still a zombie when its exit was told, and after."""
    loop = asyncio.new_event_loop()
    reaper = Reaper(loop)
    (pid,) = _zombies(1, 0)
    seen: list[bool] = []

    def exited(_owner: None, pid: int, _code: int | None, _sig: int | None) -> None:
        seen.append(_waitable(pid))

    reaper.watch(pid, exited, None)
    try:
        reaper.reap()
    finally:
        reaper.close()
        loop.close()
    return [*seen, _waitable(pid)]


def told_likely_first() -> list[str]:
    """Two exits, the second hinted at as likely: told in which order."""
    loop = asyncio.new_event_loop()
    reaper = Reaper(loop)
    first, second = _zombies(2, 0)
    told: list[str] = []

    def exited(name: str, _pid: int, _code: int | None, _sig: int | None) -> None:
        told.append(name)

    reaper.watch(first, exited, "first")
    reaper.watch(second, exited, "second")
    reaper.likely_exited = lambda: [second, second, os.getpid()]  # twice; not a child
    try:
        reaper.reap()
    finally:
        reaper.close()
        loop.close()
    return told


def spawned_by_an_exit_told_before() -> dict[str, int]:
    """An exit told first starts a spawn whose process ends at once and is collected
    in the same batch, before the spawn's outcome was taken in."""
    loop = asyncio.new_event_loop()
    reaper = Reaper(loop)
    first, second = _zombies(2, 0)
    in_flight: list[int] = []  # spawns started, their outcomes not taken in
    told: list[int] = []

    def exited(_owner: None, pid: int, _code: int | None, _sig: int | None) -> None:
        told.append(pid)
        if pid == first:
            in_flight.append(second)  # "respawned": its process is `second`

    def take_in_landed() -> bool:
        while in_flight:
            reaper.watch(in_flight.pop(), exited, None)
        return False  # none left in flight

    reaper.before_reap = take_in_landed
    reaper.watch(first, exited, None)
    try:
        reaper.reap()  # collects `first` (spawned first), then `second`
    finally:
        reaper.close()
        loop.close()
    return {"told": len(told), "orphans": reaper.orphans_reaped}


def test_an_exit_is_told_before_the_next_status_is_collected() -> None:
    # The first told while the second's status still waited to be collected.
    assert _in_a_fresh_process("told_in_turn") == [True, False]


def test_the_exit_of_a_spawn_started_by_an_exit_told_before_is_no_orphans() -> None:
    assert _in_a_fresh_process("spawned_by_an_exit_told_before") == {"told": 2, "orphans": 0}


def test_a_process_is_released_only_after_its_exit_is_told() -> None:
    """Releasing a zombie costs the kernel about 0.02 ms: a respawn must not wait for
    it (nor can the pid, and its process group, be another's while the exit is told)."""
    assert _in_a_fresh_process("told_before_collected") == [True, False]


def test_an_exit_hinted_at_is_found_by_its_pid_first() -> None:
    """The supervisor hints at the processes whose pipes hung up (see
    Supervisor._hung_up): each is looked at alone, before every child is, in whatever
    order the children were spawned; a hint that is no child of ours is passed over."""
    assert _in_a_fresh_process("told_likely_first") == ["second", "first"]
