"""Every instance's last lines in memory, and the followers of new ones.

They answer `logs` (the last lines of one instance or of all, merged by time) and
`logs -f` (new lines as they are read); the log files on disk are written apart
from this, by the daemon's line sink.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Iterable

from herdsman.runtime.documents import LogDocument, log_document
from herdsman.runtime.followers import Broadcast, Closing
from herdsman.runtime.handover import TailEntry
from herdsman.runtime.pump import split_lines

LINES_KEPT = 1000  # per instance, for `logs` and the start of `logs -f`
# Bytes of lines a `logs -f` follower may fall behind before it is dropped (its
# stream ends; the CLI subscribes again and reads the rest from the log files):
# counted in items, one slow follower of a flood held hundreds of megabytes.
FOLLOWER_BYTES = 8 * 1024 * 1024
CHUNK_COST = 200  # bytes a held batch costs besides its lines (its tuple, bytes, float)

LogChunk = tuple[float, str, str, bytes]  # lines read at once, joined by \n


class Tail:
    """The last lines of one instance, kept as the batches they were read in.

    Per batch, not per line: a flooding child sends thousands of lines a read,
    and a Python object per line would cost more than writing them to disk. A
    batch stays the bytes it was read as (lines joined by \\n) and is split only
    when someone asks for the lines.
    """

    __slots__ = ("_batches", "_count", "_instance", "_limit")

    def __init__(self, instance: str, limit: int) -> None:
        self._instance = instance
        self._limit = limit
        # Made by the first line: a deque costs 600 bytes, and most services of a
        # herd of thousands never write one.
        self._batches: deque[tuple[float, str, bytes, int]] | None = None
        self._count = 0

    def add(self, ts: float, stream: str, lines: bytes, count: int) -> None:
        """A batch of `count` lines joined by \\n (the count is known to the caller)."""
        batches = self._batches
        if batches is None:
            batches = self._batches = deque()
        if count > self._limit:
            # A flood's batch: its last lines are all we keep. Keeping the whole
            # megabyte instead would hold memory, and fragment what the next
            # batches are read into (page faults on every batch).
            batches.clear()
            self._count = 0
            lines, count = last_lines(lines, count, self._limit), self._limit
        batches.append((ts, stream, lines, count))
        self._count += count
        while self._count - batches[0][3] >= self._limit:
            self._count -= batches.popleft()[3]

    def entries(self) -> list[TailEntry]:
        """The last `limit` lines, oldest first."""
        name = self._instance
        every = [
            (ts, name, stream, line)
            for ts, stream, lines, _ in self._batches or ()
            for line in split_lines(lines)
        ]
        return every[-self._limit :]


def last_lines(lines: bytes, count: int, keep: int) -> bytes:
    """The last `keep` of the `count` lines in `lines` (joined by \\n; keep < count).
    Where they start is guessed from the mean line length, then found exactly with
    one count over the guess and a few steps of find, not a walk over every line."""
    start = lines.rfind(b"\n", 0, len(lines) - len(lines) * keep // count) + 1
    guess = lines[start:]
    # The newlines in it, counted by a replace that drops them: it finds them with
    # memchr, where bytes.count (3.11) looks at every byte, and copies the rest once;
    # twice as fast as count on a flood's lines, and as a replace that doubles them.
    held = len(guess) - len(guess.replace(b"\n", b"")) + 1
    if held == keep:
        return guess
    while held > keep:
        start = lines.find(b"\n", start) + 1
        held -= 1
    while held < keep:
        start = lines.rfind(b"\n", 0, start - 1) + 1
        held += 1
    return lines[start:]


def _size(chunk: LogChunk) -> int:
    return CHUNK_COST + len(chunk[3])


class Tails:
    """The last `limit` lines of each tracked instance, and who follows new ones."""

    def __init__(self, limit: int = LINES_KEPT) -> None:
        self._limit = limit
        self._tails: dict[str, Tail] = {}
        self._followers: Broadcast[LogChunk] = Broadcast(FOLLOWER_BYTES, _size)

    def track(self, name: str) -> None:
        """Keep lines of `name` (an instance already tracked keeps its lines)."""
        if name not in self._tails:
            self._tails[name] = Tail(name, self._limit)

    def forget(self, name: str) -> None:
        self._tails.pop(name, None)

    def add(self, instance: str, stream: str, lines: bytes, ts: float, count: int) -> None:
        """A batch of `count` lines joined by \\n, read at `ts`."""
        self._tails[instance].add(ts, stream, lines, count)
        if self._followers.followed:
            self._followers.publish((ts, instance, stream, lines))

    def logs(self, names: Iterable[str] | None, n: int) -> list[LogDocument]:
        """The last `n` lines of `names` (default: every instance), oldest first."""
        tails = self._tails.values() if names is None else [self._tails[name] for name in names]
        merged = list(heapq.merge(*(tail.entries() for tail in tails)))
        return [log_document(*e) for e in merged[-n:]] if n else []

    def follow(self, names: set[str] | None) -> AsyncIterator[LogDocument]:
        """New lines of `names` (default: every instance) from now on. Subscribed at
        the call, not at the first `anext`, so the API can take the backlog right
        after and no line slips in between."""
        follower = self._followers.follow()

        async def documents() -> AsyncIterator[LogDocument]:
            async for ts, name, stream, lines in follower:
                if names is None or name in names:
                    for line in split_lines(lines):
                        yield log_document(ts, name, stream, line)

        return Closing(documents(), follower)

    def hand_over(self) -> dict[str, list[TailEntry]]:
        """Every instance's lines, as plain data for a new image of the daemon."""
        return {name: tail.entries() for name, tail in self._tails.items()}

    def resume(self, handed: dict[str, list[TailEntry]]) -> None:
        """Lines a previous image handed over, for the instances tracked here."""
        for name, entries in handed.items():
            tail = self._tails.get(name)
            if tail is not None:
                for ts, _instance, stream, line in entries:
                    tail.add(ts, stream, line, 1)

    def close(self) -> None:
        """End the followers' streams."""
        self._followers.end()
