"""The client commands: status, start, stop, restart, signal, logs and down.

Each takes the parsed arguments and returns an exit code (0 ok, 1 failed, 2 bad usage,
3 no daemon). Results go to stdout (`down` says `herdsman: stopped` there, as `up -d`
says it started); errors, and notes beside data, go to stderr as one `herdsman: `
sentence. Importing this module is cheap: the HTTP client is loaded only when a
client command runs, so `herdsman up` does not pay for it.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

from herdsman.cli import cjson, table
from herdsman.core import statenames
from herdsman.core.patterns import matches, no_match

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
# So do collections.abc (it loads `collections`) and pathlib (`re`, `urllib`, `enum`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from pathlib import Path
    from typing import Any

    from herdsman.cli.client import Client

    Command = Callable[[argparse.Namespace], int]
    # PLAIN's entries: see there.
    Plain = tuple[
        dict[str, str],
        dict[str, tuple[str, Callable[[str], Any]]],
        dict[str, Any],
        tuple[str, int] | None,
    ]
LogEntry = dict[str, "Any"]  # the API's form: time, instance, stream, line

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_LINES = 100
DETAIL_LINES = 10  # the last lines `status NAME` shows
MAX_SINCE_LINES = 100_000  # the API's largest n
REEXEC_TIMEOUT = 30.0
WAIT_TIMEOUT = 60.0  # default --timeout of start, stop, restart and up --wait
MAX_WAIT = 86_400.0  # the API's largest timeout
SHUTDOWN_TIMEOUT = 30.0  # the setting's default, for a daemon whose config is elsewhere
DOWN_GRACE = 15.0  # seconds `down` waits beyond shutdown_timeout before giving up
GONE_POLL = 0.05  # how often `down` checks the socket when it cannot watch the pid
LOG_FILE_BLOCK = 65536


def say(text: str) -> None:
    print(f"herdsman: {text}", file=sys.stderr)


# --- the command line -----------------------------------------------------------


def add_parsers(sub: argparse._SubParsersAction[Any], wanted: Callable[[str], bool]) -> None:
    """The client commands' subparsers, for `build_parser`: those it `wanted`."""
    if wanted("status"):
        status = sub.add_parser("status", help="show the instances and their state")
        status.add_argument("--json", action="store_true", help="print the status document")
        status.add_argument(
            "patterns", nargs="*", metavar="PATTERN", help="instance, service or glob"
        )

    for name, does in (
        ("start", "start instances"),
        ("stop", "stop instances"),
        ("restart", "stop, then start instances"),
    ):
        if not wanted(name):
            continue
        action = sub.add_parser(name, help=does)
        action.add_argument(
            "patterns", nargs="+", metavar="PATTERN", help="instance, service or glob"
        )
        action.add_argument("--no-wait", action="store_true", help="return without waiting")
        action.add_argument(
            "--timeout",
            type=seconds_arg,
            default=WAIT_TIMEOUT,
            metavar="S",
            help=f"stop waiting after S seconds (default {WAIT_TIMEOUT:g}); a wait also ends"
            " as soon as an instance cannot get there",
        )

    if wanted("signal"):
        sig = sub.add_parser("signal", help="send a signal to instances' process groups")
        sig.add_argument("signal", metavar="SIG", help="a name (HUP, SIGHUP) or a number")
        sig.add_argument("patterns", nargs="+", metavar="PATTERN", help="instance, service or glob")

    if wanted("logs"):
        logs = sub.add_parser("logs", help="show the instances' output")
        logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
        logs.add_argument(
            "-n",
            "--lines",
            type=_line_count,
            default=DEFAULT_LINES,
            metavar="N",
            help=f"the last N lines (default {DEFAULT_LINES})",
        )
        logs.add_argument("--json", action="store_true", help="one JSON object per line")
        logs.add_argument(
            "--since",
            type=_since,
            metavar="WHEN",
            help="only lines from this long ago (10m, 1h30m) or this UTC time (2026-11-23T10:00:00Z)",
        )
        logs.add_argument(
            "patterns", nargs="*", metavar="PATTERN", help="instance, service or glob"
        )

    if wanted("down"):
        sub.add_parser("down", help="stop all services, then the daemon")
    if wanted("reload"):
        sub.add_parser("reload", help="re-read the config and apply the difference")
    if wanted("reexec"):
        reexec = sub.add_parser(
            "reexec", help="replace the daemon's code with what is on disk; services keep running"
        )
        reexec.add_argument(
            "--timeout",
            type=float,
            default=REEXEC_TIMEOUT,
            metavar="S",
            help=f"give up waiting for the new image after S seconds (default {REEXEC_TIMEOUT:g})",
        )


