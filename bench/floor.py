"""The floor: the least a supervisor can do, as a bare Python loop.

    python3 floor.py [--pydantic] N COMMAND [ARG...]

Spawns N copies of COMMAND (os.posix_spawn, each in its own session), then blocks in
os.waitpid(-1, 0) and respawns whatever dies at once: no backoff, no logging, no
bookkeeping beyond pid -> slot. On SIGTERM or SIGINT it kills every child's process
group, reaps them and exits 0. Any real supervisor does at least this much work, so
its figures next to these show what its extra machinery costs.

With --pydantic it first validates N and COMMAND with a two-field pydantic model, as
the least a supervisor that validates its config with pydantic before its first
spawn (herdsman does) can do: the same loop after `from pydantic import BaseModel`.
"""

import contextlib
import os
import signal
import sys


class Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise Stop


def validated(args: list[str]) -> tuple[int, list[str]]:
    from pydantic import BaseModel, Field

    class Floor(BaseModel):
        replicas: int = Field(ge=1)
        command: list[str] = Field(min_length=1)

    floor = Floor.model_validate({"replicas": args[0], "command": args[1:]})
    return floor.replicas, floor.command


def main() -> int:
    if sys.argv[1] == "--pydantic":
        n, argv = validated(sys.argv[2:])
    else:
        n, argv = int(sys.argv[1]), sys.argv[2:]
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    slots: dict[int, int] = {}  # pid -> slot

    def spawn(slot: int) -> None:
        pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True)
        slots[pid] = slot

    try:
        for slot in range(n):
            spawn(slot)
        while True:
            pid, _status = os.waitpid(-1, 0)
            slot = slots.pop(pid, None)
            if slot is not None:
                spawn(slot)
    except Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for pid in slots:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        for _ in range(len(slots)):
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
