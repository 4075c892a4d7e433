"""LogFile when the disk fills, with os.write behaving as the kernel does on a full
disk: a short count for what still fit, then ENOSPC. Whatever happens, every file
holds whole lines only, and what is kept comes out in order."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from herdsman.core.logline import format_lines
from herdsman.runtime import logfile
from herdsman.runtime.logfile import LogFile
from tests.logs.conftest import parse, rotated, texts


class Disk:
    """os.write and os.writev with a budget of bytes; None is an empty disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.free: int | None = None
        real = os.write

        def write(fd: int, data: bytes | memoryview) -> int:
            if self.free is None:
                return real(fd, data)
            if self.free == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            done = real(fd, bytes(data[: self.free]))
            self.free -= done
            return done

        def writev(fd: int, parts: Sequence[bytes]) -> int:
            return write(fd, b"".join(parts))

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "writev", writev)


def batches(count: int, start: int = 0, per: int = 10) -> list[tuple[list[bytes], bytes]]:
    """(lines, formatted batch) for `count` batches of `per` numbered lines."""
    out = []
    for b in range(start, start + count):
        lines = [b"line %06d of batch %d" % (b * per + i, b) for i in range(per)]
        out.append((lines, b"".join(format_lines(b"\n".join(lines), "out", 1795000000.0 + b))))
    return out


def contents(path: Path) -> list[bytes]:
    """The texts of every line in path and its backups, oldest first; each file must
    hold whole lines only (a line split across two files fails here)."""
    return [text for f in rotated(path) for text in texts(parse(f.read_bytes()))]


def errors_list() -> tuple[list[str | None], Callable[[str, str | None], None]]:
    errors: list[str | None] = []
    return errors, lambda _name, error: errors.append(error)


def test_a_short_write_leaves_no_half_line_even_across_a_rotation(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = Disk(monkeypatch)
    errors, on_error = errors_list()
    log = LogFile(tmp / "x.log", max_bytes=2000, backups=10, on_error=on_error)
    written = batches(20)
    for _, data in written[:2]:
        log.write(data)
    disk.free = 100  # the disk fills in the middle of the next batch's second line
    for _, data in written[2:12]:  # held; the file rotates while the disk is full
        log.write(data)
    assert errors == [f"cannot write {tmp}/x.log: No space left on device"]
    disk.free = None  # space again
    for _, data in written[12:]:
        log.write(data)
    log.close()
    assert errors[-1] is None
    assert (tmp / "x.log.1").exists()
    assert contents(tmp / "x.log") == [line for lines, _ in written for line in lines]


def test_what_is_dropped_after_pending_limit_is_whole_lines(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held lines are bounded (PENDING_LIMIT bytes, the newest kept); what is dropped
    must be whole lines, so the first line kept is still a line."""
    disk = Disk(monkeypatch)
    errors, on_error = errors_list()
    log = LogFile(tmp / "x.log", max_bytes=1 << 30, backups=0, on_error=on_error)
    written = batches(400, per=500)  # ~11 MiB of formatted lines
    everything = [line for lines, _ in written for line in lines]
    log.write(written[0][1])
    disk.free = 0
    for _, data in written[1:-10]:
        log.write(data)
    disk.free = None
    for _, data in written[-10:]:
        log.write(data)
    log.close()
    assert errors == [f"cannot write {tmp}/x.log: No space left on device", None]
    kept = contents(tmp / "x.log")
    assert kept[:500] == everything[:500]
    first_held = everything.index(kept[500])
    assert kept[500:] == everything[first_held:]  # the newest, with no gap
    assert first_held > 500  # some were dropped
    held = b"".join(data for _, data in written[1:-10])
    dropped = held[: held.index(b" out " + kept[500] + b"\n") - 27]
    assert log.dropped_bytes == len(dropped)
    assert len(held) - len(dropped) <= logfile.PENDING_LIMIT
