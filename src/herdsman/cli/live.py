"""The commands that follow the daemon live (`top`, `events`) and `completion`: their
parsers, and entry points that load their modules (asyncio, h11, Textual, argcomplete)
only when they run, so that no other command pays for them."""

from __future__ import annotations

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
# So does collections.abc, which loads `collections`.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    Command = Callable[[argparse.Namespace], int]
SHELLS = ("bash", "zsh", "fish")


def add_live_parsers(sub: argparse._SubParsersAction[Any], wanted: Callable[[str], bool]) -> None:
    if wanted("top"):
        top = sub.add_parser("top", help="a live dashboard of the instances and their output")
        top.add_argument(
            "-d",
            "--interval",
            type=_seconds,
            default=2.0,
            metavar="S",
            help="seconds between CPU/memory refreshes (default 2); states follow events",
        )
        add_remote_options(top)
    if wanted("events"):
        events = sub.add_parser("events", help="print state changes as they happen")
        events.add_argument("--json", action="store_true", help="one JSON object per event")
        add_remote_options(events)
    if wanted("completion"):
        completion = sub.add_parser("completion", help="print a shell completion script")
        completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")


def _seconds(text: str) -> float:
    """A refresh interval, as `top -d` takes it: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:  # also refuses nan
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(f"{text!r} is not a number of seconds from 0.1 to 3600")
    return value


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """`--url` and `--token-file` on a command's own parser. SUPPRESS leaves the
    attributes unset when not given, so they never override the same options given
    before the command name."""
    from argparse import SUPPRESS

    parser.add_argument(
        "--url",
        default=SUPPRESS,
        metavar="URL",
        help="the daemon's TCP listener, http://HOST:PORT (default: the config's socket)",
    )
    parser.add_argument(
        "--token-file",
        default=SUPPRESS,
        metavar="FILE",
        help="with --url: the file holding the API token",
    )


def cmd_events(args: argparse.Namespace) -> int:
    from herdsman.cli.events import cmd_events as run

    return run(args)


def cmd_top(args: argparse.Namespace) -> int:
    from herdsman.cli.top import cmd_top as run

    return run(args)


def cmd_completion(args: argparse.Namespace) -> int:
    from herdsman.cli.completion import cmd_completion as run

    return run(args)


LIVE_COMMANDS: dict[str, Command] = {
    "top": cmd_top,
    "events": cmd_events,
    "completion": cmd_completion,
}
