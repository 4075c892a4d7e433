"""Shell completion, by argcomplete: `herdsman completion bash|zsh|fish` prints the
script to source, and that script runs `herdsman` itself at each TAB (with
`_ARGCOMPLETE` set), which answers from the argument parser: commands, options, and
instance and service names asked of the running daemon. No daemon, or one that does
not answer within NAMES_TIMEOUT, completes no names rather than hanging the shell.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import argcomplete
from argcomplete.shell_integration import shellcode

if TYPE_CHECKING:
    from herdsman.cli.stream import AsyncClient

NAMES_TIMEOUT = 1.0  # seconds a TAB may wait for the daemon's names
NAMED = ("status", "start", "stop", "restart", "signal", "logs")  # take PATTERNs


def cmd_completion(args: argparse.Namespace) -> int:
    print(shellcode(["herdsman"], shell=args.shell), end="")
    return 0


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the completion the shell asked for (the environment says what), then
    exit; returns at once when no shell asked."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if isinstance(action, argparse._SubParsersAction):
            for name in NAMED:
                for arg in action.choices[name]._actions:
                    if arg.dest == "patterns":
                        arg.completer = instance_names
    argcomplete.autocomplete(parser)


def instance_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The running daemon's service and instance names (for `web`, `web.0`, `web.1`)."""
    # Loaded only here: a TAB that completes a command or an option does not pay for them.
    import asyncio

    from herdsman.cli.client import ClientError
    from herdsman.cli.stream import AsyncClient, endpoint

    try:
        instances = asyncio.run(_instances(AsyncClient(endpoint(parsed_args))))
    except (ClientError, TimeoutError):
        return []
    names: dict[str, None] = {}
    for inst in instances:
        names[str(inst.get("service"))] = None
        names[str(inst.get("name"))] = None
    return [n for n in names if n.startswith(prefix)]


async def _instances(client: AsyncClient) -> list[dict[str, Any]]:
    import asyncio

    async with asyncio.timeout(NAMES_TIMEOUT):
        answer: list[dict[str, Any]] = await client.request("GET", "/v1/instances")
        return answer
