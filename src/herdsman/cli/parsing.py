"""argparse as herdsman's command line uses it: help as wide as the terminal, and a
"did you mean" for a mistyped command or choice. Loaded only for a command line that
is not plain (see main.plain_args): argparse, and the gettext look-ups of the parser
it builds, are a fifth of what `herdsman status` costs.
"""

from __future__ import annotations

import argparse
import sys

from herdsman.cli.commands import EXIT_USAGE
from herdsman.cli.table import terminal_columns

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width found without `shutil`: argparse makes a
    formatter for every argument it adds, and `shutil` loads bz2, lzma and zlib
    (3 ms of every client command's start-up)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=terminal_columns() - 2)  # the margin argparse keeps


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"herdsman: {_with_suggestion(message)}\n")


def _with_suggestion(message: str) -> str:
    """argparse's "invalid choice" with a "did you mean" (a mistyped command, above all)."""
    import difflib
    import re

    found = re.search(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return message
    what, given = found.group(1), found.group(2)
    choices = re.findall(r"'([^']*)'", found.group(3))
    close = difflib.get_close_matches(given, choices, n=1)
    if what == "COMMAND":
        hint = f"did you mean {close[0]!r}?" if close else "see 'herdsman --help'"
        return f"unknown command {given!r} ({hint})"
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{what}: {given!r} is not one of {', '.join(choices)}{hint}"
