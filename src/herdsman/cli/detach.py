"""`herdsman up -d`: start the daemon in its own session and wait until it serves.

The daemon is a fresh `python -m herdsman.cli.detach` process that reads the
already validated plan from its stdin, so the config is checked once, here, with
errors on this terminal. Until the daemon is serving, its stdout/stderr is a pipe
read here; it then points them at its log file, and the EOF tells us it is up.
If it exits instead, what it wrote is the reason.
"""

from __future__ import annotations

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


def spawn_daemon(plan: Plan, services: list[str], *, watch: bool = False) -> int:
    """Start the daemon; its pid once it serves the control socket. What it said until
    then (a state.json it found corrupt, the instances it adopted) goes to stderr."""
    read_end, write_end = os.pipe()
    try:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "herdsman.cli.detach"],
            stdin=subprocess.PIPE,
            stdout=write_end,
            stderr=write_end,
            start_new_session=True,
            cwd="/",
        )
    finally:
        os.close(write_end)
    assert daemon.stdin is not None
    daemon.stdin.write(pickle.dumps((plan, services, watch), protocol=pickle.HIGHEST_PROTOCOL))
    daemon.stdin.close()
    output = _read_until_eof(read_end, time.monotonic() + START_TIMEOUT)
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
    from herdsman.cli.up import run_up

    plan, services, watch = pickle.load(sys.stdin.buffer)
    # stdin is done: make fd 0 /dev/null, so no later file can land on it.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return run_up(plan, services, detached=True, watch=watch)


if __name__ == "__main__":
    raise SystemExit(main())
