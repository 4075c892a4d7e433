"""`herdsman events`: the daemon's state changes as they happen, one line each
(`10:00:01 web.1 running → restarting (code 1; restarting in 1s)`) or one JSON
object each, followed across a re-exec until the daemon stops."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TextIO

from herdsman.cli import table
from herdsman.cli.client import ClientError
from herdsman.cli.stream import AsyncClient, endpoint, events, is_gone
from herdsman.core.lifecycle import describe_exit

EXIT_OK = 0


def say(text: str) -> None:
    print(f"herdsman: {text}", file=sys.stderr)


def cmd_events(args: argparse.Namespace) -> int:
    try:
        client = AsyncClient(endpoint(args))
        return asyncio.run(follow(client, EventPrinter(sys.stdout, json_lines=args.json)))
    except ClientError as err:
        say(err.message)
        return err.exit_code
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how one stops following


async def follow(client: AsyncClient, printer: EventPrinter) -> int:
    """Print events until the daemon stops. Each stream begins with a snapshot of every
    instance (not printed: the changes after it are), so none is lost or shown twice.
    Streams end at a re-exec too: then the new image is asked for them again, and its
    snapshot tells whether it is new."""
    response = await client.subscribe()
    reexecs: int | None = None
    while True:
        async for kind, document in events(response):
            if kind == "snapshot":
                printer.seed(document.get("services") or [])
                reexecs = _resumed(document.get("daemon") or {}, reexecs)
            else:
                printer.write(document)
        try:
            response = await client.subscribe()
        except ClientError as err:
            if not is_gone(err):
                raise
            break
    say("the daemon stopped; no more events")
    return EXIT_OK


def _resumed(daemon: Mapping[str, Any], reexecs: int | None) -> int:
    """Say why a stream begins again (`reexecs`: as the last stream began, None for
    the first); the daemon's count of re-execs now."""
    count = int(daemon.get("reexecs", 0))
    # Nothing to say of the first stream, or of the last changes of a daemon on its way out.
    if reexecs is not None and not daemon.get("shutting_down"):
        if count > reexecs:
            say(f"the daemon re-executed (pid {daemon.get('pid')}); following the new image")
        else:
            say("the daemon ended the stream (this follower fell behind); following again")
    return count


class EventPrinter:
    """Writes events as readable lines in local time (state coloured on a terminal),
    or as the JSON objects the API sends."""

    def __init__(self, out: TextIO, *, json_lines: bool) -> None:
        self._out = out
        self._json = json_lines
        self._colour = table.wants_colour(out)
        self._known: dict[str, Mapping[str, Any]] = {}

    def write(self, event: Mapping[str, Any]) -> None:
        text = json.dumps(event, ensure_ascii=False) if self._json else self.line(event)
        if text is None:
            return
        self._out.write(text + "\n")
        self._out.flush()

    def seed(self, instances: list[Mapping[str, Any]]) -> None:
        """What each instance looks like now (the status), for the first changes."""
        for instance in instances:
            self._known[str(instance.get("name"))] = instance

    def line(self, event: Mapping[str, Any]) -> str | None:
        """The readable line, or None for a change that shows nothing new."""
        name = str(event.get("instance"))
        before = self._known.get(name, {})
        self._known[name] = event
        state, previous = str(event.get("state")), str(event.get("previous"))
        details = "; ".join(changes(before, event))
        if state == previous and not details:
            return None
        change = self._state(state) if state == previous else f"{previous} → {self._state(state)}"
        suffix = f" ({details})" if details else ""
        return f"{clock(str(event.get('time', '')))} {name} {change}{suffix}"

    def _state(self, state: str) -> str:
        colour = table.STATE_COLOURS.get(state)
        return f"\x1b[{colour}m{state}\x1b[0m" if self._colour and colour else state


def changes(before: Mapping[str, Any], event: Mapping[str, Any]) -> list[str]:
    """What an event says that the instance's last known state did not: a new pid,
    becoming ready, health, and its message (how a process ended said shortly:
    `code 1`, `SIGKILL`)."""
    said = []
    pid = event.get("pid")
    if pid is not None and pid != before.get("pid"):
        said.append(f"pid {pid}")
    if event.get("ready") and not before.get("ready"):
        said.append("ready")
    health = event.get("health")
    if health and health != before.get("health"):
        said.append(str(health))
    message = str(event.get("message") or "")
    ended = pid is None and before.get("pid") is not None
    said_before = str(before.get("message") or "")
    # A message cut short by a respawn ("exited with code 1; restarting in 1s", then
    # "exited with code 1") says nothing new.
    if message and (ended or not said_before.startswith(message)):
        code, signal = event.get("exit_code"), event.get("exit_signal")
        if code is not None or signal:
            how = f"killed by {signal}" if signal else describe_exit(code, None)
            if message.startswith(how):
                message = (str(signal) if signal else f"code {code}") + message[len(how) :]
        said.append(message)
    return said


def clock(iso_time: str) -> str:
    """`10:00:01` in local time, from the API's ISO-8601 UTC time."""
    try:
        return datetime.fromisoformat(iso_time).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return iso_time