def seconds_arg(text: str) -> float:
    """A timeout: seconds (`30`, `1.5`) or a duration (`2m`)."""
    from herdsman.config.units import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_WAIT:
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(
            f"not a timeout: {text!r} (seconds, or a duration such as 90s or 2m)"
        )
    return seconds


def _line_count(text: str) -> int:
    if not text.isdigit():
        from argparse import ArgumentTypeError

        raise ArgumentTypeError(f"not a number of lines: {text!r}")
    return int(text)


# What main.plain_args reads without argparse, the same as add_parsers' parsers do
# (tests/cli/test_parser.py holds them to it): a client command's flags (store_true)
# and where each goes; its options that take a value, where each goes and the type
# that reads it (--since is left to argparse: its value depends on the time it is
# read); the values its parser gives what is not on the command line; and where its
# run of PATTERNs goes and how many it needs (None: it takes none).
PLAIN: dict[str, Plain] = {
    "status": ({"--json": "json"}, {}, {"json": False, "patterns": []}, ("patterns", 0)),
    "logs": (
        {"-f": "follow", "--follow": "follow", "--json": "json"},
        {"-n": ("lines", _line_count), "--lines": ("lines", _line_count)},
        {"follow": False, "lines": DEFAULT_LINES, "json": False, "since": None, "patterns": []},
        ("patterns", 0),
    ),
    **{
        name: (
            {"--no-wait": "no_wait"},
            {"--timeout": ("timeout", seconds_arg)},
            {"no_wait": False, "timeout": WAIT_TIMEOUT},
            ("patterns", 1),
        )
        for name in ("start", "stop", "restart")
    },
    "down": ({}, {}, {}, None),
    "reload": ({}, {}, {}, None),
}


def _client_command(func: Callable[[argparse.Namespace, Client], int]) -> Command:
    """Runs `func` with a client for the config's daemon; a ClientError becomes its
    sentence on stderr and its exit code, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        # Deferred so that commands that do not talk to a daemon never load the client.
        from herdsman.cli.client import ClientError, connect

        try:
            return func(args, connect(args.config, args.url, args.token_file))
        except ClientError as err:
            say(err.message)
            return err.exit_code

    return run


# --- patterns -------------------------------------------------------------------


def select(
    instances: Sequence[Mapping[str, Any]], patterns: Sequence[str]
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The instances any pattern names (all without patterns), in their order, and the
    patterns that named none."""
    if not patterns:
        return list(instances), []
    names = [(i["name"], i["service"]) for i in instances]
    chosen, unmatched = _chosen(names, patterns)
    return [instances[index] for index in chosen], unmatched


def select_columns(
    columns: Mapping[str, list[Any]], patterns: Sequence[str]
) -> tuple[Mapping[str, list[Any]], list[str]]:
    """`select` for instances given as columns (a list of values per key)."""
    if not patterns:
        return columns, []
    chosen, unmatched = _chosen(
        list(zip(columns["name"], columns["service"], strict=True)), patterns
    )
    return {key: [values[index] for index in chosen] for key, values in columns.items()}, unmatched


