"""A child writing 200,000 numbered lines as fast as it can: every line reaches
`<log_dir>/<instance>.log` in order, unchanged, once, whole, with its prefix; the
same on stdout and stderr at once, and under rotation."""

from __future__ import annotations

import itertools
from pathlib import Path

from herdsman.runtime.pump import READ_SIZE
from tests.conftest import wait_for
from tests.logs import child as prog
from tests.logs.conftest import Herd, child, parse, tail, texts

N = 200_000
MAX_BYTES = 1024 * 1024


def flood_config(*args: object, log: str = 'max_bytes = "1GiB"') -> str:
    return (
        "[services.flood]\n"
        f"command = {child('flood', N, *args)}\n"
        'restart = "never"\n'
        f"log = {{ {log} }}\n"
    )


def expected(stream: bytes, mix: bool) -> list[bytes]:
    err = stream == b"err"
    return [prog.line(i) for i in range(N) if (mix and prog.is_err(i)) == err]


def finish(herd: Herd, mix: bool) -> None:
    """Wait until the last line of each stream is in the file, then take the daemon
    down: what the file holds then is final (nothing can come later)."""
    streams = [(b"out", False), (b"err", True)] if mix else [(b"out", False)]
    needles = [
        b" %s %s\n" % (name, prog.line(max(i for i in range(N - 20, N) if prog.is_err(i) == err)))
        for name, err in streams
    ]
    if not mix:
        needles = [b" out " + prog.line(N - 1) + b"\n"]
    log = herd.log("flood")
    # One read (one batch) of the other stream may follow a stream's last line.
    window = 2 * READ_SIZE + 64 * 1024
    wait_for(lambda: all(needle in tail(log, window) for needle in needles), 30)
    wait_for(lambda: herd.instance("flood")["state"] == "exited", 10)
    assert herd.instance("flood")["exit_code"] == 0
    herd.down()


def check_lines(data: bytes, mix: bool) -> None:
    entries = parse(data)
    assert texts(entries, b"out") == expected(b"out", mix)
    assert texts(entries, b"err") == expected(b"err", mix)
    assert len(entries) == N
    stamps = [ts for ts, _, _ in entries]
    assert stamps == sorted(stamps), "timestamps go back in time"


def test_every_line_in_order_unchanged(herd: Herd) -> None:
    herd.up(flood_config())
    finish(herd, mix=False)
    assert herd.files("flood") == [herd.log("flood")]  # no rotation at 1 GiB
    check_lines(herd.log("flood").read_bytes(), mix=False)


def test_stdout_and_stderr_at_once(herd: Herd) -> None:
    herd.up(flood_config("--mix"))
    finish(herd, mix=True)
    data = herd.log("flood").read_bytes()
    check_lines(data, mix=True)
    assert b" err " in data
    assert b" out " in data


def test_under_rotation_every_line_once_in_order(herd: Herd) -> None:
    herd.up(flood_config(log='max_bytes = "1MiB", backups = 50'))
    finish(herd, mix=False)
    files = herd.files("flood")
    assert 10 <= len(files) <= 51, [f.name for f in files]
    check_lines(b"".join(f.read_bytes() for f in files), mix=False)
    check_sizes(files, MAX_BYTES)


def check_sizes(files: list[Path], max_bytes: int) -> None:
    """The bound the code keeps: it rotates before a batch (the lines of one read,
    written with one write) that would take a non-empty file past max_bytes. So a
    file is at most max_bytes unless it holds a single batch (one timestamp, one
    stream), and a rotated file was full: the next file's first batch did not fit."""
    for older, newer in itertools.pairwise(files):
        size = older.stat().st_size
        first = parse(newer.read_bytes())
        batch = [e for e in first if e[:2] == first[0][:2]]
        batch_bytes = sum(len(ts) + len(s) + len(text) + 3 for ts, s, text in batch)
        assert size + batch_bytes > max_bytes, f"{older.name} rotated early at {size} bytes"
    for f in files:
        entries = parse(f.read_bytes())
        one_batch = len({e[:2] for e in entries}) == 1
        assert f.stat().st_size <= max_bytes or one_batch, f"{f.name}: {f.stat().st_size}"


def test_a_batch_larger_than_max_bytes_is_one_file(herd: Herd) -> None:
    """Writes of 16 KiB of whole lines against max_bytes of 4 KiB: each read is one
    batch, written whole into a fresh file, so files overshoot by one batch only."""
    herd.up(
        "[services.bursts]\n"
        f"command = {child('bursts', 12, 16 * 1024)}\n"
        'restart = "never"\n'
        'log = { max_bytes = "4KiB", backups = 100 }\n'
    )
    last = b"burst 011 line 00779"
    wait_for(lambda: last in tail(herd.log("bursts"), 200), 20)
    herd.down()
    files = herd.files("bursts")
    data = b"".join(f.read_bytes() for f in files)
    lines = texts(parse(data))
    assert len(lines) == 12 * (16 * 1024 // 21)
    assert lines[-1] == last
    check_sizes(files, 4096)
    assert any(f.stat().st_size > 4096 for f in files)  # the overshoot does happen
