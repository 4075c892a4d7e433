"""Run a Supervisor in-process on a real event loop, with real processes."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from herdsman.config import load_config
from herdsman.config.plan import compile_plan
from herdsman.core.lifecycle import Event
from herdsman.core.states import State
from herdsman.runtime.supervisor import Managed, Supervisor


@dataclass
class Recorder:
    lines: list[tuple[str, str, str]] = field(default_factory=list)
    changes: list[tuple[str, State, State, Event]] = field(default_factory=list)

    def sink(self, instance: str, stream: str, lines: bytes, ts: float) -> None:
        self.lines.extend((instance, stream, line.decode()) for line in lines.split(b"\n"))

    def on_change(self, managed: Managed, old: State, new: State, event: Event) -> None:
        self.changes.append((managed.name, old, new, event))

    def text(self, instance: str, stream: str | None = None) -> list[str]:
        return [t for i, s, t in self.lines if i == instance and (stream is None or s == stream)]


@asynccontextmanager
async def supervised(
    tmp: Path, toml: str, *, start: bool = True
) -> AsyncIterator[tuple[Supervisor, Recorder]]:
    path = tmp / "herdsman.toml"
    path.write_text(textwrap.dedent(toml))
    plan = compile_plan(load_config(path))
    rec = Recorder()
    sup = Supervisor(plan, sink=rec.sink)
    sup.changes.subscribe(rec.on_change)
    sup.open()
    try:
        if start:
            await sup.start_services()  # every instance spawned (or failed)
        yield sup, rec
    finally:
        try:
            await sup.stop_all(5.0)
        finally:
            sup.close()


async def until(predicate: Callable[[], object], timeout: float = 15.0) -> object:  # noqa: ASYNC109 -- a test's deadline: it fails naming it
    """Wait (without blocking the loop) until `predicate()` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
