"""What a waiting command shows while it waits: which instances are still pending, on what.

On a terminal one line on stderr is rewritten in place; otherwise a plain line is
written when what is pending changes (after a short quiet start, so a quick
command prints nothing extra). The wait itself runs in a worker thread (one
request that answers when the daemon has the outcome); this thread asks for the
status now and then only to draw the line.
"""

from __future__ import annotations

import sys
import threading
import time

from herdsman.cli.table import terminal_columns

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
# So does collections.abc, which loads `collections`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, TextIO, TypeVar

    T = TypeVar("T")

TTY_EVERY = 0.25  # seconds between redraws on a terminal
PLAIN_EVERY = 1.0  # seconds between looks when not a terminal
PLAIN_AFTER = 2.0  # a plain line only once a wait took this long
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def pending_text(
    instances: Iterable[Mapping[str, Any]], done: Callable[[Mapping[str, Any]], bool]
) -> str:
    """`web.0 (starting: ready: cannot connect ...), app (starting: waiting for db (ready))`."""
    parts = []
    for inst in instances:
        if done(inst):
            continue
        message = inst.get("message") or ""
        parts.append(f"{inst['name']} ({inst['state']}{': ' + message if message else ''})")
    return ", ".join(parts)


class PendingLine:
    """The line that shows what is pending: redrawn in place on a terminal, else
    written as a plain line when it changes (not before PLAIN_AFTER seconds)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = sys.stderr if out is None else out
        self._tty = self._out.isatty()
        self._started = time.monotonic()
        self._shown = ""
        self._frame = 0

    @property
    def every(self) -> float:
        """How often it is worth looking again."""
        return TTY_EVERY if self._tty else PLAIN_EVERY

    def show(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        out = self._out
        if not text:
            return
        if self._tty:
            self._frame += 1
            line = f"{SPINNER[self._frame % len(SPINNER)]} {elapsed:.0f}s waiting for {text}"
            width = terminal_columns()
            out.write("\r\x1b[K" + (line if len(line) < width else line[: width - 2] + "…"))
            out.flush()
            self._shown = line
        elif text != self._shown and elapsed >= PLAIN_AFTER:
            out.write(f"herdsman: waiting for {text}\n")
            out.flush()
            self._shown = text

    def clear(self) -> None:
        if self._tty and self._shown:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._shown = ""


def wait_showing(wait: Callable[[], T], look: Callable[[], str]) -> T:
    """Run `wait()` in a worker thread; meanwhile show `look()` (what is pending) on
    stderr. Returns what `wait()` returned, or raises what it raised."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(wait())
        except BaseException as err:  # handed to the main thread, raised there
            error.append(err)

    worker = threading.Thread(target=run, name="herdsman-wait", daemon=True)
    worker.start()
    line = PendingLine()
    try:
        while worker.is_alive():
            worker.join(line.every)
            if not worker.is_alive():
                break
            try:
                line.show(look())
            except Exception:  # a status that fails to come is no reason to stop waiting
                continue
    finally:
        line.clear()
    if error:
        raise error[0]
    return result[0]
