"""Bytes that are not text pass through unchanged; a last line without newline is
written at exit; lines longer than MAX_LINE are written as consecutive pieces of
at most MAX_LINE bytes, cut every MAX_LINE bytes from the start of the line, with
nothing lost or added, each piece but the last marked `out+` (continued by the
next line), and `logs --json` says `"partial": true` for those."""

from __future__ import annotations

import json

from herdsman.runtime.pump import MAX_LINE
from tests.conftest import wait_for
from tests.logs.conftest import Herd, child, parse, texts


def run_to_exit(herd: Herd, mode: str) -> list[tuple[bytes, bytes, bytes]]:
    herd.up(f'[services.{mode}]\ncommand = {child(mode)}\nrestart = "never"\n')
    wait_for(lambda: herd.instance(mode)["state"] == "exited", 20)
    assert herd.instance(mode)["exit_code"] == 0
    return parse(herd.log(mode).read_bytes())


def pieces(line: bytes) -> list[tuple[bytes, bytes]]:
    """(stream, text) of the pieces a long stdout line is written as."""
    cut = [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)]
    return [(b"out+", piece) for piece in cut[:-1]] + [(b"out", cut[-1])]


def test_odd_bytes_unchanged_and_the_last_line_without_newline(herd: Herd) -> None:
    entries = run_to_exit(herd, "odd")
    assert texts(entries, b"out") == [
        b"bin \xff\xfe end",
        b"cr at the end\r",
        b"cr \r in the middle",
        b"tab\there",
        b"nul\x00byte",
        b"",
        b"   ",
        b"no newline at the end",
    ]
    assert texts(entries, b"err") == [b"err \xc3\x28 bad utf-8"]
    # `logs --json` decodes for JSON, replacing what is not UTF-8; the file keeps bytes.
    shown = herd.cli("logs", "--json", "odd")
    assert shown.returncode == 0, shown.stderr
    lines = {json.loads(text)["line"] for text in shown.stdout.splitlines()}
    assert {"bin \ufffd\ufffd end", "err \ufffd( bad utf-8", "nul\x00byte"} <= lines


def test_long_lines_are_cut_every_max_line_bytes_and_marked(herd: Herd) -> None:
    assert MAX_LINE == 64 * 1024
    entries = run_to_exit(herd, "long")
    assert all(len(text) <= MAX_LINE for text in texts(entries))
    expected = [
        *pieces(b"A" * 200 * 1024),  # one write, read in pipe-sized reads
        (b"out", b"B" * MAX_LINE),  # exactly MAX_LINE, its newline read later: one line, not two
        *pieces(b"C" * 60 * 1024 + b"D" * 10 * 1024),  # 60 KiB held, then 10 KiB more
        *pieces(b"E" * 2 * MAX_LINE),  # two whole pieces, no empty third
        (b"out", b"after the long lines"),
    ]
    assert [(stream, text) for _, stream, text in entries] == expected
    # The daemon's tail and the file reader (no daemon) say the same in JSON.
    answers = [herd.cli("logs", "--json", "-n", "20", "long")]
    herd.down()
    answers.append(herd.cli("logs", "--json", "-n", "20", "long"))
    for shown in answers:
        assert shown.returncode == 0, shown.stderr
        docs = [json.loads(text) for text in shown.stdout.splitlines()]
        assert [(d["stream"], d.get("partial", False), d["line"]) for d in docs] == [
            ("out", stream == b"out+", text.decode()) for stream, text in expected
        ]
