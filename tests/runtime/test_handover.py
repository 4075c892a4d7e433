"""The typed, versioned re-exec hand-over: a round trip through the plain data that
crosses the exec, the dict an image before version 2 hands over (no `version`),
and one sentence for what is missing or wrong."""

from __future__ import annotations

import copy
import json
import os
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.core.states import State
from herdsman.runtime.handover import VERSION, DaemonHandover, Handover, HandoverError
from herdsman.runtime.records import InstanceRecord

RUNNING = {
    "state": "running",
    "pid": 4242,
    "ready": True,
    "restarts": 2,
    "attempt": 0,
    "restart_times": [10.5, 20.25],
    "spawned_at": 20.5,
    "exit_code": None,
    "exit_signal": None,
    "exit_said": "",
    "message": "",
    "start_passed": True,
    "restart_after_stop": False,
    "automatic_restart": False,
    "limited_restart": False,
    "killed": False,
    "start_time": 987654,
    "pipes": [["out", 111], ["err", 112]],
    "foreign": False,
    "stop_signal": 15,
}
RESTARTING = {
    **{k: v for k, v in RUNNING.items() if k not in ("start_time", "pipes", "foreign")},
    "state": "restarting",
    "pid": None,
    "exit_code": 3,
    "exit_said": "going down",
    "message": "exited with code 3: going down; restarting in 1s",
    "timer": [31.0, "backoff", None],
}
del RESTARTING["stop_signal"]


def version_1() -> dict[str, Any]:
    """What the images before version 2 hand over (runtime/daemon.py's hand_over and
    cli/up.py's run_up at 44f8c9f): no `version`, `format` 1, tuples as pickled."""
    return {
        "format": 1,
        "plan": pickle.dumps(("ok", None)),
        "records": {"web": dict(RUNNING), "crashy": dict(RESTARTING)},
        "pumps": {"web": [("out", 7, b"half a li"), ("err", 8, b"")]},
        "tails": {"web": [(1.5, "web", "out", b"a line")], "crashy": []},
        "health": {"web": "healthy", "crashy": None},
        "notify_fd": None,
        "started_at": 1700000000.25,
        "reexecs": 1,
        "heals": [],
        "notify_status": {"web": "serving"},
        "spawned_before": ["crashy", "web"],
        "restarted_deps": [],
        "watchdogs": ["web"],
        "bound": {"state_dir": "/s", "socket": "/s/herdsman.sock", "tcp": "None"},
        "token": None,
        "listen_fds": [3],
        "lock_fd": 4,
        "services": [],
        "detached": True,
        "watch": False,
    }


def test_the_dict_an_older_image_hands_over_is_read_as_version_1() -> None:
    handover = Handover.from_data(version_1())
    assert handover.version == 1
    web = handover.daemon.records["web"]
    assert (web.state, web.pid, web.restarts, web.start_time) == (State.RUNNING, 4242, 2, 987654)
    assert web.pipes == [("out", 111), ("err", 112)]
    assert web.stop_signal == 15
    crashy = handover.daemon.records["crashy"]
    assert (crashy.state, crashy.timer) == (State.RESTARTING, (31.0, "backoff", None))
    assert handover.daemon.pumps["web"][0] == ("out", 7, b"half a li")
    assert (handover.lock_fd, handover.listen_fds, handover.detached) == (4, [3], True)
    # What this image writes again is the same, but for the version it says.
    again = handover.to_data()
    assert again.pop("version") == VERSION
    assert again.pop("since") == {}  # it handed over none: started afresh
    old = version_1()
    del old["format"]
    assert again == old


def test_a_hand_over_survives_the_trip_across_the_exec() -> None:
    records = {
        "web": InstanceRecord.from_data(RUNNING, "web", complete=True),
        "crashy": InstanceRecord.from_data(RESTARTING, "crashy", complete=True),
    }
    handover = Handover(
        DaemonHandover(
            plan=b"plan",
            records=records,
            pumps={"web": [("out", 7, b"")]},
            tails={"web": [(1.0, "web", "err", b"x")]},
            health={"web": None},
            notify_fd=9,
            started_at=5.0,
            reexecs=3,
            heals=[1.0, 2.0],
            notify_status={},
            spawned_before=["web"],
            restarted_deps=["db"],
            watchdogs=[],
            bound={"state_dir": "/s", "socket": "/s/s", "tcp": "None"},
            since={"web": 1700000000.5, "crashy": 1700000001.0},
        ),
        listen_fds=[3, 5],
        lock_fd=4,
        services=["web"],
        detached=False,
        watch=True,
        token="secret",
    )
    crossed = pickle.loads(pickle.dumps(handover.to_data()))
    assert crossed["version"] == VERSION
    assert Handover.from_data(crossed) == handover


