"""The status table and its formats, and PATTERN matching, on plain values."""

from __future__ import annotations

import io
import os
import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.cli import table
from herdsman.cli.commands import outcome, select
from tests.cli.fake import instance


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (45.9, "45s"),
        (60, "1m00s"),
        (192, "3m12s"),
        (3599, "59m59s"),
        (2 * 3600 + 5 * 60 + 59, "2h05m"),
        (86399, "23h59m"),
        (3 * 86400 + 4 * 3600 + 1, "3d04h"),
        (400 * 86400, "400d00h"),
    ],
)
def test_uptime(seconds: float | None, text: str) -> None:
    assert table.uptime(seconds) == text


def test_memory_cpu() -> None:
    assert table.memory(None) == "-"
    assert table.memory(13_002_342) == "12.4M"
    assert table.memory(0) == "0.0M"
    assert table.memory(3 * 2**30 // 2) == "1.5G"
    assert table.cpu(None) == "-"
    assert table.cpu(0.25) == "0.2%"
    assert table.cpu(123.456) == "123.5%"


def test_ready_health_and_message() -> None:
    assert table.ready_health(instance("a")) == "yes"
    assert table.ready_health(instance("a", ready=False)) == "no"
    assert table.ready_health(instance("a", health="healthy")) == "yes/healthy"
    assert table.ready_health(instance("a", ready=False, health="unhealthy")) == "no/unhealthy"
    assert table.ready_health(instance("a", "stopped")) == "-"
    assert table.message(instance("a", "exited", exit_code=3)) == "exit code 3"
    assert table.message(instance("a", "exited", exit_code=None, exit_signal="SIGKILL")) == (
        "killed by SIGKILL"
    )
    assert table.message(instance("a", "failed", message="gave up")) == "gave up"


ROWS = [
    instance("web.0", pid=123, uptime=45, restarts=2),
    instance("a-long-service-name", "failed", message="start limit hit (5 restarts in 60s)"),
]


def test_render_widths_from_content() -> None:
    lines = table.render_status(
        table.columns_of(ROWS, table.COLUMNS), colour=False, width=None
    ).splitlines()
    assert lines[0].startswith("INSTANCE             STATE")  # the longest name + 2
    assert lines[1].startswith("web.0                running")
    # Numbers are right-aligned under their header.
    pid_end = lines[0].index("PID") + len("PID")
    assert lines[1][:pid_end].endswith("123")
    assert lines[2][:pid_end].endswith("-")
    restarts_end = lines[0].index("RESTARTS") + len("RESTARTS")
    assert lines[1][:restarts_end].endswith("2")
    assert lines[2].endswith("start limit hit (5 restarts in 60s)")
    assert all(line == line.rstrip() for line in lines)


def test_render_empty() -> None:
    assert table.render_status(
        table.columns_of([], table.COLUMNS), colour=False, width=None
    ).split() == [
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "READY",
        "CPU",
        "MEM",
        "MESSAGE",
    ]


def test_health_header_only_with_health_checks() -> None:
    rows = [instance("web", health="unknown")]
    assert "READY/HEALTH" in table.render_status(
        table.columns_of(rows, table.COLUMNS), colour=False, width=None
    )


def test_colour_and_cut_on_a_terminal() -> None:
    plain = table.render_status(
        table.columns_of(ROWS, table.COLUMNS), colour=False, width=None
    ).splitlines()
    coloured = table.render_status(
        table.columns_of(ROWS, table.COLUMNS), colour=True, width=len(plain[1]) + 20
    ).splitlines()
    assert "\x1b[32mrunning" in coloured[1]
    assert "\x1b[31mfailed " in coloured[2]
    assert "\x1b[" not in coloured[0]  # the header stays plain
    # The message is cut to what is left of the screen, with an ellipsis.
    visible = coloured[2].replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert len(visible) == len(plain[1]) + 20
    assert visible.endswith("…")
    # On a very narrow screen the message keeps a few characters and the line wraps.
    narrow = table.render_status(
        table.columns_of(ROWS, table.COLUMNS), colour=False, width=20
    ).splitlines()
    assert narrow[2].endswith("start lim…")


def test_no_colour_when_not_a_terminal_or_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not table.wants_colour(io.StringIO())
    assert table.terminal_width(io.StringIO()) is None
    with open(os.devnull, "w") as devnull:
        assert not table.wants_colour(devnull)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not table.wants_colour(io.StringIO())


def test_wants_colour_on_a_pty(monkeypatch: pytest.MonkeyPatch) -> None:

    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert table.wants_colour(tty)
            assert isinstance(table.terminal_width(tty), int)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not table.wants_colour(tty)
    finally:
        os.close(master)
        os.close(slave)


def test_instance_prefixes() -> None:
    prefixes = table.instance_prefixes(["web.0", "db"], colour=False, width=5)
    assert prefixes == {"web.0": "web.0 │ ", "db": "db    │ "}
    coloured = table.instance_prefixes(["web.0", "db"], colour=True, width=5)
    assert coloured["web.0"] == "\x1b[36mweb.0 │ \x1b[0m"
    assert coloured["db"].startswith("\x1b[33m")


INSTANCES = [instance("web.0"), instance("web.1"), instance("db"), instance("worker")]


@pytest.mark.parametrize(
    ("patterns", "names"),
    [
        ([], ["web.0", "web.1", "db", "worker"]),
        (["web"], ["web.0", "web.1"]),
        (["web.1"], ["web.1"]),
        (["w*"], ["web.0", "web.1", "worker"]),
        (["*.0", "db"], ["web.0", "db"]),
        (["db", "db", "d?"], ["db"]),
        (["[dw]o*"], ["worker"]),
    ],
)
def test_select(patterns: list[str], names: list[str]) -> None:
    chosen, unmatched = select(INSTANCES, patterns)
    assert [i["name"] for i in chosen] == names
    assert unmatched == []


def test_select_reports_unmatched_patterns() -> None:
    chosen, unmatched = select(INSTANCES, ["db", "web.2", "x*"])
    assert [i["name"] for i in chosen] == ["db"]
    assert unmatched == ["web.2", "x*"]


def test_outcome_lines() -> None:
    assert outcome(instance("web.0", pid=123)) == "web.0: running (pid 123)"
    assert outcome(instance("db", "stopped", message="killed with SIGKILL")) == (
        "db: stopped (killed with SIGKILL)"
    )
    assert outcome(instance("job", "exited", exit_code=0)) == "job: exited (exit code 0)"
    assert outcome(instance("x", "stopped")) == "x: stopped"
    assert outcome(instance("x", "stopped", message="stopped (killed by SIGTERM)")) == (
        "x: stopped (killed by SIGTERM)"
    )
    assert outcome(instance("w", pid=5, message="running after 2 restarts")) == (
        "w: running after 2 restarts (pid 5)"
    )


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.text(alphabet=st.sampled_from("aZ9_@%+=:,./- '\"$*é\t")) | st.text(), max_size=4)
)
def test_shell_join_writes_what_shlex_writes(argv: list[str]) -> None:
    assert table.shell_join(argv) == shlex.join(argv)


