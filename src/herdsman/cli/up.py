"""`herdsman up`: compose the daemon with the control API and run it.

In the foreground every line is printed as `name │ line`; with `-d` the daemon
runs in its own session, and the invoking command returns once the control
socket answers (see detach.py). Either way the first SIGINT/SIGTERM stops
everything gracefully in reverse dependency order; a second one kills at once.
"""

from __future__ import annotations

# Before anything imports asyncio: the daemon loads ssl only once an https URL asks.
import herdsman.runtime.tls  # noqa: F401

# isort: split
import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from herdsman import __version__
from herdsman.api.listeners import ListenError, bind
from herdsman.cli.console import Console
from herdsman.cli.table import wants_colour
from herdsman.core.lifecycle import Event, Exited, Spawned, SpawnFailed, Start, describe_exit
from herdsman.core.plan import Plan
from herdsman.core.states import State
from herdsman.runtime import tasklimit
from herdsman.runtime.adoption import Inherited, inherited_fds
from herdsman.runtime.daemon import Daemon
from herdsman.runtime.fdlimit import raise_soft_limit, shortfall
from herdsman.runtime.files import Unsafe, check_private_file, make_state_dir
from herdsman.runtime.handover import VERSION, DaemonHandover, Handover
from herdsman.runtime.leftovers import Census
from herdsman.runtime.lock import AlreadyRunning, DaemonLock
from herdsman.runtime.logfile import LogHandler
from herdsman.runtime.reexec import HELD_SIGNALS
from herdsman.runtime.spawn import Spawner
from herdsman.runtime.supervisor import Managed
from herdsman.runtime.systemd import Manager

if TYPE_CHECKING:
    from herdsman.api.server import ApiServer


class StartupError(Exception):
    """The daemon could not start (socket, token, state dir): one sentence."""


def setup_logging(plan: Plan, *, to_stderr: bool) -> logging.Logger:
    """The daemon's own log: `<log_dir>/herdsman.log`, UTC timestamps."""
    # No line says where it was logged from, nor the thread or process: without
    # finding those out (the stack walk above all) a record costs a third less, and
    # every state change of every instance makes one.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    log = logging.getLogger("herdsman")
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        plan.log_dir.mkdir(parents=True, exist_ok=True)
        handler = LogHandler(
            plan.log_dir / "herdsman.log",
            plan.daemon_log_max_bytes,
            plan.daemon_log_backups,
            json=plan.log_format == "json",
        )
        handler.file.open()  # now: a log_dir that cannot be written is said at once
    except OSError as err:
        raise StartupError(f"cannot write to log_dir {plan.log_dir}: {err.strerror}") from None
    log.handlers[:] = [handler]
    if to_stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("herdsman: %(message)s"))
        log.addHandler(console)
    return log


def read_token(plan: Plan) -> str | None:
    if plan.tcp is None or plan.token_file is None:
        return None
    try:
        check_private_file(plan.token_file, "token_file")
        token = plan.token_file.read_text().strip()
    except Unsafe as err:
        raise StartupError(str(err)) from None
    except OSError as err:
        raise StartupError(f"cannot read token_file {plan.token_file}: {err.strerror}") from None
    if not token:
        raise StartupError(f"token_file {plan.token_file} is empty")
    return token


class EarlyNotes:
    """A detached daemon's notes (a corrupt state.json, adopted instances) until it
    detaches: on its stderr, which `up -d` reads and prints."""

    def __init__(self) -> None:
        self.active = True

    def __call__(self, text: str) -> None:
        if self.active:
            print(f"herdsman: {text}", file=sys.stderr, flush=True)


