"""The batch each log file was being written, so that a daemon killed mid-batch has
its lines neither lost nor written twice by the next one.

A pump takes bytes out of a service's pipe only after the log file has them
(pump.py), so a SIGKILL can land between the two: the next daemon, given the pipe
back by systemd's fd store, would find those lines both in the file and still in
the pipe. And a write cut short by the SIGKILL leaves the first part of a batch.
So before a batch's first write the daemon records, in one small file
(`<state_dir>/logs.pos`, a fixed-size slot per log file, one `pwrite`), the file's
size at that moment, the stream, and how many bytes of a line begun in an earlier
read (already taken from the pipe) the batch starts with; once the pump has taken
the batch's bytes from the pipe, the slot is marked done (a second `pwrite`).

The next daemon settles a slot left pending (`settle`), before it reads the pipe:
the lines the file got after the recorded size are turned back into the bytes the
service wrote, and if the pipe still starts with them they were never taken: they
are taken now, without being written again, and a last line cut short is cut off
the file (its bytes are still in the pipe, and come again whole). If the pipe does
not start with them, they had been taken: nothing to do. The one case this cannot
tell apart: killed in the microseconds between taking the bytes and marking the
slot, with the service's next output repeating them byte for byte: that repeat is
then taken as the batch, and shows once in the file instead of twice.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from herdsman.core.logline import CUT, STAMP_WIDTH, STREAMS

SLOT = 512
_HEAD = struct.Struct("<BBQQH")  # pending, stream (0 out, 1 err), size, held, name length
_NAME_MAX = SLOT - _HEAD.size


@dataclass
class Pending:
    """A batch a killed daemon had begun writing to `name`'s log file."""

    name: str
    stream: str
    size: int  # the log file's size before the batch
    held: int  # bytes the batch starts with that were taken from the pipe earlier


class Positions:
    """The slots file: one slot per log file, given out in order of first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._slots: dict[str, int] = {}

    def pending(self) -> dict[tuple[str, str], Pending]:
        """The batches a previous daemon left unfinished, by (instance, stream)."""
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except OSError:
            return {}
        data += bytes(-len(data) % SLOT)  # the last slot is written only up to its name
        found: dict[tuple[str, str], Pending] = {}
        for offset in range(0, len(data), SLOT):
            busy, stream, size, held, length = _HEAD.unpack_from(data, offset)
            if not busy or stream > 1 or length > _NAME_MAX:
                continue
            start = offset + _HEAD.size
            name = data[start : start + length].decode("utf-8", "replace")
            found[(name, STREAMS[stream])] = Pending(name, STREAMS[stream], size, held)
        return found

    def open(self) -> None:
        """Start afresh (after `pending` was read): every slot free."""
        self.close()
        self._slots.clear()
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)

    def begin(self, name: str, stream: str, size: int, held: int) -> None:
        """A batch of `stream` begins at `size` bytes into `name`'s log file."""
        if self._fd < 0:
            return
        encoded = name.encode()[:_NAME_MAX]
        slot = self._slots.setdefault(name, len(self._slots))
        head = _HEAD.pack(1, STREAMS.index(stream), size, held, len(encoded))
        with contextlib.suppress(OSError):  # a full disk: only the exactness is lost
            os.pwrite(self._fd, head + encoded, slot * SLOT)

    def done(self, name: str) -> None:
        """The batch begun last for `name` is written and taken from its pipe."""
        slot = self._slots.get(name)
        if slot is not None and self._fd >= 0:
            with contextlib.suppress(OSError):
                os.pwrite(self._fd, b"\0", slot * SLOT)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def raw_bytes(formatted: bytes) -> bytes:
    """What the service wrote, from whole log lines (`<time> <stream> <text>\\n`): each
    text with its newline, except a `+` piece, which the next line continues."""
    out = []
    for line in formatted.split(b"\n")[:-1]:
        stream, _, text = line[STAMP_WIDTH + 1 :].partition(b" ")
        out.append(text if stream.endswith(CUT.encode()) else text + b"\n")
    return b"".join(out)


def settle(pending: Pending, log: Path, head: bytes) -> tuple[int, int]:
    """For a batch left pending: (bytes to cut the log file back to, bytes to take
    from the pipe without writing them), given `head`, what the pipe holds now.
    (-1, 0) when there is nothing to do."""
    try:
        with open(log, "rb") as file:
            file.seek(pending.size)
            written = file.read()
    except OSError:
        return -1, 0
    whole = written[: written.rfind(b"\n") + 1]  # a write cut short ends mid-line
    raw = raw_bytes(whole)[pending.held :]
    if not written or not head.startswith(raw):
        return -1, 0  # nothing was written, or what was written was taken from the pipe
    return pending.size + len(whole), len(raw)
