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


def in_background(tasks: list[asyncio.Task[None]]) -> Any:
    def run(coro: Any) -> asyncio.Task[None]:
        tasks.append(asyncio.get_running_loop().create_task(coro))
        return tasks[-1]

    return run


def fake_herd(n: int) -> Any:
    return [SimpleNamespace(name=f"w.{i}", core=SimpleNamespace(pid=100 + i)) for i in range(n)]


def counting(sampled: list[int], seconds: float) -> Any:
    def sample(pid: int, previous: Sample | None) -> Sample:
        sampled.append(pid)
        time.sleep(seconds)
        return Sample(time.monotonic(), 0.0, 0.0, 1, 1, 0)

    return sample


@pytest.mark.parametrize(("seconds", "for_the_answer"), [(0.0, 12), (0.04, 4)])
def test_an_answer_waits_for_the_rest_only_if_all_of_it_fits_in_the_budget(
    monkeypatch: pytest.MonkeyPatch, seconds: float, for_the_answer: int
) -> None:
    # The first 4 take 0.16 s: at that pace the other 8 would take 0.32 s, past the
    # budget of 0.2. Sampling as many as fit (one more) would be a wait for a table
    # still mostly without samples, as a big herd's first `status` was.
    sampled: list[int] = []
    monkeypatch.setattr(sampler_module, "sample_tree", counting(sampled, seconds))
    monkeypatch.setattr(sampler_module, "SAMPLE_AT_ONCE", 4)
    monkeypatch.setattr(sampler_module, "SAMPLE_BUDGET", 0.2)
    herd = fake_herd(12)

    async def body() -> None:
        tasks: list[asyncio.Task[None]] = []
        sampler = Sampler(lambda: herd, in_background(tasks))
        sampler.refresh()
        assert len(sampled) == for_the_answer
        await asyncio.gather(*tasks)
        assert len(sampled) == 12  # the rest in the background

    asyncio.run(body())


def test_the_background_pass_waits_while_an_answer_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sampled: list[int] = []
    monkeypatch.setattr(sampler_module, "sample_tree", counting(sampled, 0.0))
    monkeypatch.setattr(sampler_module, "SAMPLE_AT_ONCE", 1)
    monkeypatch.setattr(sampler_module, "SAMPLE_BUDGET", 0.0)
    herd = fake_herd(10)

    async def body() -> None:
        tasks: list[asyncio.Task[None]] = []
        sampler = Sampler(lambda: herd, in_background(tasks), max_age=0.01)
        with sampler.answering():
            sampler.refresh()  # one for the answer; the pass waits until it is out
            for _ in range(20):
                await asyncio.sleep(0)
            assert len(sampled) == 1
        await until(lambda: len(sampled) == 10)
        # An answer that never goes out (a client that stopped reading) holds the
        # pass back SAMPLE_YIELD at a time, not for good.
        monkeypatch.setattr(sampler_module, "SAMPLE_YIELD", 0.01)
        with sampler.answering():
            await until(lambda: sampler.refresh() or len(sampled) > 10)  # once due again
            await until(lambda: len(sampled) == 20)
        await asyncio.gather(*tasks)

    asyncio.run(body())