def console_hooks(console: Console) -> dict[str, Callable[..., None]]:
    """Daemon hooks that print herdsman's own messages and every output line."""

    def on_change(managed: Managed, old: State, new: State, event: Event) -> None:
        core, say = managed.core, console.say
        match event:
            case Spawned(pid=pid):
                say(managed.name, f"started (pid {pid})")
            case Exited(code=code, signal=sig, said=said):
                if core.state is State.STARTING:
                    say(managed.name, describe_exit(code, sig, said) + "; restarting now")
                else:
                    say(managed.name, core.message or describe_exit(code, sig, said))
            case Start() if core.waiting:
                say(managed.name, core.message)
            case SpawnFailed():
                say(managed.name, core.message)

    return {
        "on_change": on_change,
        "on_line": console.lines,
        "on_note": lambda text: console.say(None, text),
    }


def run_up(
    plan: Plan,
    services: list[str],
    *,
    detached: bool = False,
    resumed: Handover | None = None,
    watch: bool = False,
    in_place: InPlace | None = None,
    census: Census | None = None,
    spawner: Spawner[Managed] | None = None,
) -> int:
    """Run the daemon until it is told to stop; the process exit code.

    `resumed`: what a previous image of this daemon handed over (see resume.py);
    `in_place`: such an image could not read it; `census`: the processes as they
    were while the plan was on its way (see leftovers.Census); `spawner`: made
    meanwhile too (see supervisor.new_spawner), closed here if no daemon took it.
    A re-exec ends here in `os.execv`, with the lock, the listening sockets and
    every service's pipes kept open for the new image.
    """
    try:
        lock = DaemonLock(plan.state_dir)
        if in_place is not None:
            in_place.fds = inherited_fds(lock.path)
        if resumed is not None:
            lock.adopt(resumed.lock_fd)
        elif in_place is not None and in_place.fds.lock_fd is not None:
            lock.adopt(in_place.fds.lock_fd)
        else:
            try:
                make_state_dir(plan.state_dir, allow_shared=plan.allow_shared_state_dir)
                lock.acquire()
            except (AlreadyRunning, Unsafe) as err:
                print(f"herdsman: {err}", file=sys.stderr)
                return 1
            except OSError as err:
                print(
                    f"herdsman: cannot use state_dir {plan.state_dir}: {err.strerror}",
                    file=sys.stderr,
                )
                return 1
        outcome: int | Reexec = 1
        try:
            outcome = asyncio.run(
                _serve(
                    plan,
                    services,
                    detached=detached,
                    resumed=resumed,
                    watch=watch,
                    in_place=in_place,
                    census=census,
                    spawner=spawner,
                )
            )
        except StartupError as err:
            print(f"herdsman: {err}", file=sys.stderr)
            return 1
        finally:
            if not isinstance(outcome, Reexec):
                lock.release()
        if isinstance(outcome, int):
            return outcome
        from herdsman.cli.resume import exec_new_image, fallback_args

        handover = Handover(
            outcome.daemon,
            outcome.listen_fds,
            lock.hand_over(),
            services,
            detached,
            watch,
            outcome.token,
        )
        fallback = fallback_args(
            outcome.plan.config_path,
            services,
            detached=detached,
            watch=watch,
            reexecs=outcome.daemon.reexecs,
            started_at=outcome.daemon.started_at,
        )
        error = exec_new_image(handover.to_data(), fallback)
        # The exec failed (the interpreter is gone?): this image takes over again, from
        # the same hand-over, rather than leaving the services without a daemon.
        print(f"herdsman: cannot re-exec ({error}); carrying on as before", file=sys.stderr)
        handover.daemon.reexecs -= 1  # it did not happen: `reexec` must not report it did
        return run_up(outcome.plan, services, detached=detached, resumed=handover, watch=watch)

    finally:
        if spawner is not None:
            spawner.close()  # the daemon's supervisor closed it already, if it took it


@dataclass(eq=False)
class InPlace:
    """A new image that could not read its hand-over (`why`): it adopts the services
    as after a crash, with the fds the previous image left open, and carries on
    its count of re-execs and when the daemon started."""

    why: str
    reexecs: int
    started_at: float
    fds: Inherited = field(default_factory=Inherited)


