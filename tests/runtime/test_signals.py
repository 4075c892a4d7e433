"""Signals on the event loop: coalesced, and never lost to a full wakeup pipe.

asyncio's own handlers take a byte of the loop's self-pipe per signal; a flood of
SIGCHLDs (a crash loop) filled it, every lost byte printed a traceback, and a
SIGTERM whose byte was lost was never acted on."""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time

from herdsman.runtime.signals import Signals


def test_a_flood_of_one_signal_is_one_call_and_loses_no_other_signal() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        signals = Signals()
        signals.open(loop)
        calls = {"flood": 0, "term": 0}
        got_term = loop.create_future()

        def flood() -> None:
            calls["flood"] += 1

        def term() -> None:
            calls["term"] += 1
            got_term.set_result(None)

        signals.add(signal.SIGUSR1, flood, coalesce=True)
        signals.add(signal.SIGUSR2, term)
        try:
            # The loop is busy meanwhile: far more signals than its wakeup pipe holds.
            for _ in range(100_000):
                os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
            await asyncio.wait_for(got_term, 10)
            await asyncio.sleep(0.05)
        finally:
            signals.close()
        return calls["flood"], calls["term"]

    assert asyncio.run(main()) == (1, 1)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # given back


def test_no_warning_when_the_wakeup_pipe_is_full() -> None:
    """Run in a child: what Python prints on stderr for a full wakeup pipe is the point."""
    code = textwrap.dedent(
        """
        import asyncio, os, signal
        from herdsman.runtime.signals import Signals

        async def main():
            signals = Signals()
            signals.open(asyncio.get_running_loop())
            signals.add(signal.SIGUSR1, lambda: None, coalesce=True)
            for _ in range(100_000):
                os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.sleep(0.05)
            signals.close()
            print("done")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""


def test_a_signal_is_dispatched_before_the_readers_woken_with_it() -> None:
    """A process closes its pipes before its parent gets SIGCHLD, so the end of its
    output and its exit wake the loop together, the pipe first: the reap (and the
    respawn it starts) must not wait behind the log pumps' end-of-file work."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        signals = Signals()
        signals.open(loop)
        seen: list[str] = []
        both: asyncio.Future[None] = loop.create_future()

        def note(what: str) -> None:
            seen.append(what)
            if len(seen) == 2:
                both.set_result(None)

        def output() -> None:
            loop.remove_reader(read_end)  # readable until read: once is enough
            note("output")

        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        signals.add(signal.SIGUSR1, lambda: note("signal"))
        loop.add_reader(read_end, output)
        try:
            # Both before the loop looks, the pipe first, as at a child's exit.
            os.write(write_end, b"last words\n")
            os.kill(os.getpid(), signal.SIGUSR1)
            await asyncio.wait_for(both, 10)
        finally:
            loop.remove_reader(read_end)
            os.close(read_end)
            os.close(write_end)
            signals.close()
        return seen

    assert asyncio.run(main()) == ["signal", "output"]


def test_a_signal_that_comes_while_the_loop_waits_is_dispatched_from_the_wait() -> None:
    """The loop waits for its fds in epoll_wait; a signal interrupts it and is handled
    at once, from inside the wait, not on the loop's next turn (the way from an exit
    to its respawn). What the handler queues still runs in that turn."""

    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        signals = Signals()
        signals.open(loop)
        seen: asyncio.Future[bool] = loop.create_future()
        queued: asyncio.Future[None] = loop.create_future()

        def handler() -> None:
            frame = sys._getframe()
            waits = []
            while frame is not None:
                waits.append(frame.f_code is selectors.EpollSelector.select.__code__)
                frame = frame.f_back
            seen.set_result(any(waits))
            loop.call_soon(queued.set_result, None)

        signals.add(signal.SIGUSR1, handler)
        # To the loop's thread, whose epoll_wait it interrupts (sent to the process,
        # it may go to the sending thread, and only wake the loop through its fd),
        # once that thread waits there (and not on a machine too busy to get there).
        sender = threading.Thread(target=interrupt_the_wait)
        try:
            sender.start()
            from_the_wait = await asyncio.wait_for(seen, 10)
            await asyncio.wait_for(queued, 10)
        finally:
            sender.join()
            signals.close()
        return from_the_wait, queued.done()

    assert asyncio.run(main()) == (True, True)


def interrupt_the_wait() -> None:
    """SIGUSR1 to the main thread once it waits in epoll_wait (its syscall, from /proc)."""
    main = threading.main_thread().native_id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(f"/proc/self/task/{main}/syscall") as syscall:
            if syscall.read().split()[0] in (str(EPOLL_WAIT), str(EPOLL_PWAIT)):
                break
        time.sleep(0.01)
    ident = threading.main_thread().ident
    assert ident is not None
    signal.pthread_kill(ident, signal.SIGUSR1)


EPOLL_WAIT, EPOLL_PWAIT = {"x86_64": (232, 281), "aarch64": (-1, 22)}.get(
    os.uname().machine, (-1, -1)
)


def test_an_error_in_a_handler_run_from_the_wait_goes_to_the_loops_handler() -> None:
    """As from a callback: the loop's exception handler hears of it, the loop goes on."""

    async def main() -> object:
        loop = asyncio.get_running_loop()
        told: asyncio.Future[object] = loop.create_future()
        loop.set_exception_handler(lambda _loop, context: told.set_result(context["exception"]))
        signals = Signals()
        signals.open(loop)

        def handler() -> None:
            raise RuntimeError("broken handler")

        signals.add(signal.SIGUSR1, handler)
        main = threading.main_thread().ident
        assert main is not None
        sender = threading.Timer(0.2, signal.pthread_kill, (main, signal.SIGUSR1))
        try:
            sender.start()
            error = await asyncio.wait_for(told, 10)
            await asyncio.sleep(0)  # and the loop goes on
        finally:
            sender.join()
            signals.close()
        return error

    error = asyncio.run(main())
    assert isinstance(error, RuntimeError)
    assert str(error) == "broken handler"