def _chosen(
    names: Sequence[tuple[str, str]], patterns: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Which of the (instance, service) `names` any pattern names, by index, and the
    patterns that named none."""
    chosen = [
        index
        for index, (name, service) in enumerate(names)
        if any(matches(p, name, service) for p in patterns)
    ]
    unmatched = [p for p in patterns if not any(matches(p, n, s) for n, s in names)]
    return chosen, unmatched


def service_of(instance: str) -> str:
    """`web.1` -> `web`; service names cannot contain dots, instance names add `.N`."""
    return instance.split(".", 1)[0]


# --- status ---------------------------------------------------------------------


@_client_command
def cmd_status(args: argparse.Namespace, client: Client) -> int:
    if args.json:
        import json

        document = client.request("GET", "/v1/status")
        chosen, unmatched = select(document.get("services") or [], args.patterns)
        print(json.dumps({**document, "services": chosen}, indent=2))
        for pattern in unmatched:
            say(no_match(pattern))
        return EXIT_FAILED if unmatched else EXIT_OK
    # Only what the table shows (and, with patterns, the services they may name and
    # what the detail view of one instance shows), as a list per key: with thousands
    # of instances, documents cost the daemon and this command ten times as much.
    keys = table.COLUMNS + (table.DETAIL if args.patterns else ())
    document = client.request("GET", "/v1/status?columns=" + ",".join(keys))
    columns = document.get("columns")
    if columns is None:  # a daemon older than ?columns= answers with documents
        columns = table.columns_of(document.get("services") or [], keys)
    columns, unmatched = select_columns(columns, args.patterns)
    if args.patterns and len(columns["name"]) == 1 and not unmatched:
        # One instance named: all there is to know of it, and its last lines.
        from herdsman.cli.client import READ_TIMEOUT

        instance = {key: values[0] for key, values in columns.items()}
        name = str(instance["name"])
        path = _logs_query(name, DETAIL_LINES, follow=False)
        lines = [e for e in client.stream(path, timeout=READ_TIMEOUT) if e.get("instance") == name]
        colour = table.wants_colour(sys.stdout)
        sys.stdout.write(table.render_detail(instance, lines, colour=colour, now=time.time()))
    else:
        out = sys.stdout
        colour = table.wants_colour(out)
        named = args.config or os.environ.get("HERDSMAN_CONFIG")
        if (
            not named
            and client.config is not None
            and os.path.dirname(client.config) != os.getcwd()
        ):
            say(f"config: {client.config}")  # found in a parent directory: say which
        out.write(table.render_status(columns, colour=colour, width=table.terminal_width(out)))
        if (document.get("daemon") or {}).get("shutting_down"):
            say("the daemon is shutting down")
    for pattern in unmatched:
        say(no_match(pattern))
    return EXIT_FAILED if unmatched else EXIT_OK


# --- start, stop, restart, signal -----------------------------------------------


def outcome(instance: Mapping[str, Any]) -> str:
    """`web.0: running (pid 123)`, `db: stopped (killed with SIGKILL after ...)`."""
    state = str(instance["state"])
    text = table.message(instance)
    # A message that starts with the state ("stopped (killed by SIGTERM)") says it all.
    head, details = (text, []) if text.startswith(state) else (state, [text] if text else [])
    if instance.get("pid") is not None:
        details.insert(0, f"pid {instance['pid']}")
    suffix = f" ({', '.join(details)})" if details else ""
    return f"{instance['name']}: {head}{suffix}"


def failure(instance: Mapping[str, Any], action: str, timed_out: bool, timeout: float) -> str:
    """Why an instance did not get where `action` was to take it, one line:
    `app: cannot start: depends on db, which failed (exited with code 1)`,
    `web: not running within 5s (starting: ready: cannot connect to ...)`."""
    name, state = instance.get("name"), str(instance.get("state"))
    message = table.message(instance)
    if action == "stop":
        return f"{name}: still {state} after {timeout:g}s" + (f" ({message})" if message else "")
    if message.startswith("cannot start"):
        return f"{name}: {message}"
    if state in (
        statenames.STARTING,
        statenames.RESTARTING,
        statenames.STOPPING,
        statenames.RUNNING,
    ):
        detail = f" ({state}: {message})" if message else f" ({state})"
        if timed_out:
            return f"{name}: not running within {timeout:g}s{detail}"
        return f"{name}: not running yet{detail}"
    return f"{name}: {state}: {message}" if message else f"{name}: {state}"


def _act(
    args: argparse.Namespace,
    client: Client,
    action: str,
    body: dict[str, Any],
    describe: Callable[[Mapping[str, Any]], str] = outcome,
) -> int:
    """One request per pattern; a line per instance on stdout (by default its state);
    with a wait, what is still pending shown meanwhile, and why each one that did not
    get there did not, one line each on stderr."""
    from herdsman.cli.client import READ_TIMEOUT, ApiError, instance_path

    wait = bool(body.get("wait"))
    code = EXIT_OK
    failed: list[str] = []
    for pattern in args.patterns:

        def ask(pattern: str = pattern) -> Any:
            return client.request(
                "POST",
                instance_path(pattern, action),
                body,
                timeout=None if wait else READ_TIMEOUT,
            )

        def look(pattern: str = pattern) -> str:
            import copy

            from herdsman.cli.progress import pending_text

            # Its own client (same daemon, same token): the waiting request is on the
            # other thread.
            status = copy.copy(client).request("GET", "/v1/status")
            chosen, _ = select(status.get("services") or [], [pattern])
            return pending_text(chosen, _stopped if action == "stop" else _running)

        try:
            if wait:
                # Here: the wait's thread loads `threading`, which --no-wait does without.
                from herdsman.cli.progress import wait_showing

                answer = wait_showing(ask, look)
            else:
                answer = ask()
        except ApiError as err:
            if err.status != 404:
                raise
            # The other patterns still get done, as `systemctl start a b` does.
            say(err.message)
            code = EXIT_FAILED
            continue
        by_name = {i["name"]: i for i in answer.get("instances") or []}
        not_there = answer.get("failed") or []
        # A failed one is said once, on stderr with its reason (below), not also here.
        for instance in by_name.values():
            if instance["name"] not in not_there:
                print(describe(instance), flush=True)
        timed_out = bool(answer.get("timed_out"))
        for name in not_there:
            instance = by_name.get(name, {"name": name, "state": "unknown"})
            failed.append(failure(instance, action, timed_out, body.get("timeout") or 0.0))
    for line in failed:
        say(line)
    return EXIT_FAILED if failed else code


def _running(instance: Mapping[str, Any]) -> bool:
    return instance.get("state") == "running"


def _stopped(instance: Mapping[str, Any]) -> bool:
    return instance.get("pid") is None


def _wait_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.no_wait:
        return {"wait": False}
    return {"wait": True, "timeout": args.timeout}


@_client_command
def cmd_start(args: argparse.Namespace, client: Client) -> int:
    return _act(args, client, "start", _wait_body(args))


@_client_command
def cmd_stop(args: argparse.Namespace, client: Client) -> int:
    # A stop that had to SIGKILL still succeeded: the message says so, the exit code is 0.
    return _act(args, client, "stop", _wait_body(args))


@_client_command
def cmd_restart(args: argparse.Namespace, client: Client) -> int:
    return _act(args, client, "restart", _wait_body(args))


@_client_command
def cmd_signal(args: argparse.Namespace, client: Client) -> int:
    from herdsman.cli.client import ApiError, ClientError, instance_path
    from herdsman.core.signals import parse_signal, signal_name

    try:
        number = parse_signal(args.signal)
    except ValueError as err:
        raise ClientError(str(err), EXIT_USAGE) from None
    name = signal_name(number)
    code = EXIT_OK
    for pattern in args.patterns:
        try:
            # By number: the daemon names it back with the same function.
            answer = client.request("POST", instance_path(pattern, "signal"), {"signal": number})
        except ApiError as err:
            if err.status != 404:
                raise
            say(err.message)
            code = EXIT_FAILED
            continue
        instances = answer.get("instances") or []
        sent = [str(i["name"]) for i in instances if i.get("pid") is not None]
        if sent:
            print(f"sent {name} to {', '.join(sent)}", flush=True)
        for instance in instances:
            if instance.get("pid") is None:
                print(f"{instance['name']}: not signalled, it is {instance['state']}", flush=True)
    return code


# --- logs -----------------------------------------------------------------------


def _since(value: str) -> str:
    """`--since`: the earliest `time` to show, in the log's own ISO form (they sort as text)."""
    from datetime import UTC, datetime, timedelta

    from herdsman.config.units import parse_duration

    try:
        when = datetime.now(UTC) - timedelta(seconds=parse_duration(value))
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            from argparse import ArgumentTypeError

            raise ArgumentTypeError(
                f"{value!r} is neither a duration (10m) nor a time (2026-11-23T10:00:00Z)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from(entries: Iterable[LogEntry], since: str | None) -> Iterator[LogEntry]:
    return (e for e in entries if since is None or str(e.get("time", "")) >= since)


@_client_command
def cmd_logs(args: argparse.Namespace, client: Client) -> int:
    from herdsman.cli.client import NoDaemon

    if args.since is not None and args.lines == DEFAULT_LINES:
        args.lines = MAX_SINCE_LINES  # --since alone: everything since then that is kept

    try:
        document = client.request("GET", "/v1/status")
    except NoDaemon:
        if client.config is None:  # --url: the log files are the daemon's, elsewhere
            raise
        return _logs_from_files(args, client.config)
    instances = document.get("services") or []
    chosen, unmatched = select(instances, args.patterns)
    for pattern in unmatched:
        say(no_match(pattern))
    if unmatched:
        return EXIT_FAILED
    names = [i["name"] for i in instances]
    if not args.follow:
        entries = list(
            _from(_recent_lines(client, args.patterns, instances, args.lines), args.since)
        )
        LinePrinter(names, _shown(entries), json_lines=args.json).write_all(entries)
        return EXIT_OK
    # What will be printed is not known yet: make room for every instance asked for.
    printer = LinePrinter(names, [i["name"] for i in chosen], json_lines=args.json)
    reexecs = document.get("daemon", {}).get("reexecs", 0)
    names_chosen = [str(i["name"]) for i in chosen]
    after = _After()
    try:
        stream = _follow(client, args.patterns, instances, args.lines)
        while True:
            for entry in _from(stream, args.since):
                if after.fresh(entry):
                    printer.write(entry, flush=True)
            # The stream ends when the daemon stops, re-execs (then follow the new
            # image) or dropped this follower for falling behind (then follow it
            # again). Subscribed first, then what was written since the last line
            # shown is read from the log files (the daemon writes a line to its file
            # before it offers it to followers), so nothing falls in between.
            serving = _serving(client)
            if serving is None:
                break
            if serving <= reexecs:
                say(
                    "this follower fell behind the daemon; "
                    + (
                        "the lines in between are read from the log files"
                        if client.config is not None
                        else "the lines in between are in the log files on its machine"
                    )
                )
            reexecs = serving
            stream = _follow(client, args.patterns, instances, 0)
            after.replay()
            if client.config is not None:  # --url: the files are elsewhere
                for entry in _from(
                    _since_in_files(client.config, names_chosen, after.time), args.since
                ):
                    if after.fresh(entry):
                        printer.write(entry, flush=True)
            after.replay()
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how one stops following
    say("the daemon stopped; no more lines")
    return EXIT_OK


class _After:
    """Which entries are new, when a stream is asked for again after a re-exec.

    Entries arrive in time order; several can share a time (a batch read at once),
    even with the same text. So it counts what was shown at the latest time, and a
    replayed stream skips that many of each before showing anything new.
    """

    def __init__(self) -> None:
        self.time = ""
        # Counts by entry (dicts: collections.Counter is not worth its import here).
        self._shown: dict[tuple[Any, ...], int] = {}
        self._skip: dict[tuple[Any, ...], int] = {}

    def replay(self) -> None:
        self._skip = dict(self._shown)

    def fresh(self, entry: LogEntry) -> bool:
        when, key = str(entry.get("time", "")), _key(entry)
        if when < self.time:
            return False
        if when == self.time and self._skip.get(key, 0) > 0:
            self._skip[key] -= 1
            return False
        if when > self.time:
            self.time, self._shown, self._skip = when, {}, {}
        self._shown[key] = self._shown.get(key, 0) + 1
        return True


def _since_in_files(config: str, names: Sequence[str], since: str) -> Iterator[LogEntry]:
    """The lines of these instances' log files from `since` on, in time order."""
    import heapq

    log_dir = settings_path(config, "log_dir")
    per_instance = [
        [e for e in read_log_file(log_dir, name, MAX_SINCE_LINES) if e["time"] >= since]
        for name in names
    ]
    yield from heapq.merge(*per_instance, key=lambda e: str(e["time"]))


def _serving(client: Client) -> int | None:
    """The daemon's count of re-execs if it still serves; None if it is gone or
    stopping (its listening socket lives through an exec, so one request tells)."""
    from herdsman.cli.client import ApiError, NoDaemon

    try:
        daemon = client.request("GET", "/v1/status")["daemon"]
    except (NoDaemon, ApiError, OSError):
        return None
    if daemon.get("shutting_down"):
        return None
    return int(daemon.get("reexecs", 0))


def _logs_query(pattern: str | None, n: int, follow: bool) -> str:
    from herdsman.cli.client import quote

    query = f"/v1/logs?n={n}"
    if pattern is not None:
        query += f"&instance={quote(pattern, plus=True)}"
    return query + "&follow=1" if follow else query


def _recent_lines(
    client: Client, patterns: Sequence[str], instances: Sequence[Mapping[str, Any]], n: int
) -> list[LogEntry]:
    """The last `n` lines of what the patterns name, merged in time order."""
    from herdsman.cli.client import READ_TIMEOUT

    if len(patterns) <= 1:
        path = _logs_query(patterns[0] if patterns else None, n, follow=False)
        return list(client.stream(path, timeout=READ_TIMEOUT))
    # The API takes one pattern: ask once per pattern, and keep each instance's lines
    # from the first answer that covers it, so overlapping patterns give no duplicates.
    per_pattern = []
    covered: set[str] = set()
    for pattern in patterns:
        names = {i["name"] for i in instances if matches(pattern, i["name"], i["service"])}
        fresh = names - covered
        covered |= names
        if fresh:
            entries = client.stream(_logs_query(pattern, n, follow=False), timeout=READ_TIMEOUT)
            per_pattern.append([e for e in entries if e.get("instance") in fresh])
    return last_lines(per_pattern, n)


def _follow(
    client: Client, patterns: Sequence[str], instances: Sequence[Mapping[str, Any]], n: int
) -> Iterator[LogEntry]:
    """The last `n` lines, then new ones as they come; subscribed when this returns."""
    if len(patterns) <= 1:
        return client.stream(_logs_query(patterns[0] if patterns else None, n, follow=True))
    # Several patterns: follow everything and keep what they name. The live stream is
    # opened before the recent lines are fetched, so no line falls between the two;
    # a line in both is shown once.
    names = {i["name"] for i in select(instances, patterns)[0]}
    live = client.stream(_logs_query(None, 0, follow=True))
    recent = _recent_lines(client, patterns, instances, n)
    seen = {_key(e) for e in recent}
    rest = (e for e in live if e.get("instance") in names and _key(e) not in seen)
    return itertools.chain(recent, rest)


def _shown(entries: Iterable[LogEntry]) -> list[str]:
    return list({str(e.get("instance")): None for e in entries})


def _key(entry: LogEntry) -> tuple[Any, ...]:
    return (entry.get("time"), entry.get("instance"), entry.get("stream"), entry.get("line"))


class LinePrinter:
    """Writes log entries as `instance │ line` (or JSON), instance names padded to the
    longest of `shown`, coloured on a terminal like the foreground `up` does."""

    def __init__(self, names: Sequence[str], shown: Sequence[str], *, json_lines: bool) -> None:
        self._json = json_lines
        self._out = sys.stdout
        self._colour = table.wants_colour(self._out)
        self._width = max((len(n) for n in shown), default=0)
        self._prefixes = table.instance_prefixes(names, colour=self._colour, width=self._width)

    def write(self, entry: LogEntry, *, flush: bool = False) -> None:
        if self._json:
            text = cjson.dumps(entry, ensure_ascii=False)
        else:
            name = str(entry.get("instance"))
            prefix = self._prefixes.get(name)
            if prefix is None:  # an instance that appeared after we started (a reload)
                prefix = self._prefixes[name] = table.instance_prefixes(
                    [name], colour=self._colour, width=self._width
                )[name]
            text = f"{prefix}{entry.get('line', '')}"
        self._out.write(text + "\n")
        if flush:
            self._out.flush()

    def write_all(self, entries: Iterable[LogEntry]) -> None:
        for entry in entries:
            self.write(entry)
        self._out.flush()


def last_lines(per_instance: Iterable[Iterable[LogEntry]], n: int) -> list[LogEntry]:
    """The last `n` of several time-ordered sequences, merged in time order (ISO-8601
    UTC timestamps of one width sort as text)."""
    import heapq

    merged = list(heapq.merge(*per_instance, key=lambda e: str(e.get("time", ""))))
    return merged[-n:] if n else []


# --- logs without a daemon: the log files ---------------------------------------


def _logs_from_files(args: argparse.Namespace, config: str) -> int:
    """`logs` when no daemon runs: the same lines, read from `<log_dir>/<instance>.log`
    and its rotated backups. No log files at all is not an error: a note, exit 0."""
    log_dir = settings_path(config, "log_dir")
    names = instance_names(config, log_dir)
    instances = [{"name": n, "service": service_of(n)} for n in names]
    chosen, unmatched = select(instances, args.patterns)
    for pattern in unmatched:
        say(no_match(pattern))
    if unmatched:
        return EXIT_FAILED
    per_instance = [read_log_file(log_dir, str(i["name"]), args.lines) for i in chosen]
    if not any(per_instance):
        say(f"no daemon is running for {config}, and no log lines in {log_dir}")
        return EXIT_OK
    say(f"no daemon is running for {config}; showing its log files in {log_dir}")
    entries = list(_from(last_lines(per_instance, args.lines), args.since))
    LinePrinter(names, _shown(entries), json_lines=args.json).write_all(entries)
    if args.follow:
        say("not following: no daemon writes to these files")
    return EXIT_OK


def instance_names(config: str, log_dir: Path) -> list[str]:
    """The config's instances in its order, then any others with a log file (the config
    may have changed since they ran). `herdsman.log` is the daemon's own."""
    from pathlib import Path

    from herdsman.config.errors import ConfigError
    from herdsman.config.parse import read_document

    names: list[str] = []
    try:
        services = read_document(Path(config)).data.get("services")
    except ConfigError:  # a broken config must not hide the logs of what ran
        services = None
    if isinstance(services, dict):
        for service, body in services.items():
            replicas = body.get("replicas", 1) if isinstance(body, dict) else 1
            if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas > 1:
                names.extend(f"{service}.{i}" for i in range(replicas))
            else:
                names.append(str(service))
    try:
        files = sorted(os.listdir(log_dir))
    except OSError:
        files = []
    for file in files:
        stem, dot, rest = file.partition(".log")
        rotated = rest == "" or rest[1:].isdigit()
        if dot and rotated and stem != "herdsman" and stem not in names:
            names.append(stem)
    return names


def read_log_file(log_dir: Path, instance: str, n: int) -> list[LogEntry]:
    """The last `n` lines of an instance's log, from `NAME.log` back through its rotated
    backups `NAME.log.1`, `NAME.log.2`, ..., oldest first."""
    lines: list[bytes] = []
    backup = 0
    while len(lines) < n:
        path = log_dir / (f"{instance}.log" if backup == 0 else f"{instance}.log.{backup}")
        try:
            lines = tail(path, n - len(lines)) + lines
        except FileNotFoundError:
            if backup > 0:
                break
        except OSError as err:
            say(f"cannot read {path}: {err.strerror}")
            break
        backup += 1
    return [parse_log_line(instance, line) for line in lines]


def tail(path: Path, n: int) -> list[bytes]:
    """The last `n` lines of a file, reading only the blocks they are in from its end."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        data = b""
        start = end
        # n newlines plus the one ending the line before them bound the last n lines.
        while start > 0 and data.count(b"\n") <= n:
            step = min(LOG_FILE_BLOCK, start)
            start -= step
            f.seek(start)
            data = f.read(step) + data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as complete lines do
    if start > 0:
        lines = lines[1:]  # the first piece may be the end of a longer line
    return lines[-n:] if n else []


def parse_log_line(instance: str, raw: bytes) -> LogEntry:
    """A line of a log file (see core/logline.py) as the API's log object, `"partial":
    true` on a piece of a longer line, as the daemon answers. A line not in that
    form is kept whole as text, with no time."""
    from herdsman.core.logline import parse_line  # datetime: not on the status path

    parsed = parse_line(raw)
    if parsed is None:
        return {
            "time": "",
            "instance": instance,
            "stream": "out",
            "line": raw.decode("utf-8", "replace"),
        }
    time, stream, line, partial = parsed
    entry: LogEntry = {"time": time, "instance": instance, "stream": stream, "line": line}
    if partial:
        entry["partial"] = True
    return entry


def read_settings(config: str) -> dict[str, Any]:
    """The config's `[settings]` table, ${VAR} expanded in its strings, without
    validating the rest of the file (or importing pydantic). Empty when unreadable."""
    from pathlib import Path

    from herdsman.config.envfile import with_dotenv
    from herdsman.config.errors import ConfigError
    from herdsman.config.interpolate import expand
    from herdsman.config.parse import read_document

    try:
        settings = read_document(Path(config)).data.get("settings")
        environ = with_dotenv(Path(config).parent, os.environ)
    except ConfigError:
        return {}
    if not isinstance(settings, dict):
        return {}
    expanded: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, str):
            value, problems = expand(value, environ)
            if problems:
                continue
        expanded[str(key)] = value
    return expanded


def settings_path(config: str, key: str) -> Path:
    """`state_dir` or `log_dir` as the daemon resolves them: relative to the config's
    directory, and log_dir inside state_dir unless set."""
    from pathlib import Path

    from herdsman.config.paths import LOG_DIR_NAME, STATE_DIR, resolve

    settings = read_settings(config)
    base = Path(config).parent
    state_dir = settings.get("state_dir")
    state = resolve(Path(state_dir if isinstance(state_dir, str) else STATE_DIR), base)
    if key == "state_dir":
        return state
    value = settings.get(key)
    return resolve(Path(value), base) if isinstance(value, str) else state / LOG_DIR_NAME


# --- down -----------------------------------------------------------------------


@_client_command
def cmd_reload(args: argparse.Namespace, client: Client) -> int:
    from herdsman.cli.client import ApiError

    try:
        result = client.request("POST", "/v1/reload", timeout=None)
    except ApiError as err:
        if err.status != 400:
            raise
        for line in err.message.splitlines():
            say(line)
        say("the config is invalid: nothing was changed")
        return EXIT_FAILED
    for key in ("added", "removed", "changed", "unchanged"):
        print(f"{key}: {', '.join(result[key]) or '-'}")
    if result.get("not_applied"):
        say(f"{', '.join(result['not_applied'])} changed: they apply when herdsman restarts")
    for warning in result.get("warnings", ()):
        say(f"warning: {warning}")
    return EXIT_OK


@_client_command
def cmd_reexec(args: argparse.Namespace, client: Client) -> int:
    """Ask for the re-exec, then wait until the new image answers on the socket."""
    from herdsman.cli.client import ApiError, ConnectionLost, NoDaemon

    try:
        answer = client.request("POST", "/v1/reexec", timeout=None)
    except ApiError as err:
        for line in err.message.splitlines():
            say(line)
        say("nothing was changed: the daemon keeps running as it was")
        return EXIT_FAILED
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            daemon = client.request("GET", "/v1/status")["daemon"]
        except (NoDaemon, ApiError, ConnectionLost, OSError):
            daemon = None
        if daemon is not None and daemon.get("reexecs", 0) >= answer["reexecs"]:
            print(f"herdsman: re-executed (pid {daemon['pid']}, herdsman {daemon['version']})")
            return EXIT_OK
        time.sleep(0.05)
    say(f"the new image did not answer within {args.timeout:g}s")
    return EXIT_FAILED


@_client_command
def cmd_down(args: argparse.Namespace, client: Client) -> int:
    from herdsman.cli.client import NoDaemon

    try:
        client.request("POST", "/v1/shutdown")
    except NoDaemon:
        if client.config is None:  # --url: nothing to look for here
            raise
        return _down_without_daemon(client.config)
    pid = client.peer_pid
    timeout = DOWN_GRACE + (
        shutdown_timeout(client.config) if client.config is not None else SHUTDOWN_TIMEOUT
    )
    if not wait_gone(client, pid, time.monotonic() + timeout):
        which = f" (pid {pid})" if pid else ""
        say(f"the daemon{which} did not stop within {timeout:g}s")
        return EXIT_FAILED
    print("herdsman: stopped")
    return EXIT_OK


def _down_without_daemon(config: str) -> int:
    """`down` after the daemon died: stop what it left running, or say why not."""
    from herdsman.runtime.lock import AlreadyRunning

    try:
        stopped, problems = stop_leftovers(config, shutdown_timeout(config))
    except AlreadyRunning as err:
        say(f"{err}, but does not answer yet: try again once it does")
        return EXIT_FAILED
    print(f"herdsman: no daemon was running for {config}")
    if stopped:
        names = ", ".join(stopped)
        print(f"herdsman: stopped what a daemon that died had left running: {names}")
    failed = False
    for problem in problems:
        say(problem)
        failed = failed or problem.startswith(NOT_STOPPED)
    return EXIT_FAILED if failed else EXIT_OK


NOT_STOPPED = "still running: "


def stop_leftovers(config: str, timeout: float) -> tuple[list[str], list[str]]:
    """Stop the services a dead daemon left running (by state.json, and by the
    environment they carry: see runtime/leftovers.py): their stop signal to each
    process group, SIGKILL after `timeout`. Returns the instances stopped and one
    sentence per problem (those that left a process running start with
    NOT_STOPPED). AlreadyRunning when a daemon holds the lock."""
    from pathlib import Path

    from herdsman.runtime import leftovers
    from herdsman.runtime.lock import DaemonLock
    from herdsman.runtime.statefile import StateFile

    state_dir = settings_path(config, "state_dir")
    lock = DaemonLock(state_dir)
    # No daemon may start (and adopt them) meanwhile; in a state_dir that cannot be
    # written (read-only after a crash), the lock is taken through a read-only fd.
    lock.acquire_existing()
    try:
        state = StateFile(state_dir / "state.json")
        found, problems = leftovers.left_by(state, Path(config))
        if not any(found.every_pid()):
            return [], problems
        stopped, refused = leftovers.stop(found, state_dir, timeout)
        problems += [NOT_STOPPED + why for why in refused]
        try:
            state.remove()
        except OSError as err:
            problems.append(f"cannot remove {state.path}: {err.strerror or err}")
        return stopped, problems
    finally:
        lock.release()


def shutdown_timeout(config: str) -> float:
    from herdsman.config.units import parse_duration

    try:
        return parse_duration(read_settings(config).get("shutdown_timeout", SHUTDOWN_TIMEOUT))
    except ValueError:
        return SHUTDOWN_TIMEOUT


def wait_gone(client: Client, pid: int | None, deadline: float) -> bool:
    """Wait until nothing answers on the socket; False at the deadline. Watching the
    daemon's pid (a pidfd) wakes us the moment it exits, without polling."""
    import select

    if pid is not None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = None  # already gone, or a kernel without pidfds: poll the socket
        if pidfd is not None:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    return False
            finally:
                os.close(pidfd)
    # The socket normally goes with the process; this also covers a daemon we could
    # not watch, and a listening socket that outlived it in another process.
    while client.answers():
        if time.monotonic() >= deadline:
            return False
        time.sleep(GONE_POLL)
    return True


CLIENT_COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "signal": cmd_signal,
    "logs": cmd_logs,
    "down": cmd_down,
    "reload": cmd_reload,
    "reexec": cmd_reexec,
}
