"""`herdsman top`: a live dashboard of one daemon's instances and their output.

Textual is imported here, by this command only (`status` and the other commands
never load it). Without a daemon it exits 3 before taking the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from herdsman.cli.client import EXIT_USAGE, ClientError
from herdsman.cli.stream import AsyncClient, endpoint


def cmd_top(args: argparse.Namespace) -> int:
    try:
        client = AsyncClient(endpoint(args))
        asyncio.run(client.request("GET", "/v1/status"))  # a clear error before the screen
    except ClientError as err:
        print(f"herdsman: {err.message}", file=sys.stderr)
        return err.exit_code
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "herdsman: top needs a terminal; for a pipe or a script, use"
            " 'herdsman status --json' or 'herdsman events --json'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from herdsman.cli.top.app import TopApp

    TopApp(client, interval=args.interval).run()
    return 0
