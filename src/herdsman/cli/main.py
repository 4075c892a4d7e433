"""The `herdsman` command: argument parsing and dispatch.

Each command imports what it needs when it runs, so client commands stay fast
and never load the server stack; a client command given plainly (`status`,
`logs web`, `stop --no-wait db`) is read without argparse. Errors are one sentence
on stderr; exit codes follow the README: 0 ok, 1 failed, 2 bad usage or config,
3 no daemon.
"""

from __future__ import annotations

import os
import sys

from herdsman import __version__
from herdsman.cli.commands import CLIENT_COMMANDS, PLAIN, WAIT_TIMEOUT, add_parsers, seconds_arg
from herdsman.cli.live import LIVE_COMMANDS, add_live_parsers

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from herdsman.cli.commands import Plain
    from herdsman.cli.parsing import Parser
    from herdsman.config import Config
    from herdsman.core.plan import Plan
    from herdsman.runtime.planner import Helper

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON = 0, 1, 2, 3
CONFIG_HELP = (
    "config file (default: herdsman.toml, herdsman.yaml or herdsman.yml in the current"
    " directory or the nearest parent that has one)"
)
DEBUG_HELP = "show tracebacks on errors"


class UsageError(Exception):
    """Bad usage or config: exit 2 with the message."""


