"""What a daemon hands to its next image or leaves for the next daemon: instance
records, process start times, zombie statuses, state.json, and a pump's pipe."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.core.lifecycle import (
    BackoffElapsed,
    Instance,
    Policy,
    StartSecondsPassed,
    StopTimeout,
)
from herdsman.core.states import State
from herdsman.runtime import statefile
from herdsman.runtime.procfs import (
    TICK_NS,
    boot_clock,
    process_start_time,
    start_time_between,
    zombie_status,
)
from herdsman.runtime.pump import LogPump
from herdsman.runtime.reaper import decode_status
from herdsman.runtime.records import InstanceRecord, timer_event, timer_record
from herdsman.runtime.statefile import StateFile, StateWriter
from tests.conftest import wait_for
from tests.runtime.harness import until

small = st.integers(min_value=0, max_value=10**6)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False)


@given(
    state=st.sampled_from(State),
    pid=st.none() | small,
    ready=st.booleans(),
    restarts=small,
    attempt=small,
    restart_times=st.lists(times, max_size=5),
    spawned_at=st.none() | times,
    exit_code=st.none() | st.integers(0, 255),
    exit_signal=st.none() | st.integers(1, 64),
    message=st.text(max_size=40),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)
def test_a_record_through_json_restores_the_same_instance(
    state: State,
    pid: int | None,
    ready: bool,
    restarts: int,
    attempt: int,
    restart_times: list[float],
    spawned_at: float | None,
    exit_code: int | None,
    exit_signal: int | None,
    message: str,
    flags: tuple[bool, bool, bool, bool],
) -> None:
    original = Instance("web.0", Policy(), state, pid, ready, restarts, attempt, restart_times)
    original.spawned_at, original.exit_code, original.exit_signal = (
        spawned_at,
        exit_code,
        exit_signal,
    )
    original.message = message
    (
        original.start_passed,
        original.restart_after_stop,
        original.automatic_restart,
        original.killed,
    ) = flags
    data = json.loads(json.dumps(InstanceRecord.of(original).to_data()))
    restored = Instance("web.0", Policy())
    InstanceRecord.from_data(data, "web.0", complete=True).restore(restored)
    assert restored == original


@given(
    state=st.sampled_from(State),
    pid=st.none() | small,
    numbers=st.tuples(
        small, small, st.none() | st.integers(0, 255), st.none() | st.integers(1, 64)
    ),
    restart_times=st.lists(st.floats(), max_size=3),
    spawned_at=st.none() | st.floats(),
    texts=st.tuples(st.text(max_size=20), st.text(max_size=20)),
    flags=st.lists(st.booleans(), min_size=9, max_size=9),
    start_time=st.none() | small,
    pipes=st.lists(st.tuples(st.sampled_from(["out", "err", 'é"\n']), small), max_size=2),
    stop_signal=st.none() | st.integers(1, 64),
    timer=st.none()
    | st.tuples(st.floats(), st.sampled_from(["backoff", "start"]), st.none() | small),
)
def test_a_record_as_json_is_what_json_makes_of_its_data(
    state: State,
    pid: int | None,
    numbers: tuple[int, int, int | None, int | None],
    restart_times: list[float],
    spawned_at: float | None,
    texts: tuple[str, str],
    flags: list[bool],
    start_time: int | None,
    pipes: list[tuple[str, int]],
    stop_signal: int | None,
    timer: tuple[float, str, int | None] | None,
) -> None:
    """state.json writes records with to_json; readers (and other releases) read
    what json.dumps makes of to_data."""
    record = InstanceRecord(state, pid, flags[0], *numbers[:2], restart_times, spawned_at)
    record.exit_code, record.exit_signal = numbers[2:]
    record.exit_said, record.message = texts
    (
        record.start_passed,
        record.restart_after_stop,
        record.automatic_restart,
        record.limited_restart,
        record.killed,
        record.foreign,
        record.journalled,
        record.found_by_environment,
    ) = flags[1:]
    record.start_time, record.pipes, record.stop_signal, record.timer = (
        start_time,
        pipes,
        stop_signal,
        timer,
    )
    assert record.to_json() == json.dumps(record.to_data())


def test_a_record_from_another_version_keeps_defaults_for_what_it_lacks() -> None:
    restored = Instance("web.0", Policy())
    record = {"state": "no-such-state", "pid": 12, "future_field": 1}
    InstanceRecord.from_data(record, "web.0", complete=False).restore(restored)
    assert (restored.state, restored.pid, restored.restarts) == (State.STOPPED, 12, 0)


def test_timers_round_trip() -> None:
    for at, event in (
        (5.0, StartSecondsPassed(7)),
        (6.5, BackoffElapsed()),
        (7.25, StopTimeout(9)),
    ):
        record = timer_record(at, event)
        assert record is not None
        assert timer_event(tuple(json.loads(json.dumps(record)))) == (at, event)
    assert timer_event((1.0, "from-a-newer-version", None)) is None


def test_process_start_time_survives_odd_command_names() -> None:
    # A command name with spaces and parentheses must not shift the fields.
    code = (
        "import ctypes, sys, time; libc = ctypes.CDLL(None); "
        "libc.prctl(15, b'a) b (c', 0, 0, 0); print('named', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"named\n"
        assert Path(f"/proc/{child.pid}/comm").read_text() == "a) b (c\n"
        ticks = process_start_time(child.pid)
        assert ticks is not None
        assert ticks == process_start_time(child.pid)
        started = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
        assert abs(started - psutil.Process(child.pid).create_time()) < 1.5
        assert abs(started - time.time()) < 60
    finally:
        child.kill()
        child.wait()
    assert process_start_time(child.pid) is None


def test_a_start_time_is_told_by_the_boot_clock_only_within_one_tick() -> None:
    tick = TICK_NS * 6810603
    assert start_time_between(tick, tick + TICK_NS - 1) == 6810603
    assert start_time_between(tick - 1, tick) is None  # the process may be in either
    assert start_time_between(tick + 5, tick + 5) == 6810603


def test_the_boot_clock_tells_the_start_time_proc_shows() -> None:
    """What start_time_between rests on: /proc's start time is the process's creation
    on boot_clock(), in whole ticks. A child made between two readings in one tick
    shows that tick (some straddle a tick: those are not told)."""
    told = 0
    for _ in range(20):
        before = boot_clock()
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exec sleep 30"], {})
        started = start_time_between(before, boot_clock())
        try:
            if started is not None:
                told += 1
                assert started == process_start_time(pid)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if not told:
        pytest.skip("every spawn straddled a clock tick (a very busy machine): none told")


def test_a_zombie_shows_its_exit_status_until_reaped() -> None:
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], {})
    try:
        wait_for(lambda: zombie_status(pid) is not None)
        status = zombie_status(pid)
        assert status is not None
        assert decode_status(status) == (7, None)
    finally:
        os.waitpid(pid, 0)
    assert zombie_status(pid) is None
    killed = os.posix_spawn("/bin/sleep", ["sleep", "30"], {})
    try:
        assert zombie_status(killed) is None  # alive: not a zombie
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: zombie_status(killed) is not None)
        status = zombie_status(killed)
        assert status is not None
        assert decode_status(status) == (None, signal.SIGKILL)
    finally:
        os.waitpid(killed, 0)


def test_state_file_is_replaced_whole_and_unreadable_ones_are_ignored(tmp: Path) -> None:
    state = StateFile(tmp / "state.json")
    assert state.read() is None
    state.write_text(json.dumps({"format": 1, "instances": {"a": {"pid": 1}}}))
    assert state.read() == {"format": 1, "instances": {"a": {"pid": 1}}}
    assert sorted(p.name for p in tmp.iterdir()) == ["state.json"]  # no temporary left
    assert oct(state.path.stat().st_mode & 0o777) == "0o600"
    state.path.write_text('{"format": 1, "instan')  # torn by hand: never by herdsman
    assert state.read() is None
    state.path.write_text('{"format": 99}')
    assert state.read() is None
    state.remove()
    state.remove()
    assert not state.path.exists()


def test_a_pump_hands_over_its_pipe_with_the_line_it_had_begun() -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        loop = asyncio.get_running_loop()
        got: list[tuple[str, bytes]] = []
        read = asyncio.Event()
        closed = asyncio.Event()

        def sink(instance: str, stream: str, lines: bytes, ts: float) -> None:
            got.append((stream, lines))
            read.set()

        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(write_end, True)
        first = LogPump(loop, read_end, "web", "out", sink)
        os.write(write_end, b"one\ntw")
        async with asyncio.timeout(5):
            await read.wait()
        fd, partial = first.hand_over()
        assert (fd, partial) == (read_end, b"tw")
        assert os.get_inheritable(fd)
        assert first.closed
        os.write(write_end, b"o\nthree")  # written while nobody reads
        LogPump(loop, fd, "web", "out", sink, lambda _: closed.set(), partial=partial)
        os.close(write_end)
        async with asyncio.timeout(5):
            await closed.wait()
        return got

    got = asyncio.run(scenario())
    assert [line for _, lines in got for line in lines.split(b"\n")] == [b"one", b"two", b"three"]


def test_pipes_passed_back_by_the_service_manager_are_taken_by_inode(tmp: Path) -> None:
    from herdsman.runtime.adoption import pipes_by_inode, reopen_pipes

    read_end, write_end = os.pipe()
    other = os.open(tmp / "not-a-pipe", os.O_WRONLY | os.O_CREAT)
    try:
        inode = os.fstat(read_end).st_ino
        stored = pipes_by_inode([read_end, other])
        assert stored == {inode: read_end}
        assert not os.get_blocking(read_end)
        with pytest.raises(OSError, match=os.strerror(errno.EBADF)):
            os.fstat(other)  # not a pipe: closed
        # pid 0 has no /proc entry: only the stored pipe can answer.
        got = list(reopen_pipes(0, [["out", inode], ["err", inode + 1]], stored))
        assert got == [("out", read_end, b"")]
        assert stored == {}
    finally:
        os.close(read_end)
        os.close(write_end)


def recording_writer(
    tmp: Path,
    instances: dict[str, dict[str, int | None]],
    on_error: Callable[[str | None], None],
) -> tuple[StateWriter, list[str]]:
    """A StateWriter of `instances` (name -> {"pid": ...}) without delay, on the
    running loop, and the names of the records it encodes, in order."""
    encoded: list[str] = []

    def record(instance: dict[str, int | None]) -> InstanceRecord:
        encoded.append(next(n for n, i in instances.items() if i is instance))
        return InstanceRecord(pid=instance["pid"])

    writer = StateWriter(
        tmp / "state.json",
        asyncio.get_running_loop(),
        lambda: instances,
        record,
        lambda: {"config": "c"},
        on_error,
        delay=0,
    )
    return writer, encoded


def test_the_writer_writes_once_for_many_changes_and_encodes_only_what_changed(tmp: Path) -> None:
    async def scenario() -> None:
        instances: dict[str, dict[str, int | None]] = {"a": {"pid": 1}, "b": {"pid": 2}}
        errors: list[str | None] = []

        def pids(document: dict[str, Any]) -> dict[str, int]:
            return {name: record["pid"] for name, record in document["instances"].items()}

        writer, encoded = recording_writer(tmp, instances, errors.append)
        for name in ("a", "b", "a"):
            writer.changed(name)
        assert not writer.file.path.exists()  # not at once
        await asyncio.sleep(0.01)
        document = writer.file.read()
        assert document is not None
        assert pids(document) == {"a": 1, "b": 2}
        assert document["config"] == "c"
        assert sorted(encoded) == ["a", "b"]
        instances["a"]["pid"] = 7
        writer.changed("a")
        await asyncio.sleep(0.01)
        assert encoded[2:] == ["a"]
        document = writer.file.read()
        assert document is not None
        assert pids(document)["a"] == 7
        del instances["b"]
        writer.changed("a")
        await asyncio.sleep(0.01)
        document = writer.file.read()
        assert document is not None
        assert list(document["instances"]) == ["a"]
        writer.file.path.unlink()
        writer.file.path.mkdir()  # a directory in the way: the rename fails
        writer.changed("a")
        await asyncio.sleep(0.01)
        writer.file.path.rmdir()
        writer.changed("a")
        await asyncio.sleep(0.01)
        assert errors[0] is not None
        assert errors[0].startswith(f"cannot write {tmp}/state.json")
        assert errors[1:] == [None]

    asyncio.run(scenario())


def test_a_large_herds_state_json_follows_its_changes_later(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite costs the whole herd's size: the delay grows with it, WRITE_DELAY per
    PER_DELAY instances (here 0.05 s per instance, for 4 of them), so a start of
    thousands is not rewritten every 0.1 s of it."""
    monkeypatch.setattr(statefile, "PER_DELAY", 1)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        instances = {name: {"pid": 1} for name in "abcd"}
        written: list[float] = []

        def header() -> dict[str, Any]:
            written.append(loop.time())
            return {}

        writer = StateWriter(
            tmp / "state.json",
            loop,
            lambda: instances,
            lambda instance: InstanceRecord(pid=instance["pid"]),
            header,
            lambda _error: None,
            delay=0.05,
        )
        changed = loop.time()
        writer.changed("a")
        await until(lambda: written)
        assert written[0] - changed >= 0.19  # asyncio may run a timer a hair early

    asyncio.run(scenario())


