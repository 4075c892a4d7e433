"""The subscribers of the change feed in a real daemon: hooks, `/v1/events` with its
snapshot, and `logs -f`, each told every change (or line) once and in order while
instances crash-loop or flood."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

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