def test_an_image_before_watch_hands_over_none_and_it_was_off() -> None:
    old = version_1()
    del old["watch"]
    assert Handover.from_data(old).watch is False


def without(key: str) -> dict[str, Any]:
    data = version_1()
    del data[key]
    return data


def with_record(**changes: Any) -> dict[str, Any]:
    data = version_1()
    data["records"]["web"].update(changes)
    return data


def record_without(key: str) -> dict[str, Any]:
    data = version_1()
    del data["records"]["web"][key]
    return data


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        (without("records"), "the hand-over has no 'records'"),
        (without("lock_fd"), "the hand-over has no 'lock_fd'"),
        (without("started_at"), "the hand-over has no 'started_at'"),
        (record_without("restarts"), "the hand-over's record of web has no restarts"),
        (
            with_record(pid="4242"),
            "the hand-over's record of web: pid is '4242', not a pid or null",
        ),
        (
            with_record(state="paused"),
            "the hand-over's record of web: state is 'paused', not a state",
        ),
        (
            with_record(pipes=[["out"]]),
            "the hand-over's record of web: pipes is [['out']], not a list of [stream, inode] pairs",
        ),
        (
            {**version_1(), "pumps": {"web": [("out", "7", b"")]}},
            "the hand-over's 'pumps' is {'web': [('out', '7', b'')]}, not a mapping of pipes",
        ),
        (
            {**version_1(), "detached": "yes"},
            "the hand-over's 'detached' is 'yes', not true or false",
        ),
        ({**version_1(), "version": 3}, "the hand-over is of version 3; this image reads 1 to 2"),
        ([1, 2], "the hand-over is list, not a mapping"),
    ],
)
def test_what_is_missing_or_wrong_is_said_in_one_sentence(data: object, sentence: str) -> None:
    original = copy.deepcopy(data)
    with pytest.raises(HandoverError) as raised:
        Handover.from_data(data)
    assert str(raised.value) == sentence
    assert data == original  # read, not changed


def test_a_new_image_that_cannot_read_the_hand_over_says_why_and_leaves_the_services(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from herdsman.cli import resume

    fd = os.memfd_create("handover")
    os.write(fd, pickle.dumps(without("records")))
    os.lseek(fd, 0, os.SEEK_SET)
    assert resume.main([str(fd)]) == 1
    assert capsys.readouterr().err == (
        "herdsman: cannot take over from the previous image: the hand-over has no 'records';"
        " the services keep running, and `herdsman up` adopts them\n"
    )


@given(
    state=st.sampled_from(State),
    pid=st.none() | st.integers(1, 2**22),
    start_time=st.none() | st.integers(0, 2**40),
    pipes=st.lists(st.tuples(st.sampled_from(["out", "err"]), st.integers(1, 2**40)), max_size=2),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    stop_signal=st.none() | st.integers(1, 64),
    timer=st.none()
    | st.tuples(
        st.floats(0, 1e9, allow_nan=False),
        st.sampled_from(["backoff", "start_seconds", "stop_timeout"]),
        st.none() | st.integers(1, 2**22),
    ),
)
def test_every_record_reads_back_as_written(
    state: State,
    pid: int | None,
    start_time: int | None,
    pipes: list[tuple[str, int]],
    flags: tuple[bool, bool, bool],
    stop_signal: int | None,
    timer: tuple[float, str, int | None] | None,
) -> None:
    record = InstanceRecord(state, pid, restart_times=[1.5], exit_said="x", timer=timer)
    if pid is not None:  # the process's fields are written while there is one
        record.start_time, record.pipes, record.stop_signal = start_time, pipes, stop_signal
        record.foreign = flags[0]
    record.journalled, record.found_by_environment = flags[1:]
    data = json.loads(json.dumps(record.to_data()))
    assert InstanceRecord.from_data(data, "web", complete=True) == record
