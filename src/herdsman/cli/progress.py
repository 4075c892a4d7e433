"""What a waiting command shows while it waits: which instances are still pending, on what.

On a terminal one line on stderr is rewritten in place; otherwise a plain line is
written when what is pending changes (after a short quiet start, so a quick
command prints nothing extra). The wait itself runs in a worker thread (one
request that answers when the daemon has the outcome); this thread asks for the
status now and then only to draw the line.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
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


def wait_showing(
    wait: Callable[[], T],
    look: Callable[[], str],
    *,
    out: TextIO | None = None,
) -> T:
    """Run `wait()` in a worker thread; meanwhile show `look()` (what is pending)
    on `out` (stderr). Returns what `wait()` returned, or raises what it raised."""
    out = sys.stderr if out is None else out
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(wait())
        except BaseException as err:  # handed to the main thread, raised there
            error.append(err)

    worker = threading.Thread(target=run, name="herdsman-wait", daemon=True)
    worker.start()
    tty = out.isatty()
    started = time.monotonic()
    shown = ""
    frame = 0
    try:
        while worker.is_alive():
            worker.join(TTY_EVERY if tty else PLAIN_EVERY)
            if not worker.is_alive():
                break
            try:
                text = look()
            except Exception:  # a status that fails to come is no reason to stop waiting
                continue
            elapsed = time.monotonic() - started
            if tty:
                frame += 1
                line = f"{SPINNER[frame % len(SPINNER)]} {elapsed:.0f}s waiting for {text}"
                width = shutil.get_terminal_size().columns
                out.write("\r\x1b[K" + (line if len(line) < width else line[: width - 2] + "…"))
                out.flush()
                shown = line
            elif text and text != shown and elapsed >= PLAIN_AFTER:
                out.write(f"herdsman: waiting for {text}\n")
                out.flush()
                shown = text
    finally:
        if tty and shown:
            out.write("\r\x1b[K")
            out.flush()
    if error:
        raise error[0]
    return result[0]
