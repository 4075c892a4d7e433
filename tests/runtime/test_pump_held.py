"""The supervisor holds the loop's epoll of pipes (pump.hold): a pump made while the
daemon is out of file descriptors needs none.

A lone instance that crash-loops closes its last pump at each exit; the epoll went
with it and was made again for the next process's pipes. Out of fds (an API flood),
making it failed in the loop, after the process had started: the daemon re-executed
itself to heal (tests/e2e/test_hostile_api.py saw the traceback)."""

from __future__ import annotations

import asyncio
import os
import resource

from herdsman.runtime.pump import LogPump, hold


def _use_up_fds() -> list[int]:
    """Every fd the soft limit allows, taken (the limit lowered to just above the
    fds open now, so that few are taken)."""
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
    taken = []
    try:
        while True:
            taken.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        return taken


def test_a_pump_made_while_out_of_fds_needs_none_when_the_loop_is_held() -> None:
    lines: list[bytes] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        release = hold(loop)
        first = os.pipe2(os.O_CLOEXEC)
        second = os.pipe2(os.O_CLOEXEC)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        taken: list[int] = []
        try:
            # The last pump closes: the epoll stays.
            LogPump(loop, first[0], "w", "out", lambda *_: None).close()
            taken = _use_up_fds()
            got: asyncio.Future[None] = loop.create_future()

            def sink(_instance: str, _stream: str, chunk: bytes, _ts: float) -> None:
                lines.append(chunk)
                got.set_result(None)

            pump = LogPump(loop, second[0], "w", "out", sink)
            os.write(second[1], b"read while out of fds\n")
            await asyncio.wait_for(got, 10)
            pump.close()
        finally:
            for fd in taken:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            os.close(first[1])
            os.close(second[1])
            release()

    asyncio.run(main())
    assert lines == [b"read while out of fds"]