def test_state_json_waits_while_a_wave_goes_out(tmp: Path) -> None:
    """A rewrite costs the whole herd's size: while a start wave is going out (held;
    the journal has its spawns) it is put off, a rewrite due meanwhile too, and made
    a delay after the release."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        instances = {"a": {"pid": 1}, "b": {"pid": 2}}
        writer = StateWriter(
            tmp / "state.json",
            loop,
            lambda: instances,
            lambda instance: InstanceRecord(pid=instance["pid"]),
            lambda: {},
            lambda _error: None,
            delay=0.01,
        )
        writer.changed("a")  # due before the wave is out
        writer.hold()
        writer.changed("b")
        await asyncio.sleep(0.1)  # ten delays
        assert not writer.file.path.exists()
        writer.release()
        await until(writer.file.path.exists)
        document = writer.file.read()
        assert document is not None
        assert {name: r["pid"] for name, r in document["instances"].items()} == {"a": 1, "b": 2}
        writer.file.close()

    asyncio.run(scenario())


def test_a_write_of_some_records_is_followed_by_one_of_all(tmp: Path) -> None:
    # Before the first spawns, recovery writes what it adopted alone: encoding the
    # records of thousands of instances that have nothing to record held them back.
    async def scenario() -> None:
        instances: dict[str, dict[str, int | None]] = {
            "a": {"pid": 1},
            "b": {"pid": None},
            "c": {"pid": None},
        }
        writer, encoded = recording_writer(tmp, instances, lambda error: None)
        writer.write(only=["a"])
        document = writer.file.read()
        assert document is not None
        assert document["config"] == "c"
        assert list(document["instances"]) == ["a"]
        assert encoded == ["a"]
        await asyncio.sleep(0.01)  # no change: the whole document follows all the same
        document = writer.file.read()
        assert document is not None
        assert sorted(document["instances"]) == ["a", "b", "c"]
        writer.file.close()

    asyncio.run(scenario())


def test_the_journal_brings_spawns_since_the_last_write_into_the_document(tmp: Path) -> None:
    state = StateFile(tmp / "state.json")
    state.write_text(
        json.dumps(
            {"format": 1, "instances": {"web": {"state": "running", "pid": 5, "timer": [1]}}}
        )
    )
    state.spawned("web", 41, [11, 12], 99.5)
    assert not state.journal.exists()  # until flushed
    state.flush()
    with open(state.journal, "a") as f:
        f.write("42 12")  # and a line torn by the crash
    document = state.read()
    assert document is not None
    assert document["instances"]["web"] == {
        "state": "starting",
        "pid": 41,
        "start_time": None,
        "spawned_at": 99.5,
        "pipes": [["out", 11], ["err", 12]],
        "journalled": True,
    }
    state.write_text(json.dumps({"format": 1, "instances": {}}))  # a rewrite takes the journal in
    assert state.journal.read_text() == ""
    assert state.read() == {"format": 1, "instances": {}}
    state.close()
    state.remove()
    assert not state.journal.exists()
    assert not state.path.exists()


def test_a_journalled_spawn_is_completed_as_the_lifecycle_has_it_after_a_spawn() -> None:
    from herdsman.runtime.records import just_spawned

    def journalled() -> InstanceRecord:
        data = {"state": "starting", "pid": 41, "spawned_at": 10.0, "restarts": 2}
        return InstanceRecord.from_data(data, "web", complete=False)

    waits = journalled()
    just_spawned(waits, Policy(start_seconds=2.0), 41)
    assert (waits.state, waits.pid, waits.restarts) == (State.STARTING, 41, 2)
    assert waits.timer == (12.0, "start_seconds", 41)
    at_once = journalled()
    just_spawned(at_once, Policy(start_seconds=0), 41)
    assert (at_once.state, at_once.ready, at_once.start_passed) == (State.RUNNING, True, True)
    assert at_once.timer is None
    probed = journalled()
    just_spawned(probed, Policy(start_seconds=0, needs_ready=True), 41)
    assert (probed.state, probed.ready) == (State.STARTING, False)


# Written by a daemon of 44f8c9f, the release before records were typed: web.0 and
# web.1 running, crashy restarting (its backoff timer set), once exited, manual stopped.
PREVIOUS_RELEASE_STATE = Path(__file__).parent / "fixtures" / "state-44f8c9f.json"


def test_the_state_json_of_the_previous_release_is_read_record_by_record(tmp: Path) -> None:
    from herdsman.runtime.leftovers import still_running
    from herdsman.runtime.procfs import boot_id

    written = json.loads(PREVIOUS_RELEASE_STATE.read_bytes())
    (tmp / "state.json").write_bytes(PREVIOUS_RELEASE_STATE.read_bytes())
    document, problems = StateFile(tmp / "state.json").recover()
    assert problems == []
    assert document is not None
    records = {
        name: InstanceRecord.from_data(data, name, complete=True)
        for name, data in document["instances"].items()
    }
    web = records["web.0"]
    assert (web.state, web.pid, web.start_time, web.ready) == (State.RUNNING, 32011, 1153519, True)
    assert web.pipes == [("out", 9030569), ("err", 9030570)]
    assert web.stop_signal == 15
    crashy = records["crashy"]
    assert (crashy.state, crashy.restarts, crashy.exit_said) == (State.RESTARTING, 1, "going down")
    assert crashy.timer == (11565.423163684, "backoff", None)
    assert (records["once"].state, records["once"].exit_code) == (State.EXITED, 0)
    assert records["manual"].state is State.STOPPED
    # This release writes each record as that one did: a downgrade reads it too.
    for name, record in records.items():
        assert record.to_data() == written["instances"][name], name

    # Recovery takes a record whose process still runs (on this boot: the fixture's
    # pids are long gone, so one is pointed at a live process).
    child = subprocess.Popen(["sleep", "30"])
    try:
        document["boot_id"] = boot_id()
        document["instances"]["web.1"].update(
            pid=child.pid, start_time=process_start_time(child.pid)
        )
        found = list(still_running(document, tmp))
        assert [(name, pid) for name, _, pid in found] == [("web.1", child.pid)]
        assert found[0][1].pipes == [("out", 9030572), ("err", 9030573)]
    finally:
        child.kill()
        child.wait()


def test_a_record_of_the_wrong_type_in_state_json_is_said_and_the_file_moved_aside(
    tmp: Path,
) -> None:
    written = json.loads(PREVIOUS_RELEASE_STATE.read_bytes())
    written["instances"]["crashy"]["timer"] = [1]
    (tmp / "state.json").write_text(json.dumps(written))
    document, problems = StateFile(tmp / "state.json").recover()
    assert document is None
    [problem] = problems
    assert "is corrupt (the record of crashy: timer is [1], not [due time, kind, pid] or null)" in (
        problem
    )