def _one_format_per_row(columns: dict[str, list[Any]], colour: bool, width: int | None) -> str:
    """The table as a %-format per row writes it (how render_status built it before it
    joined padded cells), for render_status to be held to."""
    pids = columns["pid"]
    ready = "READY/HEALTH" if any(columns["health"]) else "READY"
    header = ["INSTANCE", "STATE", "PID", "UPTIME", "RESTARTS", ready, "CPU", "MEM", "MESSAGE"]
    cells = [
        [str(name) for name in columns["name"]],
        [str(state) for state in columns["state"]],
        ["-" if pid is None else str(pid) for pid in pids],
        [table.uptime(s) for s in columns["uptime"]],
        [str(r or 0) for r in columns["restarts"]],
        [table.ready_health({"pid": p, "ready": r, "health": h}) for p, r, h in
         zip(pids, columns["ready"], columns["health"], strict=True)],
        [table.cpu(c) for c in columns["cpu_percent"]],
        [table.memory(m) for m in columns["rss_bytes"]],
        [table.message({"message": m, "pid": p, "exit_code": c, "exit_signal": s}) for m, p, c, s in
         zip(columns["message"], pids, columns["exit_code"], columns["exit_signal"], strict=True)],
    ]  # fmt: skip
    widths = [max([len(t), *map(len, c)]) for t, c in zip(header, cells, strict=True)]
    if width is not None:
        room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
        cells[-1] = [table._cut(text, room) for text in cells[-1]]
        header[-1] = table._cut(header[-1], room)
    formats = [
        f"%{w}s" if t in table.RIGHT_ALIGNED else f"%-{w}s"
        for t, w in zip(header[:-1], widths, strict=False)
    ]
    if colour:
        cells[1] = [table._coloured_state(s, widths[1]) for s in cells[1]]
        header[1] = header[1].ljust(widths[1])
        formats[1] = "%s"
    row = "  ".join([*formats, "%s"])
    lines = [tuple(header), *zip(*cells, strict=True)]
    return "\n".join([(row % line).rstrip() for line in lines]) + "\n"


ANY_INSTANCES = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(alphabet="ab.1", min_size=1, max_size=6),
            "state": st.sampled_from(["running", "stopped", "failed", "starting", "odd"]),
            "pid": st.none() | st.integers(1, 99999),
            "uptime": st.none() | st.floats(0, 400_000),
            "restarts": st.none() | st.integers(0, 20),
            "ready": st.booleans(),
            "health": st.none() | st.sampled_from(["healthy", "unhealthy"]),
            "cpu_percent": st.none() | st.floats(0, 400),
            "rss_bytes": st.none() | st.integers(0, 2**34),
            "message": st.none() | st.text(alphabet="ab \n…", max_size=30),
            "exit_code": st.none() | st.integers(0, 255),
            "exit_signal": st.none() | st.sampled_from(["", "SIGKILL", "SIGTERM"]),
        }
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(ANY_INSTANCES, st.booleans(), st.none() | st.integers(0, 160))
def test_render_writes_each_row_as_one_format_would(
    instances: list[dict[str, Any]], colour: bool, width: int | None
) -> None:
    columns = table.columns_of(instances, table.COLUMNS)
    expected = _one_format_per_row(columns, colour, width)
    assert table.render_status(columns, colour=colour, width=width) == expected
