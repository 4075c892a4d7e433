"""The subscribers of the change feed in a real daemon: hooks, `/v1/events` with its
snapshot, and `logs -f`, each told every change (or line) once and in order while
instances crash-loop or flood."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from herdsman.cli.stream import AsyncClient, Endpoint, events
from tests.conftest import wait_for
from tests.e2e.helpers import herdsman, instances

STATES = '["stopped", "starting", "running", "stopping", "restarting", "exited", "failed"]'


def chains(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Per instance, its (previous, state) pairs in the order they came."""
    by_instance: dict[str, list[tuple[str, str]]] = {}
    for event in events:
        by_instance.setdefault(event["instance"], []).append((event["previous"], event["state"]))
    return by_instance


def assert_one_path(pairs: list[tuple[str, str]], first: str, last: str) -> None:
    """Each change leaves the state the one before entered: none lost, none twice."""
    assert pairs[0][0] == first, pairs
    for (_, entered), (left, _) in itertools.pairwise(pairs):
        assert left == entered, pairs
    assert all(left != entered for left, entered in pairs), pairs
    assert pairs[-1][1] == last, pairs


def test_hooks_fire_once_per_transition_in_order_under_a_crash_loop(tmp: Path) -> None:
    events = tmp / "events.jsonl"
    (tmp / "herdsman.toml").write_text(
        f"""
[settings]
shutdown_timeout = "5s"

[[hooks]]
on = {STATES}
shell = true
exec = 'printf "%s\\n" "$HERDSMAN_EVENT" >> {events}'

[services.crash]
command = ["sh", "-c", "exit 1"]
replicas = 3
start_seconds = "10s"
backoff = {{ initial = "20ms", max = "20ms" }}
start_limit = {{ burst = 6, interval = "60s" }}
"""
    )
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr
    try:
        names = [f"crash.{i}" for i in range(3)]
        wait_for(lambda: all(instances(tmp)[n]["state"] == "failed" for n in names), 30)

        def told() -> dict[str, list[tuple[str, str]]]:
            done = events.read_text().split("\n")[:-1] if events.exists() else []
            return chains([json.loads(line) for line in done])

        wait_for(lambda: all(told().get(n, [("", "")])[-1][1] == "failed" for n in names), 30)
        final = instances(tmp)
        for name in names:
            pairs = told()[name]
            assert_one_path(pairs, "stopped", "failed")
            # One start, then one respawn per restart the instance counts.
            respawns = pairs.count(("restarting", "starting"))
            assert respawns == final[name]["restarts"] > 0, pairs
            assert pairs.count(("stopped", "starting")) == 1, pairs
    finally:
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr


