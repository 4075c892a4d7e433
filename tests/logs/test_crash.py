"""SIGKILL of the daemon while a child floods it: what it had read is on disk.

The daemon writes each batch with one write(2) to an O_APPEND fd, no user-space
buffer, so the kernel's page cache has it the moment the call returns. One thing
the kernel does not promise: a write(2) that SIGKILL interrupts stops at a page
boundary, so the file may end with the first part of a line (seen in about one
kill in six while writing 64 KiB batches). That, and only that, is allowed at the
end of the file; the next daemon ends such a torn line before appending its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.conftest import alive, wait_for
from tests.logs import child as prog
from tests.logs.conftest import LINE, Herd, child, parse, texts

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_sigkill_mid_stream_loses_nothing_it_had_read(herd: Herd, tmp: Path) -> None:
    count_file = tmp / "written"
    pid = herd.up(
        "[services.forever]\n"
        f"command = {child('forever', count_file)}\n"
        'log = { max_bytes = "1GiB" }\n'
    )
    kid = herd.instance("forever")["pid"]
    log = herd.log("forever")
    wait_for(lambda: log.exists() and log.stat().st_size > 4_000_000, 20)  # mid-stream
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 5)
    try:
        # Its pipe's reader gone, the child gets EPIPE and says how much the pipe took.
        wait_for(count_file.exists, 10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(kid, signal.SIGKILL)  # its own session; orphaned, not ours to leave
    wait_for(lambda: not alive(kid), 5)

    data = log.read_bytes()
    whole, _, torn = data.rpartition(b"\n")
    lines = texts(parse(whole + b"\n"))
    assert lines == [prog.forever_line(i)[:-1] for i in range(len(lines))]  # 0, 1, ... no gap
    if torn:
        # A write cut short by SIGKILL: it stopped at a page boundary, inside a line.
        assert len(data) % PAGE == 0, f"torn line {torn!r} not at a page boundary"
        stamp = whole[-(len(lines[-1]) + 32) :][:27]
        assert (stamp + b" out " + prog.forever_line(len(lines))).startswith(torn)

    written, pipe_size = map(int, count_file.read_text().split())
    lost = written - len(lines)
    # Not on disk: at most what sat in the pipe, plus one read the daemon had not
    # written yet (a read takes at most a pipe's worth), plus a held partial line.
    assert 0 <= lost * prog.FOREVER_LINE <= 2 * pipe_size + prog.FOREVER_LINE, (written, lost)


def test_a_torn_last_line_is_ended_before_new_lines(herd: Herd) -> None:
    """What a SIGKILL mid-write can leave: the next daemon appends after it, and its
    first line must still be a line of its own."""
    herd.log_dir.mkdir(parents=True)
    torn = b"2026-11-23T10:00:00.123456Z out 000001234 zzzz"
    herd.log("hello").write_bytes(b"2026-11-23T10:00:00.123456Z out before\n" + torn)
    herd.up(f'[services.hello]\ncommand = {child("flood", 3)}\nrestart = "never"\n')
    wait_for(lambda: b"0000002 " in herd.log("hello").read_bytes(), 10)
    herd.down()
    raw = herd.log("hello").read_bytes().split(b"\n")
    assert raw[:2] == [b"2026-11-23T10:00:00.123456Z out before", torn]
    assert [LINE.fullmatch(line)[3] for line in raw[2:-1]] == [prog.line(i) for i in range(3)]  # type: ignore[index]
    assert raw[-1] == b""
