"""`herdsman up -d`: start the daemon in its own session and wait until it serves.

The daemon is a fresh `python -m herdsman.cli.detach` process, started as soon as
`up -d` runs so that its imports overlap the validation; it then reads the
validated plan from its stdin, so the config is checked once, here, with errors on
this terminal. Until the daemon is serving, its stdout/stderr is a pipe
read here; it then points them at its log file, and the EOF tells us it is up.
If it exits instead, what it wrote is the reason.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from herdsman.core.plan import Plan
from herdsman.core.states import State

START_TIMEOUT = 30.0
POLL = 0.05  # seconds between looks at the status while `--wait` waits


class DetachError(Exception):
    """The daemon did not come up; the message says why."""


class Launch:
    """The daemon's process, started before its plan is known: it imports the runtime
    while `up -d` validates the config. `hand` gives it the plan; `cancel` ends it
    when there is none to give (an invalid config, a bad request)."""

    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "herdsman.cli.detach"],
                stdin=subprocess.PIPE,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
                cwd="/",
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._output = read_end

    def cancel(self) -> None:
        """It holds nothing yet (no lock, no socket, no service): it can just go."""
        self.process.kill()
        self.process.wait()
        assert self.process.stdin is not None
        self.process.stdin.close()
        os.close(self._output)

    def hand(self, plan: Plan, services: list[str], *, watch: bool = False) -> int:
        """Give the daemon its plan; its pid once it serves the control socket. What it
        said until then (a state.json it found corrupt, the instances it adopted) goes
        to stderr."""
        daemon = self.process
        assert daemon.stdin is not None
        data = pickle.dumps((plan, services, watch), protocol=pickle.HIGHEST_PROTOCOL)
        with contextlib.suppress(BrokenPipeError):  # it died already: its output says why
            daemon.stdin.write(data)
            daemon.stdin.close()
        output = _read_until_eof(self._output, time.monotonic() + START_TIMEOUT)
        # EOF: it detached (serving) or died; a dying daemon is reaped right away.
        try:
            code = daemon.wait(0.2)
        except subprocess.TimeoutExpired:
            daemon.returncode = 0  # it lives on in its own session; not ours to wait for
            sys.stderr.buffer.write(output)  # warnings it gave before it served
            sys.stderr.flush()
            return daemon.pid
        reason = output.decode(errors="replace").strip() or f"it exited with code {code}"
        raise DetachError(reason.removeprefix("herdsman: "))


def _read_until_eof(fd: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DetachError(f"the daemon did not start serving within {START_TIMEOUT:g}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
    finally:
        os.close(fd)


def wait_until_settled(plan: Plan, services: list[str], timeout: float) -> list[str]:
    """Wait until every started instance runs and is ready (a one-shot: exited 0),
    or one of them cannot get there (failed, stopped, exited otherwise, blocked by a
    dependency), or `timeout` passes; what is pending meanwhile is shown on stderr.

    Returns one line per instance that did not get there, saying why.
    """
    from herdsman.cli.client import Client
    from herdsman.cli.commands import failure
    from herdsman.cli.progress import PendingLine, pending_text
    from herdsman.core.graph import closure

    names = services or [n for n, svc in plan.services.items() if svc.autostart]
    wanted = set(closure(plan.dependency_map(), names))
    client = Client(plan.config_path, plan.socket)
    deadline = time.monotonic() + timeout
    line = PendingLine()
    try:
        while True:
            status = client.request("GET", "/v1/status")
            docs = [d for d in status["services"] if d["service"] in wanted]
            hopeless = [d for d in docs if _hopeless(d)]
            pending = [d for d in docs if not _settled_ok(d)]
            timed_out = time.monotonic() > deadline
            if not pending or hopeless or timed_out:
                # The ones that cannot get there first: they are why it ended.
                ordered = hopeless + [d for d in pending if d not in hopeless]
                return [failure(d, "start", timed_out, timeout) for d in ordered]
            line.show(pending_text(pending, _settled_ok))
            time.sleep(POLL)
    finally:
        line.clear()


def _settled_ok(doc: Mapping[str, Any]) -> bool:
    if doc["state"] == State.EXITED:
        return bool(doc["exit_code"] == 0)
    return doc["state"] == "running" and bool(doc["ready"])


def _hopeless(doc: Mapping[str, Any]) -> bool:
    """It will not get to running and ready unless someone asks again."""
    if doc["state"] == State.EXITED:
        return bool(doc["exit_code"] != 0)
    return doc["state"] in (State.FAILED, State.STOPPED) or bool(doc.get("blocked"))


def main() -> int:
    import gc

    gc.disable()  # as `up` does: until the first spawns are on their way
    from herdsman.cli.up import run_up  # first: it keeps ssl out of asyncio (see tls.py)

    # isort: split
    # The API server too, which `up` in the foreground loads once its first wave is
    # out: here the plan is still being validated, and the time to there is free.
    import herdsman.api.server  # noqa: F401
    from herdsman.runtime.leftovers import take_census
    from herdsman.runtime.supervisor import new_spawner

    # Also free: what the scan for a dead daemon's processes would read after it,
    # and the spawning threads.
    census = take_census()
    spawner = new_spawner()
    try:
        plan, services, watch = pickle.load(sys.stdin.buffer)
    except EOFError:  # `up -d` ended (Ctrl-C) before it had a plan to give
        spawner.close()
        return 1
    # stdin is done: make fd 0 /dev/null, so no later file can land on it.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return run_up(plan, services, detached=True, watch=watch, census=census, spawner=spawner)


if __name__ == "__main__":
    raise SystemExit(main())
