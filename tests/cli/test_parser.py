"""The parser built for one command (what `main` builds when the command is plain in
argv) parses exactly as the whole parser does, and a plain client command line, read
without argparse, is read as the parser reads it."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.cli.main import COMMANDS, PLAIN_COMMANDS, build_parser, command_of, plain_args

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


# --- plain command lines: read without argparse --------------------------------

PLAIN_LINES = [
    ["status"],
    ["status", "--json"],
    ["status", "web", "db.*"],
    ["--debug", "status", "--json", "web"],
    ["-c", "x.toml", "status", "-c", "y.toml", "--debug"],
    ["--config", "x.toml", "--url", "http://h:1", "--token-file", "t", "status"],
    ["status", "--json", "a", "b", "--config", "x.toml"],
    ["status", "a", "b", "--json"],
    ["status", ""],
    ["-c", "", "status"],
    ["logs"],
    ["logs", "-f", "web"],
    ["logs", "--follow", "--json", "web", "db"],
    ["logs", "-n", "5"],
    ["logs", "web", "--lines", "0", "-f"],
    ["stop", "--timeout", "5", "web"],
    ["restart", "--timeout", "2m", "--no-wait", "web", "db"],
    ["start", "web"],
    ["stop", "--no-wait", "web", "db"],
    ["restart", "web", "--no-wait", "--debug"],
    ["down"],
    ["reload", "--debug"],
    ["down", "-c", "x.toml"],
    ["up"],
    ["-c", "x.toml", "up", "-d", "--wait", "--timeout", "5", "web", "db"],
    ["up", "--detach", "--wait-timeout", "2m", "--wait"],
    ["up", "--watch", "web", "-c", "x.toml"],
    ["up", "web", "--watch"],
]


@pytest.mark.parametrize("argv", PLAIN_LINES, ids=" ".join)
def test_a_plain_command_line_is_read_as_the_parser_reads_it(argv: list[str]) -> None:
    plain = plain_args(argv)
    assert plain is not None
    assert vars(plain) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status", "a", "--json", "b"],  # argparse takes one run of PATTERNs
        ["start"],  # needs a PATTERN
        ["down", "x"],
        ["logs", "-n5"],  # an option and its value in one: argparse knows
        ["logs", "--lines=5"],
        ["logs", "-n", "x"],  # a value its type refuses: the parser says why
        ["logs", "-n", "-5"],
        ["logs", "-n"],
        ["stop", "--timeout", "0", "web"],
        ["logs", "--since", "10m"],  # read relative to now, when the parser reads it
        ["status", "--js"],  # abbreviated: argparse knows, we do not guess
        ["status", "-c"],
        ["status", "-c", "--json"],
        ["-c", "status"],
        ["--url=http://h:1", "status"],
        ["status", "--url", "http://h:1"],
        ["status", "--", "a"],
        ["status", "-"],
        ["status", "-h"],
        ["-h"],
        ["up", "web", "-d", "db"],  # argparse takes one run of SERVICEs
        ["up", "--timeout", "0"],
        ["up", "-dw"],
        ["version"],
        ["stauts"],
    ],
    ids=" ".join,
)
def test_anything_else_goes_to_the_parser(argv: list[str]) -> None:
    assert plain_args(argv) is None


WORDS = [
    *PLAIN_COMMANDS,
    "--json",
    "-d",
    "--detach",
    "--wait",
    "--watch",
    "--wait-timeout",
    "-f",
    "--follow",
    "--no-wait",
    "-c",
    "--config",
    "--config=x",
    "--debug",
    "--url",
    "--token-file",
    "-n",
    "--lines",
    "--timeout",
    "--since",
    "5",
    "2m",
    "0",
    "--",
    "-",
    "",
    "x.toml",
    "web",
    "db.*",
]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=8))
def test_whatever_is_read_plainly_is_what_the_parser_reads(argv: list[str]) -> None:
    plain = plain_args(argv)
    if plain is None:
        return
    try:
        parsed = build_parser().parse_args(argv)
    except SystemExit:  # pragma: no cover - the failure this test is for
        raise AssertionError(f"read {argv} plainly, which the parser refuses") from None
    assert vars(plain) == vars(parsed)
