"""The look at the daemon's children after an exit waits for the spawns in flight.

The exit of a main process asks for a look (escapes.py) and, most often, for its
respawn; the look held the GIL the spawning thread needs, up to 0.4 ms of the way
from the exit to the new process. It is now taken once the spawns have landed, or
SWEEP_GAP later if they keep coming."""

from __future__ import annotations

import asyncio
from pathlib import Path

from herdsman.runtime.escapes import SWEEP_GAP, Escapes


class _Looks:
    def __init__(self) -> None:
        self.spawning = True
        self.count = 0
        self.taken = asyncio.Event()

    def escapes(self, loop: asyncio.AbstractEventLoop, where: Path) -> Escapes:
        escapes = Escapes(loop, lambda: where, lambda _name: None, set, lambda: self.spawning)

        def sweep(*, everywhere: bool = False, every_instance: bool = False) -> int:
            self.count += 1
            self.taken.set()
            return 0

        escapes.sweep = sweep  # type: ignore[method-assign]
        return escapes


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_the_look_is_taken_once_the_spawns_have_landed(tmp_path: Path) -> None:
    async def main() -> None:
        looks = _Looks()
        escapes = looks.escapes(asyncio.get_running_loop(), tmp_path)
        escapes.soon()
        await _turns(5)
        assert looks.count == 0  # a respawn is in flight
        looks.spawning = False
        escapes.spawns_landed()
        assert looks.count == 1
        escapes.spawns_landed()  # nothing put off any more
        await asyncio.sleep(SWEEP_GAP * 2)
        assert looks.count == 1

    asyncio.run(main())


def test_spawns_that_keep_coming_put_the_look_off_for_sweep_gap_at_most(tmp_path: Path) -> None:
    async def main() -> None:
        looks = _Looks()
        escapes = looks.escapes(asyncio.get_running_loop(), tmp_path)
        escapes.soon()
        await asyncio.wait_for(looks.taken.wait(), 5.0)  # although spawns are still in flight
        assert looks.count == 1

    asyncio.run(main())


def test_without_spawns_in_flight_the_look_is_taken_this_turn(tmp_path: Path) -> None:
    async def main() -> None:
        looks = _Looks()
        looks.spawning = False
        escapes = looks.escapes(asyncio.get_running_loop(), tmp_path)
        escapes.soon()
        await _turns(2)
        assert looks.count == 1

    asyncio.run(main())
