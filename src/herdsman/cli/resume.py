"""`herdsman reexec`: the daemon replaces its own process image with the code on disk.

The old image writes what the new one needs (the plan, every instance as a plain
record, the fds of the services' pipes with the line each had begun, the
listening sockets, the lock, the recent lines) into a memfd, blocks the signals
it handles, and calls `os.execv(python, -m herdsman.cli.resume FD)`. Same pid, so
the services stay its children; the pipes stay open, so no output is lost.

`python -m herdsman.cli.resume --check [-c FILE] --out FILE` is what the old
image runs first: the new code must import everything the daemon needs and
validate the config, or the re-exec is refused.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from typing import Any


def exec_new_image(state: dict[str, Any]) -> OSError:
    """Exec the new image with `state`; returns only if the exec failed, with why.

    The signals the daemon handles are blocked already (since the re-exec was
    decided) and stay blocked across the exec until the new image handles them.
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
    argv = [sys.executable, "-P", "-m", "herdsman.cli.resume", str(fd)]
    try:
        os.execv(sys.executable, argv)
    except OSError as err:
        os.close(fd)
        return err
    raise AssertionError("os.execv returned")  # pragma: no cover


def _read_handover(fd: int) -> object:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return pickle.loads(b"".join(chunks))


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
        # The services run on, without a daemon: state.json tells the next one.
        print(
            f"herdsman: cannot take over from the previous image: {err}; the services keep"
            " running, and `herdsman up` adopts them",
            file=sys.stderr,
        )
        return 1
    return run_up(
        plan,
        handover.services,
        detached=handover.detached,
        resumed=handover,
        watch=handover.watch,
    )


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