async def snapshot_and_changes(
    client: AsyncClient, done: Callable[[dict[str, str]], bool]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe with a snapshot; read changes until `done(state of each instance)`."""
    response = await client.subscribe()
    stream = events(response)
    try:
        kind, snapshot = await anext(stream)
        assert kind == "snapshot", (kind, snapshot)
        states = {i["name"]: i["state"] for i in snapshot["services"]}
        changes: list[dict[str, Any]] = []
        if done(states):  # all came before the subscription: no change is to come
            return snapshot, changes
        async with asyncio.timeout(60):
            async for kind, change in stream:
                assert kind == "message", kind
                changes.append(change)
                states[change["instance"]] = change["state"]
                if done(states):
                    break
        return snapshot, changes
    finally:
        await stream.aclose()


def test_events_give_a_snapshot_then_every_change_once_while_instances_crash_loop(
    tmp: Path,
) -> None:
    (tmp / "herdsman.toml").write_text(
        """
[settings]
shutdown_timeout = "5s"

[services.crash]
command = ["sh", "-c", "sleep 0.05; exit 1"]
replicas = 4
start_seconds = "10s"
backoff = { initial = "10ms", max = "10ms" }
start_limit = { burst = 1000000, interval = "1s" }
"""
    )
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr
    try:
        wait_for(lambda: all(i["restarts"] >= 3 for i in instances(tmp).values()), 30)
        client = AsyncClient(
            Endpoint(tmp / "herdsman.toml", socket=tmp / ".herdsman/herdsman.sock")
        )
        stopper = subprocess.Popen(  # stops them while the stream is read, from outside
            [sys.executable, "-m", "herdsman", "stop", "crash"],
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=False,
        )
        try:
            # Subscribed mid-flight: the stop may come before, during or after it.
            snapshot, changes = asyncio.run(
                snapshot_and_changes(client, lambda s: set(s.values()) == {"stopped"})
            )
        finally:
            assert stopper.wait(30) == 0
        final = instances(tmp)
    finally:
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr
    known = {i["name"]: i for i in snapshot["services"]}
    assert set(known) == set(final)
    for change in changes:
        before = known[change["instance"]]
        # Each change leaves the state the snapshot or the change before it entered:
        # one lost would skip a state, one shown twice would leave it twice.
        assert change["previous"] == before["state"], (before, change)
        if change["state"] == "restarting":
            assert change["restarts"] == before["restarts"] + 1, (before, change)
        else:
            assert change["restarts"] == before["restarts"], (before, change)
        known[change["instance"]] = change
    for name, instance in final.items():
        assert (known[name]["state"], known[name]["restarts"]) == ("stopped", instance["restarts"])


FLOOD = """
import os, sys, time
for i in range(100):
    print(f"warm {i}", flush=True)
while not os.path.exists("go"):
    time.sleep(0.01)
pad = "x" * 190
for i in range(LINES):
    print(f"flood {i:06d} {pad}", flush=True)  # a write each: a batch each, often
time.sleep(600)
"""


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """What `proc` wrote on stdout up to the line holding `needle` (fails at the
    deadline, or if it ends before)."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not written within {timeout}s: {data[-300:]!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 20)
            assert chunk, f"ended before {needle!r}: {data[-300:]!r}"
            data += chunk
    return data[: data.index(b"\n", data.index(needle)) + 1]


def test_logs_f_under_a_flood_shows_the_backlog_then_every_line_once_in_order(
    tmp: Path,
) -> None:
    # 12 MB, a write a line: more than a follower may fall behind (tails.FOLLOWER_BYTES),
    # so it is dropped and reads the lines in between from the log file. (Before, the
    # daemon held all it could not send: 490 MB for one slow follower of a big flood.)
    lines = 60_000
    (tmp / "flood.py").write_text(FLOOD.replace("LINES", str(lines)))
    (tmp / "herdsman.toml").write_text(
        f"""
[settings]
shutdown_timeout = "5s"

[services.flood]
command = ["{sys.executable}", "flood.py"]
log = {{ max_bytes = "100MiB" }}
"""
    )
    up = herdsman(tmp, "up", "-d")
    assert up.returncode == 0, up.stderr
    log = tmp / ".herdsman/logs/flood.log"
    follower = None
    try:
        wait_for(lambda: log.exists() and b"warm 99\n" in log.read_bytes(), 10)
        follower = subprocess.Popen(
            [sys.executable, "-m", "herdsman", "logs", "-f", "-n", "50"],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        backlog = read_until(follower, b"warm 99", 10)  # subscribed: the backlog came
        (tmp / "go").touch()
        # Not reading meanwhile: the daemon holds what this follower cannot take,
        # until it is too much and the follower is dropped.
        last = f"flood {lines - 1:06d} ".encode()
        wait_for(lambda: last in log.read_bytes()[-1000:], 60, interval=0.2)
        shown = backlog + read_until(follower, last, 60)
    finally:
        if follower is not None:
            follower.kill()
            follower.wait()
        down = herdsman(tmp, "down")
        assert down.returncode == 0, down.stderr
    assert follower.stderr is not None
    said = follower.stderr.read().decode()
    assert "this follower fell behind the daemon" in said, said
    texts = [line.split(" │ ", 1)[1] for line in shown.decode().splitlines()]
    pad = "x" * 190
    assert texts == [f"warm {i}" for i in range(50, 100)] + [
        f"flood {i:06d} {pad}" for i in range(lines)
    ]
