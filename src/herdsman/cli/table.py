"""The `herdsman status` table and the small formats it is made of.

Column widths come from the content; on a terminal the state is coloured and the
last column (the message) is cut to fit the screen, elsewhere the text stays plain
and whole so that scripts and pipes see everything.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from herdsman.core.states import State

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, TextIO

STATE_COLOURS: dict[str, str] = {
    State.RUNNING: "32",
    State.STARTING: "33",
    State.RESTARTING: "33",
    State.STOPPING: "33",
    State.FAILED: "31",
    State.EXITED: "2",
    State.STOPPED: "2",
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
    if inst.get("pid") is None:
        return "-"
    text = "yes" if inst.get("ready") else "no"
    health = inst.get("health")
    return f"{text}/{health}" if health else text


def message(inst: Mapping[str, Any]) -> str:
    """The instance's last message, else how it ended when it is not running."""
    text = inst.get("message")
    if text:
        return str(text)
    if inst.get("pid") is None:
        if inst.get("exit_signal"):
            return f"killed by {inst['exit_signal']}"
        if inst.get("exit_code") is not None:
            return f"exit code {inst['exit_code']}"
    return ""


def render_status(
    instances: Sequence[Mapping[str, Any]], *, colour: bool, width: int | None
) -> str:
    """The status table, header included, as lines ending in newlines."""
    ready = "READY/HEALTH" if any(i.get("health") for i in instances) else "READY"
    header = ["INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS", ready, "CPU", "MEM", "MESSAGE"]
    rows = [
        [
            str(i["name"]),
            str(i["state"]),
            "-" if i.get("pid") is None else str(i["pid"]),
            uptime(i.get("uptime")),
            str(i.get("restarts", 0)),
            ready_health(i),
            cpu(i.get("cpu_percent")),
            memory(i.get("rss_bytes")),
            message(i),
        ]
        for i in instances
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    # Everything but the message, with a two-space gap after each column.
    fixed = sum(widths[:-1]) + 2 * (len(widths) - 1)

    lines = []
    for index, row in enumerate([header, *rows]):
        cells = []
        for c, text in enumerate(row[:-1]):
            cell = text.rjust(widths[c]) if header[c] in RIGHT_ALIGNED else text.ljust(widths[c])
            if colour and index and c == 1 and text in STATE_COLOURS:
                cell = f"\x1b[{STATE_COLOURS[text]}m{cell}\x1b[0m"
            cells.append(cell)
        cells.append(_cut(row[-1], None if width is None else width - fixed))
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)


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
    import shlex

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
        rows.append(("Command", shlex.join(inst["command"])))
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
