"""`herdsman logs` against a running daemon: -n, --json and -f show what the log
file holds (same lines, same order, same timestamps), and -f keeps following
across a restart of the service; after `down` the files answer."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import wait_for
from tests.logs.conftest import PYTHON, Herd, child, parse

BAR = " │ "


class Follower:
    """`herdsman logs -f ...` in the background; its stdout lines as they come."""

    def __init__(self, herd: Herd, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "herdsman", "-c", str(herd.config), "logs", "-f", *argv],
            cwd=herd.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def until(self, last: str, timeout: float = 15) -> list[str]:
        """Lines up to and including `last`."""
        got: list[str] = []
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    line = self._lines.get(timeout=0.1)
                except queue.Empty:
                    continue
                assert line is not None, f"logs -f ended early after {got[-5:]}"
                got.append(line)
                if line == last:
                    return got
        finally:
            timer.cancel()
        raise AssertionError(f"{last!r} not shown within {timeout}s; last lines {got[-5:]}")

    def stop(self) -> int:
        """Ctrl-C, as a user stops following; its exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def shown(entries: list[tuple[bytes, bytes, bytes]]) -> list[str]:
    return [f"talk{BAR}{text.decode()}" for _, _, text in entries]


def start_talk(herd: Herd, pokes: Path) -> list[tuple[bytes, bytes, bytes]]:
    pokes.mkdir()
    herd.up(
        "[services.talk]\n"
        f"command = {child('talk', 500, pokes)}\n"
        'start_seconds = "0.1s"\n'
        'stop_timeout = "2s"\n'
    )
    # 500 lines and "ready" on stdout, 3 on stderr: the two pipes' order is the reads'.
    wait_for(lambda: herd.log("talk").exists() and lines_in(herd.log("talk")) == 504, 10)
    entries = parse(herd.log("talk").read_bytes())
    assert sorted(text for _, _, text in entries if text.startswith(b"warn")) == [
        b"warn 0",
        b"warn 1",
        b"warn 2",
    ]
    return entries


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def test_logs_n_and_json_show_what_the_file_holds(herd: Herd, tmp: Path) -> None:
    entries = start_talk(herd, tmp / "pokes")

    last5 = herd.cli("logs", "-n", "5", "talk")
    assert last5.returncode == 0, last5.stderr
    assert last5.stdout.splitlines() == shown(entries[-5:])

    everything = herd.cli("logs", "-n", str(len(entries)))  # all instances
    assert everything.stdout.splitlines() == shown(entries)

    as_json = herd.cli("logs", "--json", "-n", "4", "talk")
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [
        {"time": ts.decode(), "instance": "talk", "stream": stream.decode(), "line": text.decode()}
        for ts, stream, text in entries[-4:]
    ]

    herd.down()  # without a daemon, `logs` reads the file
    offline = herd.cli("logs", "-n", "3", "talk")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.splitlines() == shown(entries[-3:])


def test_logs_n_larger_than_what_is_kept_shows_everything(herd: Herd, tmp: Path) -> None:
    entries = start_talk(herd, tmp / "pokes")
    more = herd.cli("logs", "-n", "600", "talk")
    assert more.returncode == 0, more.stderr
    assert more.stdout.splitlines() == shown(entries)


def test_logs_follow_shows_new_lines_and_follows_across_a_restart(herd: Herd, tmp: Path) -> None:
    pokes = tmp / "pokes"
    entries = start_talk(herd, pokes)
    follower = Follower(herd, "-n", "2", "talk")
    try:
        assert follower.until(shown(entries[-1:])[0]) == shown(entries[-2:])
        (pokes / "1").touch()
        assert follower.until(f"talk{BAR}poke 1") == [f"talk{BAR}poke 1"]

        restart = herd.cli("restart", "talk")
        assert restart.returncode == 0, restart.stderr
        # The new process says it all again, and pokes/1 is there already.
        again = follower.until(f"talk{BAR}poke 1")
        (pokes / "2").touch()
        again += follower.until(f"talk{BAR}poke 2")
        warn = [line for line in again if line.startswith(f"talk{BAR}warn")]
        assert warn == [f"talk{BAR}warn {i}" for i in range(3)]
        assert [line for line in again if line not in warn] == [
            *(f"talk{BAR}line {i}" for i in range(500)),
            f"talk{BAR}ready",
            f"talk{BAR}poke 1",
            f"talk{BAR}poke 2",
        ]
    finally:
        code = follower.stop()
    assert code == 0
