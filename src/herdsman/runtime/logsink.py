"""Where every instance's output goes: its log file, its recent lines in memory, the
readiness probes that wait for a line, and the console.

It also keeps the log files' write positions (positions.py), so the batch a killed
daemon was writing is settled, neither lost nor written twice, when the next one
adopts the pipe it came from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from herdsman.core.logline import count_lines, format_lines
from herdsman.core.plan import Plan, ServicePlan
from herdsman.runtime.handover import PumpEntry
from herdsman.runtime.logfile import LogFile
from herdsman.runtime.positions import Pending, Positions, settle
from herdsman.runtime.pump import peek, take
from herdsman.runtime.tails import Tails

LineHook = Callable[[str, str, bytes, float], None]
Note = Callable[[int, str], None]


class LogSink:
    def __init__(
        self,
        positions: Path,
        tails: Tails,
        *,
        log: logging.Logger,
        note: Note,
        on_line: LineHook | None = None,
    ) -> None:
        self._tails = tails
        # The readiness probes that wait for a line (probes.Prober.lines), once they exist.
        self.probe: Callable[[str, bytes], None] | None = None
        self._log = log
        self._note = note
        self._on_line = on_line
        # Each instance's log file, made by its first line: most instances of a herd
        # of thousands write nothing while a wave of them goes out, and the file
        # made for each before the first spawn was a tenth of that set-up.
        self._log_files: dict[str, LogFile] = {}
        self._services: dict[str, ServicePlan] = {}  # instance -> its rotation settings
        self._log_dir = ""
        self._on_file_error = self._log_file_error  # bound once: every file holds it
        self._log_errors: dict[str, str] = {}
        self._positions = Positions(positions)
        self._unfinished_batches: dict[tuple[str, str], Pending] = {}

    def track(self, plan: Plan) -> None:
        """Per-instance buffers and log files for every instance of `plan` (new ones
        get fresh ones; existing ones keep theirs, with the new rotation settings;
        those a reload removed, stopped by now, are closed)."""
        kept = {inst.name for svc in plan.services.values() for inst in svc.instances}
        for name in [name for name in self._services if name not in kept]:
            self._tails.forget(name)
            del self._services[name]
            if (log_file := self._log_files.pop(name, None)) is not None:
                log_file.close()
        # Paths as text: a Path joined per instance was more than half of the daemon's
        # set-up before its first spawn (8,000 instances: 26 of 46 ms of CPU).
        self._log_dir = str(plan.log_dir)
        services, log_files = self._services, self._log_files
        for svc in plan.services.values():
            for inst in svc.instances:
                self._tails.track(inst.name)
                services[inst.name] = svc
                if log_files and (log_file := log_files.pop(inst.name, None)) is not None:
                    log_file.close()  # made again, with the new rotation, by its next line

    def _log_file(self, instance: str) -> LogFile:
        log_file = self._log_files.get(instance)
        if log_file is None:
            svc = self._services[instance]
            log_file = self._log_files[instance] = LogFile(
                self._path(instance),
                svc.log_max_bytes,
                svc.log_backups,
                self._on_file_error,
                self._positions,
            )
        return log_file

    def _path(self, instance: str) -> str:
        return f"{self._log_dir}/{instance}.log"

    def open(self) -> None:
        # The batches a killed daemon was writing, settled as their pipes are adopted.
        self._unfinished_batches = self._positions.pending()
        try:
            self._positions.open()
        except OSError as err:
            self._note(
                logging.WARNING,
                f"cannot write {self._positions.path}: {err.strerror}; after a crash,"
                " the lines being written then may be written again",
            )

    def lines(self, instance: str, stream: str, lines: bytes, ts: float) -> None:
        formatted = format_lines(lines, stream, ts)
        try:
            log_file = self._log_files[instance]
        except KeyError:
            log_file = self._log_file(instance)
        log_file.write(*formatted)
        self._tails.add(instance, stream, lines, ts, count_lines(lines, formatted))
        if self.probe is not None:
            self.probe(instance, lines)
        if self._on_line is not None:
            self._on_line(instance, stream, lines, ts)

    def begin_batch(self, instance: str, stream: str, held: int) -> None:
        self._log_file(instance).begin_batch(stream, held)

    def end_batch(self, instance: str) -> None:
        self._log_file(instance).end_batch()

    @property
    def errors(self) -> Mapping[str, str]:
        """Why each instance's log file cannot be written now, of those it cannot."""
        return self._log_errors

    def settle(self, name: str, pumps: list[PumpEntry]) -> None:
        """Before reading an adopted pipe: the batch a killed daemon was writing from
        it, if any, is neither lost nor written twice (see positions.py)."""
        for stream, fd, _partial in pumps:
            pending = self._unfinished_batches.pop((name, stream), None)
            if pending is None:
                continue
            log = Path(self._path(name))
            cut, taken = settle(pending, log, peek(fd))
            if cut < 0:
                continue
            try:
                os.truncate(log, cut)
            except OSError as err:
                self._note(logging.WARNING, f"{name}: cannot settle {log}: {err.strerror}")
                continue
            take(fd, taken)
            self._log.info(
                "%s: the previous daemon died writing %d bytes of its %s; kept once",
                name,
                taken,
                stream,
            )

    def _log_file_error(self, instance: str, error: str | None) -> None:
        if error is None:
            self._log_errors.pop(instance, None)
            log_file = self._log_files[instance]
            dropped, log_file.dropped_bytes = log_file.dropped_bytes, 0  # said once per outage
            lost = f" ({dropped} bytes of its oldest held lines were dropped)" if dropped else ""
            self._note(logging.INFO, f"{instance}: writing its log file again{lost}")
        else:
            self._log_errors[instance] = error
            self._note(logging.ERROR, f"{instance}: {error}; the service keeps running")

    def close(self) -> None:
        for log_file in self._log_files.values():
            log_file.close()
        self._positions.close()
