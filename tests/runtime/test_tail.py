"""The daemon's in-memory tail: the last lines of each instance, kept per batch."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from herdsman.runtime.tails import Tail, last_lines

LINE = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


@given(st.lists(LINE, min_size=2), st.data())
def test_last_lines_of_a_batch(lines: list[bytes], data: st.DataObject) -> None:
    keep = data.draw(st.integers(1, len(lines) - 1))
    assert last_lines(b"\n".join(lines), len(lines), keep) == b"\n".join(lines[-keep:])


@given(st.lists(st.lists(LINE, min_size=1, max_size=40), min_size=1, max_size=12))
def test_the_last_limit_lines_in_order_whatever_the_batches(batches: list[list[bytes]]) -> None:
    tail = Tail("web", 25)
    every = []
    for n, lines in enumerate(batches):
        stream = "err" if n % 3 == 0 else "out"
        tail.add(float(n), stream, b"\n".join(lines), len(lines))
        every += [(float(n), "web", stream, line) for line in lines]
    assert tail.entries() == every[-25:]


def test_a_follower_that_falls_its_budget_behind_is_dropped_and_lets_go_of_it() -> None:
    from herdsman.runtime.followers import Broadcast

    async def scenario() -> None:
        broadcast: Broadcast[bytes] = Broadcast(10, len)
        slow, quick = broadcast.follow(), broadcast.follow()
        broadcast.publish(b"12345")
        assert await anext(quick) == b"12345"  # what it has taken no longer counts
        broadcast.publish(b"67890")
        broadcast.publish(b"x")  # 11 bytes behind: slow is dropped, quick is not
        assert [item async for item in slow] == []  # let go of, and ended
        assert [await anext(quick), await anext(quick)] == [b"67890", b"x"]
        broadcast.end()
        assert [item async for item in quick] == []
        assert not broadcast.followed

    asyncio.run(scenario())


def test_an_event_follower_is_not_sent_the_changes_its_snapshot_shows() -> None:
    """Changes made but held (a spawn still out) are in a snapshot taken as a follower
    subscribes: it gets the changes after them, not them."""
    from herdsman.core.lifecycle import Spawned, Start
    from herdsman.core.states import State
    from herdsman.runtime.followers import EventStream

    class Instance:
        name = "web"

    def document(_managed: object) -> Any:
        keys = "service replica pid ready health restarts exit_code exit_signal uptime"
        return {"name": "web", "message": "", **dict.fromkeys(keys.split())} | {
            "blocked": None,
            "since": None,
            "command": [],
            "checks": {},
        }

    async def scenario() -> None:
        web, start = Instance(), Start(())
        held: list[tuple[Any, State, State, Start]] = []
        stream = EventStream(document, lambda: held)
        before = stream.follow()  # subscribed before the change was made
        held.append((web, State.STOPPED, State.STARTING, start))
        after = stream.follow()  # its snapshot shows web starting
        held.clear()
        stream.changed(web, State.STOPPED, State.STARTING, start)  # the spawn landed
        stream.changed(web, State.STARTING, State.STARTING, Spawned(42))
        stream.end()
        assert [(e["previous"], e["state"]) async for e in before] == [
            ("stopped", "starting"),
            ("starting", "starting"),
        ]
        assert [(e["previous"], e["state"]) async for e in after] == [("starting", "starting")]

    asyncio.run(scenario())
