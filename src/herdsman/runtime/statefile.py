"""`<state_dir>/state.json` and its journal of spawns: what a daemon leaves for the next.

After a crash the next daemon reads the records in it to adopt the services that
still run (see recovery.py). `state.json` is written atomically (a temporary
file renamed over it) within WRITE_DELAY of a change (more for a large herd: see
StateWriter), however many instances changed meanwhile; every spawn is journalled
beside it (`state.journal`) as it lands, before anything is told of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from herdsman.runtime.files import open_append, write_new
from herdsman.runtime.procfs import boot_id
from herdsman.runtime.records import InstanceRecord, RecordError

FORMAT = 1


class StateFile:
    """`<state_dir>/state.json`, rewritten atomically, and its journal of spawns.

    state.json is rewritten shortly after changes; spawns are appended to
    `state.journal` as they land (one short write for those that land together: see
    `flush`), so a daemon killed in the middle of starting hundreds of instances
    still leaves every pid it has taken in on disk. Each rewrite of state.json
    empties the journal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self.journal = path.with_suffix(".journal")
        self._journal_fd = -1
        self._unwritten: list[str] = []  # journal lines, until `flush`

    def spawned(self, name: str, pid: int, pipes: list[int], at: float) -> None:
        """Journal a spawn: `pid` with its two pipes' inodes, spawned at `at` on the
        monotonic clock, to the microsecond: the shortest repr of a float takes three
        times as long (7K instructions), at every spawn of a wave. (Whether a pid is
        still that process is told later by the environment it was given:
        HERDSMAN_STATE_DIR and HERDSMAN_INSTANCE.) Written by the next `flush`."""
        self._unwritten.append(f"{pid} {pipes[0]} {pipes[1]} {at:.6f} {name}\n")

    def flush(self) -> None:
        """Write the spawns journalled since the last flush, in one write."""
        if self._unwritten:
            lines, self._unwritten = self._unwritten, []
            if self._journal_fd < 0:
                self._journal_fd = open_append(self.journal)
            os.write(self._journal_fd, "".join(lines).encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1

    def write_text(self, text: str) -> None:
        """Replace the file with `text` (a JSON document) in one rename."""
        write_new(self._tmp, text.encode())
        os.replace(self._tmp, self.path)
        if self._journal_fd >= 0:
            os.ftruncate(self._journal_fd, 0)  # all it held is in state.json now

    def read(self) -> dict[str, Any] | None:
        """The last document written, with the spawns journalled since applied;
        None when there is none (or it is unreadable)."""
        return self._load()[0]

    def recover(self) -> tuple[dict[str, Any] | None, list[str]]:
        """As `read`, for crash recovery: a file that cannot be read or makes no
        sense is moved aside for inspection (`state.json.corrupt-<time>`), and
        said in one sentence each; the caller then finds the processes by their
        environment (see leftovers.py)."""
        document, problems = self._load()
        sentences = []
        for path, why in problems:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                os.rename(path, aside)
                moved = f"moved to {aside.name}"
            except OSError as err:
                moved = f"could not be moved aside ({err.strerror or err})"
            sentences.append(
                f"{path} {why}: {moved}; finding this config's processes by their environment"
            )
        return document, sentences

    def _load(self) -> tuple[dict[str, Any] | None, list[tuple[Path, str]]]:
        problems: list[tuple[Path, str]] = []
        document = None
        try:
            document = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            pass
        except OSError as err:
            problems.append((self.path, f"cannot be read ({err.strerror or err})"))
        except ValueError as err:  # not JSON, or not UTF-8
            problems.append((self.path, f"is corrupt ({_first_line(err)})"))
        if document is not None and not _well_formed(document):
            problems.append((self.path, "is corrupt (not a state document of this herdsman)"))
            document = None
        try:
            journal = self.journal.read_bytes().decode()
        except FileNotFoundError:
            journal = ""
        except OSError as err:
            problems.append((self.journal, f"cannot be read ({err.strerror or err})"))
            journal = ""
        except UnicodeDecodeError:
            problems.append((self.journal, "is corrupt (not UTF-8)"))
            journal = ""
        if document is None:
            return None, problems
        instances = document["instances"]
        torn = 0
        for line in journal.splitlines():
            if line.startswith("? "):
                continue  # "about to spawn", journalled by earlier versions: not needed
            fields = line.split(" ", 4)
            try:
                pid, out_inode, err_inode = map(int, fields[:3])
                at, name = float(fields[3]), fields[4]
            except (ValueError, IndexError):
                torn += 1  # a line torn by the crash
                continue
            # Just spawned, as the lifecycle has it right after a spawn.
            record = instances.setdefault(name, {})
            for key in ("timer", "ready", "start_passed", "killed", "restart_after_stop"):
                record.pop(key, None)
            record.update(
                state="starting",
                pid=pid,
                start_time=None,
                spawned_at=at,
                pipes=[["out", out_inode], ["err", err_inode]],
                journalled=True,
            )
        if torn:
            problems.append((self.journal, f"is corrupt ({torn} unreadable line(s))"))
        # Checked once the journal is in: what it rewrote needs no checking.
        wrong = _wrong_record(instances)
        if wrong is not None:
            problems.append((self.path, f"is corrupt ({wrong})"))
            return None, problems
        return document, problems

    def remove(self) -> None:
        self._unwritten.clear()
        for path in (self.path, self.journal):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _first_line(err: Exception) -> str:
    return str(err).split("\n", 1)[0]


def _well_formed(document: object) -> bool:
    """A document this herdsman wrote: the types recovery relies on, record by record
    (a record that is not a mapping cannot be taken for anything)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return False
    instances = document.setdefault("instances", {})
    if not isinstance(instances, dict) or not isinstance(document.get("boot_id", ""), str):
        return False
    return all(
        isinstance(record, dict)
        and isinstance(record.get("pid"), int | None)
        and isinstance(record.get("start_time"), int | None)
        and isinstance(record.get("state", ""), str)
        for record in instances.values()
    )


def _wrong_record(instances: dict[str, Any]) -> str | None:
    """The first record that is not one herdsman writes, said in one sentence."""
    for name, record in instances.items():
        try:
            InstanceRecord.from_data(record, f"the record of {name}", complete=False)
        except RecordError as err:
            return str(err)
    return None


WRITE_DELAY = 0.1  # seconds: state.json follows changes at most this late...
PER_DELAY = 1000  # ...per this many instances (a herd of 8,000: 0.8 s)


class StateWriter:
    """Keeps state.json up to date as instances change.

    Spawns are journalled as they land (see StateFile); the rest (states, counters,
    timers) reaches state.json at most WRITE_DELAY later, in one write however
    many instances changed meanwhile, and only the records of those are encoded
    again: with thousands of instances starting, rewriting the whole file each
    loop turn cost more than the starting itself. A write costs the size of the
    whole herd (8,000 instances: 3.5 MB joined and written, 8-15 ms), so the delay
    grows with the herd (WRITE_DELAY per PER_DELAY instances): the share of the
    loop spent writing is the same at any size, where every 0.1 s it would have
    taken a tenth of the loop all through a start of thousands, the loop's
    busiest time. While a start wave goes out (from `hold` to `release`) the
    rewrite waits for its end: at 8,000 instances, rewrites every 0.8 s of a wave of
    several seconds cost the loop 0.3-0.4 CPU-s under load. Crash recovery loses
    nothing by either: what a later write would have said of a spawn is in the
    journal.
    """

    def __init__(
        self,
        path: Path,
        loop: asyncio.AbstractEventLoop,
        instances: Callable[[], Mapping[str, Any]],
        record: Callable[[Any], InstanceRecord],
        header: Callable[[], dict[str, Any]],
        on_error: Callable[[str | None], None],
        delay: float = WRITE_DELAY,
    ) -> None:
        self.file = StateFile(path)
        self._delay = delay
        self._held = False  # a start wave is going out: see hold
        self._owed = False  # a rewrite came due while held
        self._loop = loop
        self._instances = instances
        self._record = record
        self._header = header
        self._on_error = on_error
        self._dirty: set[str] = set()
        self._encoded: dict[str, str] = {}
        self._scheduled: asyncio.TimerHandle | None = None
        self._failing = False

    def changed(self, name: str) -> None:
        self._dirty.add(name)
        if self._held:
            self._owed = True
        elif self._scheduled is None:
            self._scheduled = self._loop.call_later(self._delay_now(), self._due)

    def _delay_now(self) -> float:
        return self._delay * max(1.0, len(self._instances()) / PER_DELAY)

    def hold(self) -> None:
        """A start wave is going out: no rewrite until `release`."""
        self._held = True

    def release(self) -> None:
        """No start wave is going out any more: what came meanwhile is written a
        delay later."""
        self._held = False
        if self._owed and self._scheduled is None:
            self._scheduled = self._loop.call_later(self._delay_now(), self._due)
        self._owed = False

    def _due(self) -> None:
        """The rewrite's time has come: now, or a delay after `release` if held."""
        self._scheduled = None
        if self._held:
            self._owed = True
        else:
            self.write()

    def remove(self) -> None:
        """Nothing is left to adopt (a clean stop): the files go, and a write still
        pending must not bring state.json back."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self.file.remove()

    def spawned(self, name: str, pid: int, pipes: list[int], at: float) -> None:
        """Journal a spawn (written by the next `flush`); the next write of
        state.json takes it in."""
        self.file.spawned(name, pid, pipes, at)
        self.changed(name)

    def flush(self) -> None:
        """Write the spawns journalled since the last flush: before anything is
        told of them (see Supervisor._run), in one write however many landed."""
        try:
            self.file.flush()
        except OSError as err:
            if not self._failing:
                self._on_error(f"cannot write {self.file.journal}: {err.strerror or err}")
            self._failing = True

    def write(self, only: Collection[str] | None = None) -> None:
        """Rewrite state.json. `only`: with the records of these instances alone, as
        before the first spawns, when the others have nothing to record yet (a
        journalled spawn makes its own record): encoding thousands of them would hold
        the spawns back. The next write, due a delay later, has them all."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        # Lines still to write go first, as if written when journalled: the rewrite
        # then empties the journal of them, as of the others.
        self.flush()
        instances, encoded = self._instances(), self._encoded
        if only is not None:
            records = [self._encode(name, instances[name]) for name in only]
            self._scheduled = self._loop.call_later(self._delay_now(), self._due)
        else:
            for name in [n for n in encoded if n not in instances]:
                del encoded[name]
            for name, instance in instances.items():
                if name in self._dirty or name not in encoded:
                    encoded[name] = self._encode(name, instance)
            self._dirty.clear()
            records = list(encoded.values())
        head = {"format": FORMAT, "boot_id": boot_id(), **self._header()}
        document = json.dumps(head)[:-1] + ',"instances":{' + ",".join(records) + "}}"
        try:
            self.file.write_text(document)
        except OSError as err:
            if not self._failing:
                self._on_error(f"cannot write {self.file.path}: {err.strerror or err}")
            self._failing = True
        else:
            if self._failing:
                self._on_error(None)
            self._failing = False

    def _encode(self, name: str, instance: Any) -> str:
        # What json.dumps does with the name, without its two calls in front: thousands
        # of records are encoded after a start wave.
        return encode_basestring_ascii(name) + ":" + self._record(instance).to_json()
