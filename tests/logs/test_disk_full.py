"""The log disk fills up (a 1 MiB tmpfs as log_dir): the service keeps running,
`status` and herdsman.log say so (the log once), and writing resumes when there is
space again, with whole lines only and nothing lost that was held.

What the daemon can recover from: lines it read while the disk was full are held,
up to PENDING_LIMIT (8 MiB, the newest kept), and written with the next batch once
a write succeeds. So freeing a little space works when what is held fits (the
service's rotated files deleted after a short outage); after a long outage the
held 8 MiB need that much room (here: the tmpfs remounted bigger). Every test
skips, saying why, where a tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.runtime.logfile import PENDING_LIMIT
from tests.conftest import wait_for
from tests.logs import child as prog
from tests.logs.conftest import Herd, child, parse, rotated, texts

MAX_BYTES = 128 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here, so no small file system to fill")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    proc = subprocess.run(mount, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs to fill ({proc.stderr.strip() or proc.returncode}):"
            " needs root or CAP_SYS_ADMIN"
        )
    try:
        yield
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def config(n: int, done: Path) -> str:
    return (
        '[settings]\nlog_dir = "logs"\n\n'
        "[services.chatty]\n"
        f"command = {child('chatty', n, done)}\n"
        'start_seconds = "0.1s"\n'
        f'log = {{ max_bytes = "{MAX_BYTES // 1024}KiB", backups = 20 }}\n'
    )


FULL = "cannot write {}: No space left on device"


def fill(herd: Herd, n: int) -> int:
    """Start the chatty service and wait until the disk is full, it has written all
    n lines and herdsman has read them all (a tick came after); its pid."""
    done = herd.dir / "done"
    herd.log_dir = herd.dir / "logs"
    herd.up(config(n, done))
    wait_for(done.exists, 30)
    error = FULL.format(herd.log("chatty"))
    wait_for(lambda: herd.instance("chatty")["message"] == error, 10)
    wait_for(lambda: "tick" in herd.cli("logs", "-n", "1", "chatty").stdout, 10)
    inst = herd.instance("chatty")
    assert inst["state"] == "running"
    assert inst["message"] == error
    return int(inst["pid"])


def resumed(herd: Herd, pid: int) -> None:
    """Writing resumes: status clears, new lines land in the file; same process."""
    wait_for(lambda: herd.instance("chatty")["message"] != FULL.format(herd.log("chatty")), 10)
    before = written(herd)
    wait_for(lambda: written(herd) > before, 10)
    inst = herd.instance("chatty")
    assert inst["state"] == "running"
    assert inst["pid"] == pid
    assert inst["restarts"] == 0
    herd.down()
    own = herd.daemon_log().splitlines()
    error = f"chatty: {FULL.format(herd.log('chatty'))}; the service keeps running"
    assert sum(error in line for line in own) == 1, own
    assert sum("chatty: writing its log file again" in line for line in own) == 1, own


def written(herd: Herd) -> int:
    """Bytes in the service's log files: the current one alone would shrink when it is
    rotated (a resumed file near max_bytes rotates at the next tick, and the fresh one
    took minutes of ticks to grow past the old size)."""
    total = 0
    for path in herd.log_dir.glob(f"{herd.log('chatty').name}*"):
        with contextlib.suppress(FileNotFoundError):  # renamed by a rotation meanwhile
            total += path.stat().st_size
    return total


def kept_lines(herd: Herd) -> tuple[list[int], list[int]]:
    """(numbers of the numbered lines, numbers of the ticks) across the files, oldest
    first; each file must hold whole, well-formed lines, numbered lines unchanged."""
    numbers, ticks = [], []
    for f in rotated(herd.log("chatty")):
        for text in texts(parse(f.read_bytes())):
            if text.startswith(b"tick "):
                ticks.append(int(text[5:]))
            else:
                assert not ticks, "a numbered line after a tick"
                i = int(text[:7])
                assert text == prog.line(i)
                numbers.append(i)
    return numbers, ticks


def test_disk_filled_by_the_service_then_its_rotated_files_deleted(herd: Herd) -> None:
    n = 15_000  # ~1.3 MB of log lines: fills 1 MiB, and what is held fits once freed
    with tmpfs(herd.dir / "logs", "1m"):
        try:
            pid = fill(herd, n)
            for backup in herd.log_dir.glob("chatty.log.*"):
                backup.unlink(missing_ok=True)
            resumed(herd, pid)
        finally:
            herd.down()
        numbers, ticks = kept_lines(herd)
    # The oldest lines went with the deleted files; from there on, nothing is lost.
    assert numbers
    assert numbers[0] > 0
    assert numbers == list(range(numbers[0], n))
    assert ticks == list(range(len(ticks)))


def test_a_long_outage_drops_the_oldest_held_lines_whole_then_resumes(herd: Herd) -> None:
    n = 140_000  # ~12 MB: more than PENDING_LIMIT is read while the disk is full
    with tmpfs(herd.dir / "logs", "1m"):
        try:
            pid = fill(herd, n)
            remount(herd.log_dir, "64m")
            resumed(herd, pid)
        finally:
            herd.down()
        numbers, ticks = kept_lines(herd)
        sizes = {f.name: f.stat().st_size for f in rotated(herd.log("chatty"))}
    # Lines before the disk filled, one gap (the oldest held lines, dropped whole),
    # then everything up to the last line, and every tick.
    gap = next(k for k in range(1, len(numbers)) if numbers[k] != numbers[k - 1] + 1)
    assert numbers[:gap] == list(range(gap))
    assert numbers[gap:] == list(range(numbers[gap], n))
    held = sum(len(prog.line(i)) + 33 for i in range(numbers[gap], n))
    assert held <= PENDING_LIMIT
    assert ticks == list(range(len(ticks)))
    # The held lines went out as one batch into a fresh file: the one overshoot.
    assert max(sizes.values()) > MAX_BYTES
