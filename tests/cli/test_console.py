"""The foreground output of `up` (cli/console.py): `name │ line`, on plain values."""

from __future__ import annotations

import io

from herdsman.cli.console import Console
from herdsman.cli.table import INSTANCE_COLOURS


def test_prefixes_are_as_wide_as_the_longest_name_and_coloured_in_turn() -> None:
    out = io.BytesIO()
    console = Console(["web.0", "web.1", "worker"], out, colour=True)
    console.lines("worker", "out", b"one\ntwo")
    console.say("web.0", "started (pid 7)")
    console.flush()
    worker = b"\x1b[%dmworker   \xe2\x94\x82 \x1b[0m" % INSTANCE_COLOURS[2]
    own = b"\x1b[90mherdsman \xe2\x94\x82 \x1b[0m"
    assert out.getvalue() == (
        worker + b"one\n" + worker + b"two\n" + own + b"\x1b[2mweb.0: started (pid 7)\x1b[0m\n"
    )


def test_an_instance_the_console_was_not_told_of_is_shown_by_its_name() -> None:
    # A reload adds instances to a foreground `up`: the first line of one was a
    # KeyError in the event loop, and the daemon re-executed itself to heal.
    out = io.BytesIO()
    console = Console(["a"], out, colour=False)
    console.lines("b", "out", b"hello")
    console.lines("a", "out", b"hi")
    console.flush()
    assert out.getvalue() == "b        │ hello\na        │ hi\n".encode()
