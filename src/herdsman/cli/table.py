"""The `herdsman status` table and the small formats it is made of.

Column widths come from the content; on a terminal the state is coloured and the
last column (the message) is cut to fit the screen, elsewhere the text stays plain
and whole so that scripts and pipes see everything.
"""

from __future__ import annotations

import itertools
import os
import sys

from herdsman.core import statenames

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
# So does collections.abc, which loads `collections`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import IO, Any, TextIO

STATE_COLOURS: dict[str, str] = {
    statenames.RUNNING: "32",
    statenames.STARTING: "33",
    statenames.RESTARTING: "33",
    statenames.STOPPING: "33",
    statenames.FAILED: "31",
    statenames.EXITED: "2",
    statenames.STOPPED: "2",
}
# The same palette as the foreground `up`, so an instance keeps its colour.
INSTANCE_COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)
RIGHT_ALIGNED = frozenset({"PID", "UPTIME", "RESTARTS", "CPU", "MEM"})
MESSAGE_MIN_WIDTH = 10  # below this a cut message says nothing; let the line wrap


def wants_colour(out: IO[Any]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return os.isatty(out.fileno())
    except (ValueError, OSError):
        return False


def terminal_columns() -> int:
    """The terminal's width as `shutil.get_terminal_size()` finds it: $COLUMNS, else
    the terminal on stdout, else 80. Without `shutil`, which loads bz2, lzma, zlib
    and `re` (a tenth of a client command's start-up)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    if sys.__stdout__ is None:
        return 80
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (ValueError, OSError):
        return 80


def terminal_width(out: TextIO) -> int | None:
    """Columns of the terminal `out` writes to; None when it is not a terminal."""
    try:
        if not os.isatty(out.fileno()):
            return None
        return os.get_terminal_size(out.fileno()).columns
    except (ValueError, OSError):
        return None


def uptime(seconds: float | None) -> str:
    """`45s`, `3m12s`, `2h05m`, `3d04h`: two units at most, the larger first."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def memory(rss_bytes: int | None) -> str:
    """Resident memory in MiB (`12.4M`), or GiB from 1024 MiB on (`1.5G`)."""
    if rss_bytes is None:
        return "-"
    mib = rss_bytes / 2**20
    return f"{mib:.1f}M" if mib < 1024 else f"{mib / 1024:.1f}G"


def cpu(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.1f}%"


def ready_health(inst: Mapping[str, Any]) -> str:
    """`yes`, `no`, `yes/healthy`...; `-` when no process runs (nothing to be ready)."""
    return _ready_health(inst.get("pid"), inst.get("ready"), inst.get("health"))


def _ready_health(pid: int | None, ready: bool | None, health: str | None) -> str:
    if pid is None:
        return "-"
    text = "yes" if ready else "no"
    return f"{text}/{health}" if health else text


def message(inst: Mapping[str, Any]) -> str:
    """The instance's last message, else how it ended when it is not running."""
    return _message(
        inst.get("message"), inst.get("pid"), inst.get("exit_code"), inst.get("exit_signal")
    )


def _message(
    text: str | None, pid: int | None, exit_code: int | None, exit_signal: str | None
) -> str:
    if text:
        return str(text)
    if pid is None:
        if exit_signal:
            return f"killed by {exit_signal}"
        if exit_code is not None:
            return f"exit code {exit_code}"
    return ""


# The keys of an instance the table is made of: what `status` asks the daemon for.
COLUMNS = (
    "name",
    "state",
    "pid",
    "uptime",
    "restarts",
    "ready",
    "health",
    "cpu_percent",
    "rss_bytes",
    "message",
    "exit_code",
    "exit_signal",
)


# ... and what PATTERNs need: the service they may name, and what the detail view of
# one instance adds.
DETAIL = ("service", "since", "processes", "command", "checks")


def columns_of(instances: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """Instance documents as columns of `keys` (from a daemon that answers
    `?columns=` with documents: it is older than the parameter)."""
    return {key: [i.get(key) for i in instances] for key in keys}


def render_status(columns: Mapping[str, Sequence[Any]], *, colour: bool, width: int | None) -> str:
    """The status table of the instances in `columns` (COLUMNS, a list of values each),
    header included, as lines ending in newlines. Built a column at a time, and each
    row joined from its padded cells: thousands of rows cost a few calls per cell."""
    pids = columns["pid"]
    ready = "READY/HEALTH" if any(columns["health"]) else "READY"
    # Each column but the message: its title, the text of a value (None: the values
    # are the texts, different on every row), and its values. The other columns
    # repeat a few values (a herd started together shares most of its uptimes, in
    # whole seconds): each distinct one is written, measured and padded once.
    shown: list[tuple[str, Callable[[Any], str] | None, Sequence[Any]]] = [
        ("INSTANCE", None, [str(name) for name in columns["name"]]),
        ("STATE", str, columns["state"]),
        ("PID", None, ["-" if pid is None else str(pid) for pid in pids]),
        ("UPTIME", uptime, [None if s is None else int(s) for s in columns["uptime"]]),
        ("RESTARTS", lambda restarts: str(restarts or 0), columns["restarts"]),
        (ready, str, list(map(_ready_health, pids, columns["ready"], columns["health"]))),
        ("CPU", cpu, columns["cpu_percent"]),
        ("MEM", memory, columns["rss_bytes"]),
    ]
    header, cells = [], []
    for title, text, values in shown:
        pad = str.rjust if title in RIGHT_ALIGNED else str.ljust
        if text is None:
            w = max([len(title), *map(len, values)])
            cells.append(list(map(pad, values, itertools.repeat(w))))
        else:
            texts = {value: text(value) for value in set(values)}
            w = max([len(title), *map(len, texts.values())])
            if title == "STATE" and colour:  # padded, then coloured: escapes take no room
                padded = {value: _coloured_state(t, w) for value, t in texts.items()}
            else:
                padded = {value: pad(t, w) for value, t in texts.items()}
            cells.append(list(map(padded.__getitem__, values)))
        header.append(pad(title, w))
    # The message after the others and a gap after each, cut to what is left of a
    # terminal's line; no gap either when it is blank, so no line ends in spaces.
    room = None if width is None else width - sum(map(len, header)) - 2 * len(header)

    def end(text: str) -> str:
        text = _cut(text, room).rstrip()
        return f"  {text}" if text else ""

    messages = map(_message, columns["message"], pids, columns["exit_code"], columns["exit_signal"])
    ends = [end("MESSAGE"), *_each(end, list(messages))]
    rows = itertools.chain([header], zip(*cells, strict=True))
    return "\n".join(map(str.__add__, map("  ".join, rows), ends)) + "\n"


def _each(text: Callable[[Any], str], values: Sequence[Any]) -> list[str]:
    """`text` of each value, computed once per distinct value: thousands of instances
    show a few states, CPU figures and sizes between them."""
    texts = {value: text(value) for value in set(values)}
    return list(map(texts.__getitem__, values))


def _coloured_state(state: str, width: int) -> str:
    padded = state.ljust(width)
    return f"\x1b[{STATE_COLOURS[state]}m{padded}\x1b[0m" if state in STATE_COLOURS else padded


def _cut(text: str, room: int | None) -> str:
    if room is None or len(text) <= room:
        return text
    room = max(room, MESSAGE_MIN_WIDTH)
    return text if len(text) <= room else text[: room - 1] + "…"


def instance_prefixes(names: Sequence[str], *, colour: bool, width: int) -> dict[str, str]:
    """`name │ ` for each instance, padded to `width`, coloured on a terminal (by its
    place in `names`, the config's order, as the foreground `up` colours it)."""
    prefixes = {}
    for index, name in enumerate(names):
        label = f"{name.ljust(width)} │ "
        if colour:
            label = f"\x1b[{INSTANCE_COLOURS[index % len(INSTANCE_COLOURS)]}m{label}\x1b[0m"
        prefixes[name] = label
    return prefixes


def render_detail(
    inst: Mapping[str, Any], lines: Sequence[Mapping[str, Any]], *, colour: bool, now: float
) -> str:
    """One instance in detail, as `systemctl status` shows a unit: its state and since
    when, process, restarts, last exit, readiness and health with the last check's
    result, command, message, then its last lines."""
    state = str(inst["state"])
    shown = (
        f"\x1b[{STATE_COLOURS[state]}m{state}\x1b[0m"
        if colour and state in STATE_COLOURS
        else state
    )
    since = _since(inst.get("since"), now)
    rows = [("State", f"{shown}{since}")]
    if inst.get("pid") is not None:
        usage = [
            _count(inst.get("processes"), "process", "processes"),
            f"{memory(inst.get('rss_bytes'))} memory" if inst.get("rss_bytes") is not None else "",
            f"{cpu(inst.get('cpu_percent'))} CPU" if inst.get("cpu_percent") is not None else "",
        ]
        extra = ", ".join(u for u in usage if u)
        up = f"up {uptime(inst.get('uptime'))}" if inst.get("uptime") is not None else ""
        rows.append(
            ("PID", " ".join(p for p in (str(inst["pid"]), f"({extra})" if extra else "", up) if p))
        )
    rows.append(("Restarts", str(inst.get("restarts", 0))))
    if inst.get("exit_signal"):
        rows.append(("Last exit", f"killed by {inst['exit_signal']}"))
    elif inst.get("exit_code") is not None:
        rows.append(("Last exit", f"exited with code {inst['exit_code']}"))
    checks = inst.get("checks") or {}
    if inst.get("pid") is not None:
        ready = "yes" if inst.get("ready") else "no"
        rows.append(
            ("Ready", ready + (f" (last check: {checks['ready']})" if "ready" in checks else ""))
        )
        if inst.get("health"):
            health = str(inst["health"])
            rows.append(
                (
                    "Health",
                    health + (f" (last check: {checks['health']})" if "health" in checks else ""),
                )
            )
    if inst.get("command"):
        rows.append(("Command", shell_join(inst["command"])))
    text = message(inst)
    if text:
        rows.append(("Message", text))
    width = max(len(label) for label, _ in rows)
    out = [f"{inst['name']} ({inst.get('service', '')})\n"]
    out += [f"  {label.rjust(width)}: {value}\n" for label, value in rows]
    if lines:
        out.append(f"\nLast {len(lines)} lines:\n")
        out += [
            f"  {str(e.get('time', ''))[:19]}Z {e.get('stream', 'out')} {e.get('line', '')}\n"
            for e in lines
        ]
    return "".join(out)


# What shlex.quote leaves unquoted; shlex itself loads `re`, which `status web.0`
# does without.
_SHELL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_@%+=:,./-")


def shell_join(argv: Sequence[str]) -> str:
    """A command line as shlex.join writes it (tests/cli/test_table.py holds it to it)."""
    return " ".join(
        arg if arg and _SHELL_SAFE.issuperset(arg) else "'" + arg.replace("'", "'\"'\"'") + "'"
        for arg in argv
    )


def _count(n: object, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}" if isinstance(n, int) and n else ""


def _since(when: object, now: float) -> str:
    """` since 2026-12-06 13:40:01 UTC (3m12s ago)`, or nothing when unknown."""
    if not isinstance(when, str) or not when:
        return ""
    from datetime import datetime

    try:
        at = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return ""
    ago = uptime(max(0.0, now - at.timestamp()))
    return f" since {at.strftime('%Y-%m-%d %H:%M:%S')} UTC ({ago} ago)"