@dataclass(eq=False)
class Reexec:
    """The loop ended for a re-exec: what goes to the new image."""

    daemon: DaemonHandover
    listen_fds: list[int]
    plan: Plan  # what ran: if the exec fails, this image takes over again
    token: str | None = None  # the API's, as the daemon started


async def _serve(
    plan: Plan,
    services: list[str],
    *,
    detached: bool,
    resumed: Handover | None,
    watch: bool,
    in_place: InPlace | None,
    census: Census | None,
    spawner: Spawner[Managed] | None,
) -> int | Reexec:
    log = setup_logging(plan, to_stderr=not detached)
    # An image after a re-exec says nothing on stderr of its own: when detached,
    # that is herdsman.log, where the log has said it already.
    first_image = resumed is None and in_place is None
    count = sum(len(svc.instances) for svc in plan.services.values())
    listeners = 1 + (plan.tcp is not None)
    for problem in (
        shortfall(count, raise_soft_limit(), listeners, plan.max_connections),
        tasklimit.shortfall(count),
    ):
        if problem is not None:
            log.warning(problem)  # in the foreground, on the terminal too
            if detached and first_image:
                print(f"herdsman: warning: {problem}", file=sys.stderr)  # up -d shows it
    # A new image keeps the token the daemon started with, as it keeps its sockets:
    # a token file that is gone or changed since must not take the daemon down.
    token = resumed.token if resumed is not None else read_token(plan)
    console = None
    hooks: dict[str, Callable[..., None]] = {}
    if not detached:
        out = sys.stdout.buffer
        names = [inst.name for svc in plan.services.values() for inst in svc.instances]
        console = Console(names, out, colour=wants_colour(out))
        hooks = console_hooks(console)
    early_notes = EarlyNotes()
    if detached and first_image:
        hooks = {"on_note": early_notes}
    listen_error = None
    async with asyncio.TaskGroup() as tasks:
        manager = Manager(os.environ)
        daemon = Daemon(
            plan,
            log=log.getChild("runtime"),
            tasks=tasks,
            manager=manager,
            watch=watch,
            spawner=spawner,
            **hooks,
        )
        # Bound before anything starts (a socket we cannot have stops us first),
        # served once the first wave is out (see _serve_api).
        listening = resumed.listen_fds if resumed else in_place.fds.listen_fds if in_place else []
        try:
            if not listening:
                listening = await bind(
                    plan.socket,
                    socket_mode=plan.socket_mode,
                    socket_group=plan.socket_group,
                    tcp=plan.tcp,
                )
        except ListenError as err:
            listen_error = str(err)
            daemon.close()
        else:
            outcome = await _run(
                plan,
                services,
                daemon,
                listening,
                token,
                log,
                resumed,
                in_place,
                detached=detached,
                notes=early_notes,
                census=census,
            )
            if console is not None:
                console.flush()
    # Raised outside the task group, so the caller gets the error itself rather
    # than an ExceptionGroup around it.
    if listen_error is not None:
        raise StartupError(listen_error)
    if isinstance(outcome, Reexec):
        outcome.token = token
    return outcome


