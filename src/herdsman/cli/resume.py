"""`herdsman reexec`: the daemon replaces its own process image with the code on disk.

The old image writes what the new one needs (the plan, every instance as a plain
record, the fds of the services' pipes with the line each had begun, the
listening sockets, the lock, the recent lines) into a memfd, blocks the signals
it handles, and calls `os.execv(python, -m herdsman.cli.resume FD ...)`. Same pid,
so the services stay its children; the pipes stay open, so no output is lost.

The arguments after FD say, apart from the hand-over, what the daemon runs (its
config, how it was started, its re-exec count): should the new image be unable to
read the hand-over (corrupt, of a version it does not know, a key missing), it
says why and adopts the running services as after a crash, from state.json and
the fds left open, instead of leaving them without a daemon.

`python -m herdsman.cli.resume --check [-c FILE] --out FILE` is what the old
image runs first: the new code must import everything the daemon needs and
validate the config, or the re-exec is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def exec_new_image(state: dict[str, Any], fallback: Sequence[str] = ()) -> OSError:
    """Exec the new image with `state`; returns only if the exec failed, with why.

    `fallback` (see `fallback_args`) travels in argv, apart from `state`. An older
    image calls this too, as the code on disk has it by then (its own is gone), and
    passes none. The signals the daemon handles are blocked already (since the
    re-exec was decided) and stay blocked across the exec until the new image
    handles them.
    """
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    fd = os.memfd_create("herdsman-handover", 0)  # inheritable: no MFD_CLOEXEC
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the daemon's working directory must not shadow any module of the new image.
    argv = [sys.executable, "-P", "-m", "herdsman.cli.resume", str(fd), *fallback]
    try:
        os.execv(sys.executable, argv)
    except OSError as err:
        os.close(fd)
        return err
    raise AssertionError("os.execv returned")  # pragma: no cover


def fallback_args(
    config: Path,
    services: list[str],
    *,
    detached: bool,
    watch: bool,
    reexecs: int,
    started_at: float,
) -> list[str]:
    """What a new image needs to recover in place without the hand-over, as arguments."""
    return [
        "--config",
        str(config),
        "--reexecs",
        str(reexecs),
        "--started-at",
        repr(started_at),
        *(["--detached"] if detached else []),
        *(["--watch"] if watch else []),
        "--",
        *services,
    ]


def _read_handover(fd: int) -> object:
    from herdsman.runtime.handover import HandoverError

    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    try:
        return pickle.loads(b"".join(chunks))
    except Exception as err:  # garbage can fail to unpickle in any number of ways
        raise HandoverError(f"the hand-over cannot be unpickled ({err!r})") from None


def check(argv: list[str]) -> int:
    """Import what a new image needs, then validate the config (as config.plan does)."""
    import herdsman.api.server
    import herdsman.cli.up
    import herdsman.runtime.daemon
    import herdsman.runtime.watcher  # noqa: F401  (loaded later, once a service declares watch)
    from herdsman.config.plan import main as compile_main

    return compile_main(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--check"]:
        return check(argv[1:])
    from herdsman.cli.up import run_up
    from herdsman.runtime.handover import Handover, HandoverError
    from herdsman.runtime.planner import PlanError, unpickle_plan

    try:
        handover = Handover.from_data(_read_handover(int(argv[0])))
        plan = unpickle_plan(handover.daemon.plan, "handed over by the previous image")
    except (HandoverError, PlanError) as err:
        return recover_in_place(str(err), argv[1:])
    return run_up(
        plan,
        handover.services,
        detached=handover.detached,
        resumed=handover,
        watch=handover.watch,
    )


def recover_in_place(why: str, args: list[str]) -> int:
    """The hand-over cannot be read (`why`): adopt the services as after a crash."""
    import argparse

    from herdsman.cli.up import InPlace, run_up
    from herdsman.runtime.planner import PlanError, receive_plan, request_plan

    lost = f"herdsman: cannot take over from the previous image: {why}"
    if not args:  # an image from before the fallback arguments: no config is named
        print(f"{lost}; the services keep running, and `herdsman up` adopts them", file=sys.stderr)
        return 1
    parser = argparse.ArgumentParser(prog="herdsman.cli.resume")
    parser.add_argument("--config", required=True)
    parser.add_argument("--reexecs", type=int, required=True)
    parser.add_argument("--started-at", type=float, required=True)
    parser.add_argument("--detached", action="store_true")
    parser.add_argument("--watch", action="store_true")
    parser.add_argument("services", nargs="*")
    fallback = parser.parse_args(args)
    try:
        plan = receive_plan(request_plan(fallback.config))
    except PlanError as err:
        print(
            f"{lost}, nor start from {fallback.config} ({'; '.join(err.errors)}); the services"
            " keep running, and `herdsman up` adopts them once it is valid",
            file=sys.stderr,
        )
        return 1
    return run_up(
        plan,
        fallback.services,
        detached=fallback.detached,
        watch=fallback.watch,
        in_place=InPlace(why, fallback.reexecs, fallback.started_at),
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
