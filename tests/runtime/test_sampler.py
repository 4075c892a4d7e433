"""When the sampler samples: how often a client that keeps asking makes it pass
over the herd (the trees themselves are test_monitor.py's)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from herdsman.runtime import sampler as sampler_module
from herdsman.runtime.monitor import Sample
from herdsman.runtime.sampler import Sampler
from tests.runtime.harness import until

SAMPLE_TIME = 0.02  # seconds each fake sample takes, as a slow machine's would


def test_a_pass_longer_than_max_age_rests_as_long_as_it_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thousands of instances: a pass takes longer than max_age. Were the next one
    # due max_age after it ended, a client asking all the time would keep the
    # daemon sampling nearly all the time.
    sampled: list[int] = []

    def slow(pid: int, previous: Sample | None) -> Sample:
        sampled.append(pid)
        time.sleep(SAMPLE_TIME)
        return Sample(time.monotonic(), 0.0, 0.0, 1, 1, 0)

    monkeypatch.setattr(sampler_module, "sample_tree", slow)
    monkeypatch.setattr(sampler_module, "SAMPLE_AT_ONCE", 1)
    # No sample is shown as recent: each pass samples its first tree for the answer.
    monkeypatch.setattr(sampler_module, "SAMPLE_SHOWN", 0.0)
    herd: Any = [
        SimpleNamespace(name=f"w.{i}", core=SimpleNamespace(pid=100 + i)) for i in range(10)
    ]
    max_age = SAMPLE_TIME  # a tenth of the pass

    async def body() -> None:
        tasks: set[asyncio.Task[None]] = set()

        def background(coro: Any) -> asyncio.Task[None]:
            task = asyncio.get_running_loop().create_task(coro)
            tasks.add(task)
            return task

        sampler = Sampler(lambda: herd, background, max_age=max_age)
        started = time.monotonic()
        sampler.refresh()  # samples 1 for the answer, the other 9 in the background
        await until(lambda: len(sampled) == 10)
        ended = time.monotonic()
        took = ended - started
        assert took >= 10 * SAMPLE_TIME
        await until(lambda: time.monotonic() > ended + 2 * max_age)
        sampler.refresh()  # due after max_age, but the last pass took longer
        assert len(sampled) == 10
        await until(lambda: time.monotonic() > ended + took)
        sampler.refresh()
        assert len(sampled) == 11  # a new pass: one for the answer, the rest in the background
        await until(lambda: len(sampled) == 20)
        await asyncio.gather(*tasks)

    asyncio.run(body())