async def _run(
    plan: Plan,
    services: list[str],
    daemon: Daemon,
    listening: list[int],
    token: str | None,
    log: logging.Logger,
    resumed: Handover | None,
    in_place: InPlace | None,
    *,
    detached: bool,
    notes: EarlyNotes,
    census: Census | None,
) -> int | Reexec:
    """Serve until told to stop, then stop everything and close (or hand over)."""
    notify_fd = None
    if in_place is not None:
        log.warning(
            "cannot take over from the previous image: %s; adopting the services it ran"
            " as after a crash",
            in_place.why,
        )
        daemon.started_at = in_place.started_at
        daemon.reexecutor.reexecs = in_place.reexecs
        notify_fd = in_place.fds.notify_fd
    if resumed is not None:
        # Before the reaper's first collect: an instance that exited during the exec
        # must find its watcher registered, or its status would pass for an orphan's.
        daemon.reexecutor.resume(daemon, resumed.daemon)
        if resumed.version < VERSION:
            log.info("took over from an older image (its hand-over: version %d)", resumed.version)
        notify_fd = resumed.daemon.notify_fd
    daemon.open(notify_fd=notify_fd)
    # A previous image blocked these across its exec, so none could kill us before
    # our handlers were in place; now they are (and children must not inherit a mask).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    log.info("herdsman %s serving %s (pid %d)", __version__, plan.config_path, os.getpid())

    started = {"wave", "api"}  # what the start waits for: its first wave out, the API

    def out(what: str) -> None:
        started.discard(what)
        if started:
            return
        # What start-up built (modules, the plan, the instances) lives as long as
        # the daemon: the collector, off until here (see cmd_up), never walks it again.
        gc.freeze()
        gc.enable()
        if detached:
            # Our stdout and stderr become herdsman.log: the waiting `up -d` sees EOF
            # and returns (what we said until now on them, it printed). A new image
            # (re-exec) points them at the file again: its LogFile rotates them along.
            notes.active = False
            for handler in log.handlers:
                if isinstance(handler, LogHandler):
                    handler.file.point_std_here()

    if resumed is not None:
        daemon.reexecutor.carry_on()
        out("wave")
    else:
        daemon.adopt(in_place.fds.pipes if in_place else None, census)
        # Returns once the first slice of the wave is out; the rest goes out a slice
        # at a time while the loop serves the API, signals and the watchdog.
        daemon.supervisor.start_services(services or None, then=lambda: out("wave"))
    server = await _serve_api(plan, daemon, listening, token, log)
    out("api")
    daemon.manager.start_watchdog(asyncio.get_running_loop())
    announce = None
    if daemon.manager.present:
        announce = asyncio.create_task(_ready_once_settled(daemon))
    outcome: int | Reexec = 0
    try:
        await daemon.wait_for_shutdown()
        outcome = daemon.exit_code
    finally:
        if announce is not None:
            announce.cancel()
        if daemon.reexecutor.reason is not None:
            # The signals were blocked when the re-exec was decided; the server goes
            # first (it awaits), then the instances are recorded with nothing more
            # running on the loop, so no change can fall after the records.
            listen_fds = await server.hand_over()
            outcome = Reexec(daemon.reexecutor.hand_over(daemon), listen_fds, daemon.plan)
            daemon.close()
            log.info("herdsman handing over to a new image (%s)", daemon.reexecutor.reason)
        else:
            await server.close()
            daemon.close()
            log.info("herdsman stopped")
        daemon.manager.close()
    return outcome


async def _serve_api(
    plan: Plan, daemon: Daemon, listening: list[int], token: str | None, log: logging.Logger
) -> ApiServer:
    """The control API on the sockets bound before the start. Imported here, once the
    first slice of the first wave is out: the HTTP stack (h11, the routes, the OpenAPI
    bounds) was a tenth of the way from `up` to its first spawn, which needs none of it."""
    from herdsman.api.server import ApiServer

    server = ApiServer(
        daemon,
        unix_path=plan.socket,
        socket_mode=plan.socket_mode,
        socket_group=plan.socket_group,
        tcp=plan.tcp,
        token=token,
        log=log.getChild("api"),
        max_connections=plan.max_connections,
        answering=daemon.sampler.answering,
    )
    await server.start(listening)
    return server


async def _ready_once_settled(daemon: Daemon) -> None:
    """READY=1 to the service manager once no instance is on its way up: what is
    ordered after herdsman then finds its services running (or failed, not pending)."""
    await daemon.supervisor.wait_until(daemon.view.settled, timeout=None)
    daemon.manager.ready(daemon.view.summary())
