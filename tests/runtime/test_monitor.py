"""What the sampler reads of a process tree, against psutil's own view of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from herdsman.runtime.monitor import own_usage, sample_tree
from tests.conftest import wait_for

TICK = 0.01  # /proc's CPU times are in clock ticks; the two readers may round apart

# A tree of three: sh, a busy Python child holding 40 MiB and a few more fds, a sleep.
TREE = (
    f'{sys.executable} -c \'import os, time; x = bytearray(40 << 20); x[::4096] = b"x" * 10240;'
    ' fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(7)]; print("up", flush=True);'
    " end = time.monotonic() + 30\n"
    "while time.monotonic() < end: pass' & sleep 30 & wait"
)


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[bytes]]:
    root = subprocess.Popen(["sh", "-c", TREE], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert root.stdout is not None
        assert root.stdout.readline() == b"up\n"
        wait_for(lambda: len(psutil.Process(root.pid).children(recursive=True)) == 2)
        yield root
    finally:
        os.killpg(root.pid, signal.SIGKILL)
        root.wait()


def test_a_sample_covers_the_whole_tree_as_psutil_sees_it(
    tree: subprocess.Popen[bytes],
) -> None:
    procs = [psutil.Process(tree.pid), *psutil.Process(tree.pid).children(recursive=True)]
    wait_for(lambda: cpu_of(procs) > 0.2)
    first = sample_tree(tree.pid, None)
    rss = sum(p.memory_info().rss for p in procs)
    fds = sum(p.num_fds() for p in procs)
    assert first is not None
    assert first.processes == 3
    assert first.open_fds == fds
    assert abs(first.rss_bytes - rss) < 2 << 20  # read a moment apart
    assert first.rss_bytes > 40 << 20
    # No earlier sample: the average since the tree started, of which the busy child
    # has had 0.2 s of CPU at least (how much more depends on the machine's load).
    assert first.cpu_percent > 1
    # Until the busy child has had another 0.1 s of CPU, however long that takes on
    # a loaded machine (a fixed 0.5 s gave it under 5% of a CPU at a load of 40).
    wait_for(lambda: cpu_of(procs) > first.cpu_seconds + 0.1)
    # psutil's reads bracket the sample's: the child runs on meanwhile, and the test
    # may wait for a CPU between any two reads.
    before = cpu_of(procs)
    second = sample_tree(tree.pid, first)
    after = cpu_of(procs)
    assert second is not None
    assert before - TICK <= second.cpu_seconds <= after + TICK
    rate = (second.cpu_seconds - first.cpu_seconds) / (second.at - first.at) * 100
    assert second.cpu_percent == pytest.approx(rate, abs=0.1)
    assert 0 < second.cpu_percent <= 100 * (os.cpu_count() or 1)


def cpu_of(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def test_a_tree_whose_main_process_is_gone_has_no_sample() -> None:
    child = subprocess.Popen(["sleep", "30"])
    child.kill()
    wait_for(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE)
    assert sample_tree(child.pid, None) is None  # a zombie holds nothing
    child.wait()
    assert sample_tree(child.pid, None) is None


def test_the_daemons_own_usage() -> None:
    cpu, rss = own_usage()
    me = psutil.Process()
    assert abs(rss - me.memory_info().rss) < 2 << 20
    assert abs(cpu - sum(me.cpu_times()[:2])) < 0.1


def test_the_next_sample_of_a_tree_reuses_its_processes(
    tree: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A psutil.Process made afresh reads the process's stat and the system's
    # /proc/stat before the sample reads anything: a tree's next sample makes one
    # only for a process it has not seen.
    made: list[int] = []
    real = psutil.Process

    def counted(pid: int) -> psutil.Process:
        made.append(pid)
        return real(pid)

    monkeypatch.setattr(psutil, "Process", counted)
    first = sample_tree(tree.pid, None)
    assert first is not None
    assert len(made) == 3
    second = sample_tree(tree.pid, first)
    assert second is not None
    assert len(made) == 3
    assert second.processes == 3
    assert second.rss_bytes > 40 << 20
    assert second.cpu_seconds >= first.cpu_seconds
    # A process it has not seen (the busy child, as if it were new) is made afresh.
    busy = max(second.members, key=lambda pid: second.members[pid].memory_info().rss)
    del second.members[busy]
    third = sample_tree(tree.pid, second)
    assert third is not None
    assert made[3:] == [busy]
    assert third.processes == 3
