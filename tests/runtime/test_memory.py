"""What a running instance holds in the supervisor, measured with tracemalloc.

The daemon's fixed part is what it imports: modules it never needs stay out.

A daemon keeps thousands of instances for as long as it runs: what each running
one holds beyond its plan and lifecycle (its pumps and their reader registrations,
the reaper's watch of its process, its pipes) is measured here against a ceiling
that only goes down. Real processes; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import gc
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

from herdsman.config import load_config
from herdsman.config.plan import compile_plan
from herdsman.core.states import State
from tests.runtime.harness import supervised, until

INSTANCES = 100


def test_a_running_instance_holds_little_beyond_its_lifecycle(tmp: Path) -> None:
    async def body() -> tuple[float, str]:
        async with supervised(
            tmp,
            f"""
            [services.first]
            command = "sleep 60"
            replicas = {INSTANCES}
            start_seconds = 0

            [services.s]
            command = "sleep 60"
            replicas = {INSTANCES}
            start_seconds = 0
            """,
            start=False,
        ) as (sup, rec):
            # A first wave as large pays what a daemon pays once, or once per so
            # many instances, whatever the test's worker did before it: modules
            # imported on first use, the spawner's caches, tables grown to hold a
            # wave. What the second holds is what each instance costs.
            await sup.start_services(["first"])
            members = [m for m in sup.instances.values() if m.plan.service == "s"]
            gc.collect()
            tracemalloc.start(8)
            try:
                before = tracemalloc.get_traced_memory()[0]
                wave = sup.start_services(["s"])
                await until(lambda: all(m.state is State.RUNNING for m in members), 20)
                # And the wave's own bookkeeping gone (it goes as the wave is out):
                # under load the instances ran a turn or two before it was.
                await asyncio.wait_for(wave, 20)
                rec.changes.clear()  # the test's own record of them
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - before
                # Where it is held, should the bound fail (allocations made since
                # the start of tracing and still alive, by where they were made).
                where = _heaviest(tracemalloc.take_snapshot())
            finally:
                tracemalloc.stop()
            return held / INSTANCES, where

    per_instance, where = asyncio.run(body())
    assert per_instance < 1300, f"{per_instance:.0f} bytes per running instance; held by:\n{where}"


def _heaviest(snapshot: tracemalloc.Snapshot) -> str:
    """The ten places holding the most, each by its innermost herdsman frames."""
    lines = []
    for stat in snapshot.statistics("traceback")[:10]:
        ours = [f for f in stat.traceback if "herdsman" in f.filename] or list(stat.traceback)
        frames = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in ours[-3:][::-1])
        lines.append(f"  {stat.size:,} B in {stat.count} blocks: {frames}")
    return "\n".join(lines)


# Modules the daemon does without (and what loaded them): shutil (for `which`)
# brought zlib, bz2 and lzma; datetime (for the log lines' time) half a megabyte.
NOT_IMPORTED = ("shutil", "zlib", "bz2", "lzma", "datetime")


def test_the_daemon_does_not_import_what_it_does_not_need() -> None:
    # What `herdsman up` imports, in a fresh interpreter.
    code = (
        "import sys, herdsman.cli.main, herdsman.cli.up;"
        f"print(' '.join(m for m in {NOT_IMPORTED!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_replicas_share_what_they_have_in_common_in_the_daemons_plan(tmp: Path) -> None:
    config = tmp / "herdsman.toml"
    config.write_text(
        "[services.same]\n"
        'command = "sleep 60"\n'
        "replicas = 3\n"
        'env = { A = "1" }\n'
        'health = { exec = "true" }\n'
        "[services.own]\n"
        'command = "sleep {replica}"\n'
        "replicas = 3\n"
        'env = { R = "{replica}", S = "same" }\n'
        'ready = { tcp = "127.0.0.1:90{replica}" }\n'
        'health = { exec = "true" }\n'
    )
    # As the daemon gets it: pickled by the validating helper.
    plan = pickle.loads(pickle.dumps(compile_plan(load_config(config))))
    first, *others = plan.services["same"].instances
    for other in others:
        assert other.argv is first.argv
        assert other.env is first.env
        assert other.health is first.health
    # Each replica has its own of what differs by its {replica}, and shares the rest.
    zero, one, two = plan.services["own"].instances
    assert [(i.argv, i.env, i.ready and i.ready.address) for i in (zero, one, two)] == [
        (("sleep", str(n)), {"R": str(n), "S": "same"}, ("127.0.0.1", 900 + n)) for n in range(3)
    ]
    assert zero.health is one.health is two.health is not None
