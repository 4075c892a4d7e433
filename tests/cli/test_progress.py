"""What a waiting command shows meanwhile: in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import threading

import pytest

from herdsman.cli import progress
from herdsman.cli.progress import PendingLine, pending_text, wait_showing


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_pending_text_names_each_instance_its_state_and_why() -> None:
    docs = [
        {"name": "db", "state": "running", "message": ""},
        {"name": "web", "state": "starting", "message": "ready: cannot connect"},
        {"name": "app", "state": "starting", "message": ""},
    ]
    text = pending_text(docs, lambda d: d["state"] == "running")
    assert text == "web (starting: ready: cannot connect), app (starting)"


def test_on_a_terminal_the_line_is_redrawn_in_place_and_cleared() -> None:
    out = Terminal()
    line = PendingLine(out)
    line.show("web (starting)")
    line.show("web (starting: ready: refused)")
    line.clear()
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3  # two draws, one clear
    assert "\n" not in text
    assert "waiting for web (starting: ready: refused)" in text


def test_elsewhere_a_plain_line_when_it_changes_after_a_quiet_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    line = PendingLine(out)
    line.show("web (starting)")
    assert out.getvalue() == ""  # a quick wait prints nothing extra
    monkeypatch.setattr(progress, "PLAIN_AFTER", 0.0)
    line.show("web (starting)")
    line.show("web (starting)")
    line.show("web (starting: ready: refused)")
    line.clear()
    assert out.getvalue().splitlines() == [
        "herdsman: waiting for web (starting)",
        "herdsman: waiting for web (starting: ready: refused)",
    ]


def test_wait_showing_returns_or_raises_what_the_wait_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.01)
    done = threading.Event()
    looks: list[int] = []

    def look() -> str:
        looks.append(1)
        if len(looks) >= 3:
            done.set()
        return "web (starting)"

    def wait() -> str:
        done.wait(10)
        return "answer"

    assert wait_showing(wait, look) == "answer"
    assert len(looks) >= 3  # it looked while waiting

    def broken() -> str:
        raise RuntimeError("the daemon went away")

    with pytest.raises(RuntimeError, match="went away"):
        wait_showing(broken, look)