def _global_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """`-c FILE` and `--debug` after the command too (`herdsman status -c x.toml`):
    each subcommand takes them, and leaves the value given before it when absent."""
    import argparse

    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sub in getattr(action, "choices", {}).values():
            sub.add_argument(
                "-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP
            )
            sub.add_argument(
                "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
            )
            _global_options_anywhere(sub)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `command`, with that command's subparser only
    (every subparser costs argparse's gettext look-ups: a tenth of `status`)."""
    from herdsman.cli.parsing import Parser

    parser = Parser(prog="herdsman", description="A process supervisor for Linux.")
    parser.add_argument("-c", "--config", metavar="FILE", help=CONFIG_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"herdsman {__version__}")
    parser.add_argument(
        "--url",
        metavar="URL",
        help="client commands: the daemon's TCP listener (http://HOST:PORT) instead of -c's socket",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="client commands: send the API token in FILE (what --url's daemon wants)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    def wanted(name: str) -> bool:
        return command is None or name == command

    if wanted("up"):
        up = sub.add_parser("up", help="run the services (foreground, or -d in the background)")
        up.add_argument(
            "services", nargs="*", metavar="SERVICE", help="only these (and what they depend on)"
        )
        up.add_argument("-d", "--detach", action="store_true", help="run as a background daemon")
        up.add_argument(
            "--wait", action="store_true", help="with -d: wait until the services run and are ready"
        )
        up.add_argument(
            "--watch",
            action="store_true",
            help="restart services that declare `watch` when their files change (for development)",
        )
        up.add_argument(
            "--timeout",
            "--wait-timeout",
            dest="timeout",
            type=seconds_arg,
            metavar="S",
            help=f"with --wait: give up after S seconds (default {WAIT_TIMEOUT:g}); the wait"
            " also ends as soon as an instance cannot get there",
        )

    add_parsers(sub, wanted)
    add_live_parsers(sub, wanted)
    if wanted("check"):
        sub.add_parser("check", help="validate the config")
    if wanted("schema"):
        sub.add_parser("schema", help="print a JSON Schema of the config, for editors")
    if wanted("systemd-unit"):
        sub.add_parser("systemd-unit", help="print a systemd unit that runs this daemon")
    if wanted("import"):
        imp = sub.add_parser(
            "import", help="print a herdsman.toml equivalent to a Procfile or supervisord.conf"
        )
        imp.add_argument("format", choices=["procfile", "supervisord"], help="what FILE is")
        imp.add_argument("file", metavar="FILE", help="the Procfile or supervisord.conf to import")
        imp.add_argument(
            "--port",
            type=int,
            metavar="N",
            help="procfile: the first PORT (default: PORT from .env, else 5000, as foreman does)",
        )
    if wanted("export"):
        _add_export_parser(sub)
    if wanted("version"):
        sub.add_parser("version", help="print the version")
    _global_options_anywhere(parser)
    return parser


def _add_export_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    from herdsman.cli.parsing import Parser

    export = sub.add_parser("export", help="write systemd units or Kubernetes manifests")
    targets = export.add_subparsers(dest="target", metavar="TARGET", parser_class=Parser)
    targets.required = True
    systemd = targets.add_parser("systemd", help="one unit per service, and a target")
    kubernetes = targets.add_parser("kubernetes", help="a Deployment or Job per service")
    for target in (systemd, kubernetes):
        target.add_argument(
            "-o", "--output", metavar="DIR", help="write one file per unit or object into DIR"
        )
        target.add_argument(
            "--name", help="name of the whole stack (default: the config file's directory)"
        )
    systemd.add_argument(
        "--systemd-version",
        type=int,
        default=252,
        metavar="N",
        help="the oldest systemd to run the units (default 252: Debian 12)",
    )
    systemd.add_argument("--prefix", default="", help="put PREFIX before every unit's name")
    kubernetes.add_argument(
        "--image", help="container image for services without [services.NAME.kubernetes] image"
    )


def load(args: argparse.Namespace) -> Config:
    from pathlib import Path

    from herdsman.config import ConfigError, find_config_file, load_config

    try:
        path = find_config_file(args.config, Path.cwd(), os.environ)
        return load_config(path)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def cmd_check(args: argparse.Namespace) -> int:
    from herdsman.config.programs import missing_programs
    from herdsman.runtime import tasklimit
    from herdsman.runtime.fdlimit import hard_limit, shortfall

    config = load(args)
    count = sum(svc.replicas for svc in config.services.values())
    print(f"{config.path}: ok ({len(config.services)} services, {count} instances)")
    settings = config.settings
    # The daemon raises its soft limit to the hard one, so that is what counts here.
    listeners = 1 + (settings.tcp is not None)
    for problem in (
        shortfall(count, hard_limit(), listeners, settings.max_connections),
        tasklimit.shortfall(count),
    ):
        if problem is not None:
            print(f"herdsman: warning: {problem}", file=sys.stderr)
    for warning in missing_programs(config, os.environ):
        print(
            f"herdsman: warning: {warning}; it may be there when the service runs", file=sys.stderr
        )
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    import gc

    # No collection until the first spawns are on their way (cli/up.py turns it back
    # on): the imports to there would run it again and again, and find little to
    # free (9M of the 210M instructions to the fork, 11M of the 390M after it).
    gc.disable()
    from herdsman.runtime.planner import request_plan

    # The config is validated in a forked helper while this process imports the
    # runtime, or with -d, while the daemon's own process does.
    helper = request_plan(args.config)
    if args.detach:
        from herdsman.cli.detach import DetachError, Launch, wait_until_settled

        launch = Launch()
    else:
        from herdsman.cli.up import run_up
        from herdsman.runtime.leftovers import take_census
        from herdsman.runtime.supervisor import new_spawner

        # While the helper validates (it takes longer than the imports above): what
        # the scan for a dead daemon's processes would read after the plan, and the
        # spawning threads.
        census = take_census()
        spawner = new_spawner()
    try:
        plan = _plan_for_up(args, helper)
    except BaseException:
        if args.detach:
            launch.cancel()
        else:
            spawner.close()
        raise
    if not args.detach:
        return run_up(plan, args.services, watch=args.watch, census=census, spawner=spawner)
    try:
        pid = launch.hand(plan, args.services, watch=args.watch)
    except DetachError as err:
        print(f"herdsman: the daemon did not start: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"herdsman: daemon started (pid {pid}) for {plan.config_path}")
    if not args.wait:
        return EXIT_OK
    failed = wait_until_settled(plan, args.services, args.timeout or WAIT_TIMEOUT)
    for line in failed:
        print(f"herdsman: {line}", file=sys.stderr)
    if failed:
        return EXIT_FAILED
    return EXIT_OK


def _plan_for_up(args: argparse.Namespace, helper: Helper) -> Plan:
    """The helper's plan; UsageError if the config is invalid or `up` cannot run it
    as asked."""
    from herdsman.runtime.planner import PlanError, receive_plan

    try:
        plan = receive_plan(helper)
    except PlanError as err:
        raise UsageError(str(err)) from None
    for name in args.services:
        if name not in plan.services:
            import difflib

            close = difflib.get_close_matches(name, plan.services, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown service {name!r}{hint}")
    if (args.wait or args.timeout is not None) and not args.detach:
        raise UsageError("--wait and --timeout only go with -d")
    return plan


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from herdsman.config.schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return EXIT_OK


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    from herdsman.runtime.systemd import unit_file

    config = load(args)
    print(unit_file(config.path, config.settings.shutdown_timeout), end="")
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from herdsman.config import ConfigError

    path = Path(args.file)
    try:
        if args.format == "procfile":
            from herdsman.config.importers.procfile import import_procfile

            imported = import_procfile(path, args.port)
        else:
            if args.port is not None:
                raise UsageError("--port only goes with import procfile")
            from herdsman.config.importers.supervisord import import_supervisord

            imported = import_supervisord(path)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    print(imported.toml, end="")
    for warning in imported.warnings:
        print(f"herdsman: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from herdsman.export import ExportError
    from herdsman.export.output import write_export

    config = load(args)
    try:
        if args.target == "systemd":
            from herdsman.export.systemd import export_systemd

            result = export_systemd(
                config, version=args.systemd_version, name=args.name, prefix=args.prefix
            )
        else:
            from herdsman.export.kubernetes import export_kubernetes

            result = export_kubernetes(config, image=args.image, name=args.name)
        write_export(result, args.output, args.target)
    except ExportError as err:
        raise UsageError(str(err)) from None
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"herdsman {__version__}")
    return EXIT_OK


COMMANDS = {
    "up": cmd_up,
    "check": cmd_check,
    "schema": cmd_schema,
    "systemd-unit": cmd_systemd_unit,
    "import": cmd_import,
    "export": cmd_export,
    "version": cmd_version,
    **CLIENT_COMMANDS,
    **LIVE_COMMANDS,
}


# `up` is read plainly too, as its parser reads it: its validating helper is forked
# once the command line is read, and argparse would take a fifth of the time to that.
PLAIN_COMMANDS: dict[str, Plain] = {
    **PLAIN,
    "up": (
        {"-d": "detach", "--detach": "detach", "--wait": "wait", "--watch": "watch"},
        {"--timeout": ("timeout", seconds_arg), "--wait-timeout": ("timeout", seconds_arg)},
        {"detach": False, "wait": False, "watch": False, "timeout": None},
        ("services", 0),
    ),
}

# The options before the command that take a value (as the next argument or after =),
# and where it goes.
_VALUE_OPTIONS = {
    "-c": "config",
    "--config": "config",
    "--url": "url",
    "--token-file": "token_file",
}


def command_of(argv: list[str]) -> str | None:
    """The command `argv` runs when that is plain: before it only `--debug` and the
    options in _VALUE_OPTIONS, spelled in full. None otherwise (help, an abbreviated
    option, a mistyped command): the whole parser then says what argparse says."""
    args = iter(argv)
    for arg in args:
        if arg in _VALUE_OPTIONS:
            next(args, None)
        elif arg == "--debug" or arg.startswith(("-c", *(f"{o}=" for o in _VALUE_OPTIONS))):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg if arg in COMMANDS else None
    return None


def plain_args(argv: list[str]) -> argparse.Namespace | None:
    """What the parser makes of `argv` when it runs a command of PLAIN_COMMANDS plainly:
    before the command only --debug and the options of _VALUE_OPTIONS (spelled in
    full, a value after each), after it only its flags, its options that take a value
    (spelled in full, the value after each, one its type reads), `-c FILE`,
    `--config FILE`, `--debug` and one run of PATTERNs (argparse takes no second run).
    None otherwise: the parser then reads it, and says what is wrong."""
    values: dict[str, object] = {"config": None, "debug": False, "url": None, "token_file": None}
    args = iter(argv)
    for arg in args:
        if arg == "--debug":
            values["debug"] = True
        elif arg in _VALUE_OPTIONS:
            value = next(args, "-")
            if value.startswith("-"):
                return None
            values[_VALUE_OPTIONS[arg]] = value
        elif arg in PLAIN_COMMANDS:
            command = arg
            break
        else:
            return None
    else:
        return None
    flags, options, defaults, positional = PLAIN_COMMANDS[command]
    values.update(defaults, command=command)
    patterns: list[str] = []
    run = "before"  # where we are in relation to the run of PATTERNs
    for arg in args:
        if not arg.startswith("-"):
            if positional is None or run == "after":
                return None
            patterns.append(arg)
            run = "in"
            continue
        run = "after" if run == "in" else run
        if arg in flags:
            values[flags[arg]] = True
        elif arg in options:
            dest, read = options[arg]
            value = next(args, "-")
            if value.startswith("-"):
                return None
            try:
                values[dest] = read(value)
            except Exception:  # a value the parser refuses: it says why
                return None
        elif arg == "--debug":
            values["debug"] = True
        elif arg in ("-c", "--config"):
            value = next(args, "-")
            if value.startswith("-"):
                return None
            values["config"] = value
        else:
            return None
    if positional is not None:
        dest, least = positional
        if len(patterns) < least:
            return None
        values[dest] = patterns
    # Attributes are all a command reads of its arguments: no need for argparse's class.
    return _Arguments(values)  # type: ignore[return-value]


class _Arguments:
    """A plain command line's values as attributes, as argparse.Namespace holds them
    (types.SimpleNamespace would do, but `types` is one more module to load)."""

    def __init__(self, values: dict[str, object]) -> None:
        self.__dict__.update(values)


def main(argv: list[str] | None = None) -> int:
    if argv is None and "_ARGCOMPLETE" in os.environ:
        # A shell's TAB (see `herdsman completion`): answered here, then it exits.
        from herdsman.cli.completion import complete

        complete(build_parser())
    given = sys.argv[1:] if argv is None else argv
    args = plain_args(given) or build_parser(command_of(given)).parse_args(given)
    try:
        return COMMANDS[args.command](args)
    except UsageError as err:
        for line in str(err).splitlines():
            print(f"herdsman: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`herdsman schema | head`): nothing left to say, and
        # the interpreter's last flush must not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK
    except Exception as err:
        if args.debug:
            raise
        print(f"herdsman: internal error: {err} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILED
