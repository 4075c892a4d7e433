"""Resource samples of the instances' process trees, taken when someone asks.

psutil takes a fraction of a millisecond per process tree, seconds for thousands
of them. An answer shows each instance's last sample if it is at most SAMPLE_SHOWN
seconds old and waits for the others (new processes, or a herd nobody asked about
for a while): the first SAMPLE_AT_ONCE of them, and the rest if all of it fits in
SAMPLE_BUDGET; the pass goes on in the background, a slice of SAMPLE_SLICE seconds
per loop turn, none while an answer is being sent. A sample is reused for `max_age`
seconds, and for as long as the last pass took: a client that asks all the time
keeps the daemon sampling at most half of the time, however many instances there
are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from herdsman.core.herd import MemorySample
from herdsman.runtime.monitor import Sample, sample_tree

if TYPE_CHECKING:
    from herdsman.core.plan import Plan
    from herdsman.runtime.supervisor import Managed, Supervisor

SAMPLE_MAX_AGE = 1.0  # seconds a resource sample is reused for
SAMPLE_SHOWN = 10.0  # seconds a sample is shown for while a fresh one is taken
SAMPLE_BUDGET = 0.02
SAMPLE_AT_ONCE = 50
# An answer needs several loop turns (accept, read, answer, drain), and each turn
# waits for the slice that runs in it: 5 ms slices made a `status` at 8,000
# instances wait 30 ms for a pass it did not ask for.
SAMPLE_SLICE = 0.001
# ... and no slice while an answer is on its way out (see Sampler.answering), for at
# most this long at a time: a client that stops reading holds the pass back, not up.
SAMPLE_YIELD = 0.05
MEMORY_INTERVAL = 5.0  # the default of settings.memory_interval


class Sampler:
    def __init__(
        self,
        instances: Callable[[], Iterable[Managed]],
        run_in_background: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
        max_age: float = SAMPLE_MAX_AGE,
    ) -> None:
        self._instances = instances
        self._run_in_background = run_in_background
        self._max_age = max_age
        self._samples: dict[str, Sample] = {}
        self._sampled_at = 0.0  # when the last pass ended
        self._rest_for = max_age  # how long samples are reused after it
        self._sampling: asyncio.Task[Any] | None = None  # the rest of a pass, in the background
        self._answering = 0  # answers being sent (see answering)
        self._quiet = asyncio.Event()  # set while none is
        self._quiet.set()

    def get(self, name: str) -> Sample | None:
        """The last sample of `name`'s process tree, if any."""
        return self._samples.get(name)

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Around the sending of an answer (the API server's): the background pass
        takes no slice meanwhile. A `status` of 8,000 instances needs several loop
        turns to be accepted, read and written out (0.5 MB), and took a slice in
        each: during a pass the daemon spent 24 ms of CPU between its connect and
        its answer, 20 without them (median of 16, interleaved runs)."""
        self._answering += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._answering -= 1
            if not self._answering:
                self._quiet.set()

    def refresh(self) -> None:
        """Samples for an answer: fresh ones for the instances without a recent one,
        when they all fit in SAMPLE_BUDGET (at least SAMPLE_AT_ONCE of them); the pass
        goes on in the background."""
        now = time.monotonic()
        if self._sampling is not None or now - self._sampled_at < self._rest_for:
            return
        self._sampled_at = now
        samples, shown = self._samples, now - SAMPLE_SHOWN
        todo: list[Managed] = []
        recent: list[Managed] = []
        for managed in self._instances():
            sample = samples.get(managed.name)
            (recent if sample is not None and sample.at >= shown else todo).append(managed)
        done, begun = 0, time.monotonic()
        while done < len(todo) and done < SAMPLE_AT_ONCE:
            self.sample(todo[done])
            done += 1
        # The others too if, at the pace of these, they all fit in the budget. Only
        # some would be a wait for a table still mostly stale: a big herd's first
        # `status`, or one after SAMPLE_SHOWN, spent 20 ms on 6% of 8,000 instances.
        left, spent = len(todo) - done, time.monotonic() - begun
        if left and spent / done * left <= SAMPLE_BUDGET - spent:
            deadline = now + SAMPLE_BUDGET
            while done < len(todo) and time.monotonic() < deadline:
                self.sample(todo[done])
                done += 1
        if done < len(todo) or recent:
            self._sampling = self._run_in_background(self._rest(todo[done:] + recent, 0, now))

    async def _rest(self, todo: list[Managed], done: int, started: float) -> None:
        try:
            while done < len(todo):
                await asyncio.sleep(0)  # between slices, whatever else is ready runs
                if self._answering:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(SAMPLE_YIELD):
                            while self._answering:  # one answer out, the next in: wait on
                                await self._quiet.wait()
                deadline = time.monotonic() + SAMPLE_SLICE
                while done < len(todo) and time.monotonic() < deadline:
                    self.sample(todo[done])
                    done += 1
        finally:
            self._sampling = None
            self._sampled_at = time.monotonic()
            self._rest_for = max(self._max_age, self._sampled_at - started)

    def sample(self, managed: Managed) -> Sample | None:
        """A fresh sample of `managed`'s process tree (None: it has no process)."""
        name, pid = managed.name, managed.core.pid
        sample = sample_tree(pid, self._samples.get(name)) if pid is not None else None
        if sample is None:
            self._samples.pop(name, None)
        else:
            self._samples[name] = sample
        return sample


class MemoryWatch:
    """Samples the instances that have a memory_limit for the herd, which decides,
    while the plan has any: a herd without limits pays nothing."""

    def __init__(
        self,
        supervisor: Supervisor,
        sampler: Sampler,
        run_in_background: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
    ) -> None:
        self._supervisor = supervisor
        self._sampler = sampler
        self._run_in_background = run_in_background
        self._task: asyncio.Task[Any] | None = None

    def track(self, plan: Plan) -> None:
        """Start or stop sampling as `plan` has limits or not (at start, at each reload)."""
        limited = any(svc.memory_limit for svc in plan.services.values())
        if limited and self._task is None:
            self._task = self._run_in_background(self._sample())
        elif not limited and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _sample(self) -> None:
        """Every `settings.memory_interval` (read each time: a reload applies it), a
        sample of each limited instance's tree for the herd, which decides."""
        sup = self._supervisor
        while True:
            # getattr: a plan pickled by an image older than the setting (a heal after an upgrade)
            await asyncio.sleep(getattr(sup.plan, "memory_interval", MEMORY_INTERVAL))
            for name, pid, _limit in sup.herd.memory_watched():
                sample = self._sampler.sample(sup.instances[name])
                sup.submit(MemorySample(name, pid, sample.rss_bytes if sample else None))
