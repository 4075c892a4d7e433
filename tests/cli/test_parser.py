"""The parser built for one command (what `main` builds when the command is plain in
argv) parses exactly as the whole parser does."""

from __future__ import annotations

import argparse

import pytest

from herdsman.cli.main import COMMANDS, build_parser, command_of

LINES = [
    ["up"],
    ["-c", "x.toml", "up", "-d", "--wait", "--timeout", "5", "web"],
    ["--config=x.toml", "--debug", "status", "--json", "web*"],
    ["-cx.toml", "status", "-c", "y.toml"],
    ["--url", "http://h:1", "--token-file", "t", "logs", "-n", "5", "-f", "db"],
    ["start", "--no-wait", "web"],
    ["stop", "--timeout", "2m", "web", "db"],
    ["restart", "web"],
    ["signal", "HUP", "web"],
    ["down"],
    ["reload"],
    ["reexec", "--timeout", "3"],
    ["top", "--url", "http://h:1"],
    ["events", "--json"],
    ["completion", "bash"],
    ["check"],
    ["schema"],
    ["systemd-unit"],
    ["import", "procfile", "Procfile", "--port", "80"],
    ["export", "systemd", "-o", "out", "--systemd-version", "254"],
    ["export", "kubernetes", "--image", "x"],
    ["version"],
]


@pytest.mark.parametrize("argv", LINES, ids=" ".join)
def test_one_command_parses_as_the_whole_parser(argv: list[str]) -> None:
    command = command_of(argv)
    assert command is not None
    assert command in COMMANDS
    one = build_parser(command)
    (sub,) = [a for a in one._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == [command]  # only its own subparser was built
    assert one.parse_args(argv) == build_parser().parse_args(argv)


def test_every_command_has_its_own_parser() -> None:
    whole = build_parser()
    (sub,) = [a for a in whole._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(COMMANDS)
    for command in COMMANDS:
        (one,) = [
            a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction)
        ]
        assert set(one.choices) == {command}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["-h", "status"],
        ["--version"],
        ["--conf", "x.toml", "status"],  # abbreviated: argparse knows, we do not guess
        ["-c", "x.toml"],
        ["stauts"],
        ["--", "status"],
    ],
    ids=" ".join,
)
def test_anything_unplain_gets_the_whole_parser(argv: list[str]) -> None:
    assert command_of(argv) is None


def test_a_value_that_looks_like_a_command_is_skipped() -> None:
    assert command_of(["-c", "status", "up"]) == "up"
    assert command_of(["--url", "down", "--token-file", "stop", "status"]) == "status"
