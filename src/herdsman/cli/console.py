"""Foreground output of `herdsman up`: every line as `name │ line`.

Each instance gets a colour on a TTY (plain text otherwise). Lines are gathered
and written once per event-loop turn, so a burst of output costs one write.
herdsman's own messages (started, exited, failed) use the same prefix, dimmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import BinaryIO

from herdsman.cli.table import INSTANCE_COLOURS

SEPARATOR = " │ ".encode()


class Console:
    """`names`: the instances of the plan `up` starts with, in its order (their
    prefixes are as wide as the longest, their colours in turn); one a reload adds
    gets a prefix too, in a colour after theirs."""

    def __init__(self, names: Iterable[str], out: BinaryIO, *, colour: bool) -> None:
        self._names = list(names)
        self._out = out
        self._colour = colour
        # Each made as its instance first says something: made for every instance
        # here, they came before the first spawn (5.7M instructions at 2,000).
        self._prefixes: dict[str, bytes] = {}
        self._order: dict[str, int] = {}  # each name's place (its colour): see _prefix
        self._width = 0
        self._pending: list[bytes] = []
        self._scheduled = False
        self._broken = False

    def _prefix(self, name: str) -> bytes:
        if not self._order:
            self._order = {n: i for i, n in enumerate(self._names)}
            self._width = max(max(map(len, self._order), default=0), len("herdsman"))
        index = self._order.setdefault(name, len(self._order))
        label = name.ljust(self._width).encode()
        if self._colour:
            palette = INSTANCE_COLOURS
            code = 90 if name == "herdsman" else palette[index % len(palette)]
            prefix = b"\x1b[%dm" % code + label + SEPARATOR + b"\x1b[0m"
        else:
            prefix = label + SEPARATOR
        self._prefixes[name] = prefix
        return prefix

    def lines(self, instance: str, stream: str, lines: bytes, ts: float = 0.0) -> None:
        """`lines` joined by \\n, as the pumps hand them over."""
        if self._broken:
            return
        prefix = self._prefixes.get(instance) or self._prefix(instance)
        self._pending.append(prefix + lines.replace(b"\n", b"\n" + prefix) + b"\n")
        self._schedule()

    def say(self, instance: str | None, text: str) -> None:
        """herdsman's own message, about an instance or (None) about itself."""
        body = (text if instance is None else f"{instance}: {text}").encode()
        if self._colour:
            body = b"\x1b[2m" + body + b"\x1b[0m"
        self.lines("herdsman", "out", body)

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending or self._broken:
            self._pending.clear()
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self._out.write(data)
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError):
            # Nobody reads our output any more; the services must keep running.
            self._broken = True
