"""`herdsman up` in the foreground: run the services until Ctrl-C or SIGTERM.

The first SIGINT/SIGTERM stops everything gracefully in reverse dependency
order and exits 0; a second one kills every process group at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from herdsman.cli.console import Console, wants_colour
from herdsman.core.lifecycle import Event, Exited, Spawned, SpawnFailed, Start, State, describe_exit
from herdsman.core.plan import Plan
from herdsman.runtime.lock import AlreadyRunning, DaemonLock
from herdsman.runtime.supervisor import Managed, Supervisor


def run_up(plan: Plan, services: list[str]) -> int:
    lock = DaemonLock(plan.state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as err:
        print(f"herdsman: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"herdsman: cannot use state_dir {plan.state_dir}: {err.strerror}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_up(plan, services))
    finally:
        lock.release()


async def _up(plan: Plan, services: list[str]) -> int:
    loop = asyncio.get_running_loop()
    out = sys.stdout.buffer
    names = [inst.name for svc in plan.services.values() for inst in svc.instances]
    console = Console(names, out, colour=wants_colour(out))

    def on_change(managed: Managed, old: State, event: Event) -> None:
        core, say = managed.core, console.say
        match event:
            case Spawned(pid=pid):
                say(managed.name, f"started (pid {pid})")
            case Exited(code=code, signal=sig):
                if core.state is State.STARTING:
                    say(managed.name, describe_exit(code, sig) + "; restarting now")
                else:
                    say(managed.name, core.message or describe_exit(code, sig))
            case Start() if core.waiting:
                say(managed.name, core.message)
            case SpawnFailed():
                say(managed.name, core.message)

    supervisor = Supervisor(plan, sink=console.line, on_change=on_change)
    stop_requested = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            console.say(None, f"{signal.Signals(signum).name}: stopping all services")
            stop_requested.set()
        else:
            console.say(None, "second signal: killing all services now")
            supervisor.kill_all()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    supervisor.open()
    try:
        supervisor.start_services(services or None)
        await stop_requested.wait()
        await supervisor.stop_all(plan.shutdown_timeout)
    finally:
        if supervisor.any_live():
            supervisor.kill_all()
            await supervisor.wait_until(lambda: not supervisor.any_live(), 5.0)
        supervisor.close()
        console.flush()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
