#!/usr/bin/env python3
"""Log capture benchmark: herdsman, supervisord and circus capturing floods of output.

    python3 bench/logs.py [--lines 2000000] [--instances 50] [--runs 3]
                          [--only herdsman,supervisord,circus]

Each tool runs bench/build/flood (bench/flood.c): every instance reports in, waits
at a FIFO gate, and once the harness opens the gate writes its lines, 100 bytes
each, one write(2) per line, numbered. Two scenarios: one instance writing --lines
lines, then --instances instances at once writing --lines / --instances each. Per
tool and scenario: lines/s and MB/s captured (from opening the gate to the moment
the last line of every instance is in the tool's log file), the daemon's CPU
seconds per MB, and the lines lost, duplicated or corrupted, counted by reading
every numbered line back from the log files. See bench/README.md ("Log capture").

Uses bench/run.py's venv (bench/.env: supervisor, circus, psutil and a wheel of
this checkout's herdsman), re-executing itself there, and writes the table to
bench/logs-results.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import run  # the harness next to this file: venv, tool versions, reporting helpers

FLOOD = run.BENCH / "build" / "flood"
RESULTS = run.BENCH / "logs-results.md"
TOOLS = ("herdsman", "supervisord", "circus")
LINE = 100  # bytes per line, newline included (flood.c)
PAD = LINE - len(b"I000 L0000000000 ") - 1
STALL = 15.0  # seconds without any log file growing before giving up on the rest
POLL = 0.005  # seconds between looks at the log files
START_TIMEOUT = 60.0


# ------------------------------------------------------------------------- setup


def build_flood() -> None:
    src = run.BENCH / "flood.c"
    if FLOOD.exists() and FLOOD.stat().st_mtime >= src.stat().st_mtime:
        return
    FLOOD.parent.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(FLOOD), str(src)], check=True)


def floods_of(gate: Path) -> list[int]:
    """Pids of the flood processes waiting at or started through this gate."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0] == bytes(FLOOD) and argv[1] == bytes(gate):
            found.append(int(entry))
    return found


def kill_floods(gate: Path) -> int:
    pids = floods_of(gate)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while floods_of(gate) and time.monotonic() < deadline:
        run.reap_orphans()
        time.sleep(0.05)
    run.reap_orphans()
    return len(pids)


def kill_stale_floods() -> None:
    """Floods of an earlier run that was itself killed: their gate is gone."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0] == bytes(FLOOD) and not Path(os.fsdecode(argv[1])).exists():
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)


# ------------------------------------------------------------------ tool configs


@dataclass
class Setup:
    argv: list[str]  # starts the daemon (herdsman: `up -d`, returns once it serves)
    files: list[Path]  # instance i's log file
    detached: bool = False


def config_for(tool: str, k: int, per: int, tmp: Path, sock: str, gate: Path) -> Setup:
    flood = str(FLOOD)
    out = tmp / "out"
    out.mkdir()
    if tool == "herdsman":
        conf = tmp / "herdsman.toml"
        conf.write_text(
            "[settings]\n"
            f'state_dir = "{tmp}/state"\n'
            f'log_dir = "{out}"\n'
            'shutdown_timeout = "30s"\n\n'
            "[services.flood]\n"
            f'command = ["{flood}", "{gate}", "{sock}", "{per}", "{{replica}}"]\n'
            f"replicas = {k}\n"
            'restart = "never"\n'
            'stop_timeout = "5s"\n'
            'log = { max_bytes = "64GiB", backups = 1 }\n'
        )
        names = ["flood"] if k == 1 else [f"flood.{i}" for i in range(k)]
        argv = [str(run.herdsman_bin()), "-c", str(conf), "up", "-d"]
        return Setup(argv, [out / f"{name}.log" for name in names], detached=True)

    if tool == "supervisord":
        conf = tmp / "supervisord.conf"
        conf.write_text(
            f"""\
[supervisord]
nodaemon = true
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}

[program:flood]
command = {flood} {gate} {sock} {per} %(process_num)d
process_name = %(program_name)s_%(process_num)03d
numprocs = {k}
autostart = true
autorestart = false
startsecs = 0
stopwaitsecs = 5
redirect_stderr = true
stdout_logfile = {out}/flood_%(process_num)03d.log
stdout_logfile_maxbytes = 0
stdout_logfile_backups = 0
"""
        )
        argv = [str(run.ENV / "bin" / "supervisord"), "-n", "-c", str(conf)]
        return Setup(argv, [out / f"flood_{i:03d}.log" for i in range(k)])

    if tool == "circus":
        conf = tmp / "circus.ini"
        watchers = "".join(
            f"""
[watcher:flood_{i:03d}]
cmd = {flood}
args = {gate} {sock} {per} {i}
numprocesses = 1
respawn = false
warmup_delay = 0
graceful_timeout = 5
stdout_stream.class = FileStream
stdout_stream.filename = {out}/flood_{i:03d}.log
stderr_stream.class = FileStream
stderr_stream.filename = {out}/flood_{i:03d}.log
"""
            for i in range(k)
        )
        conf.write_text(
            f"""\
[circus]
endpoint = ipc://{tmp}/circus-ctl
pubsub_endpoint = ipc://{tmp}/circus-pub
warmup_delay = 0
statsd = false
httpd = false
{watchers}"""
        )
        argv = [str(run.ENV / "bin" / "circusd"), str(conf)]
        return Setup(argv, [out / f"flood_{i:03d}.log" for i in range(k)])

    raise ValueError(tool)


# ------------------------------------------------------------------------- a run


@dataclass
class Flood:
    tool: str
    instances: int
    per: int  # lines per instance
    seconds: float | None = None  # gate opened -> last line of every instance on disk
    cpu: float | None = None  # the daemon's user+system seconds over that time
    flood_cpu: float | None = None  # the floods' user+system seconds, all instances
    flood_wait: float | None = None  # the floods' seconds runnable, waiting for a CPU
    flood_blocked: int | None = None  # the floods' sleeps in a write (a full pipe)
    found: int = 0  # distinct numbered lines read back
    duplicated: int = 0
    corrupt: int = 0  # lines that are not one of flood's lines, whole and unchanged
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def lines(self) -> int:
        return self.instances * self.per

    @property
    def lost(self) -> int:
        return self.lines - self.found

    @property
    def mb(self) -> float:
        return self.lines * LINE / 1e6


def tail(path: Path, size: int = 512) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read()
    except FileNotFoundError:
        return b""


def wait_captured(res: Flood, files: list[Path], t0: float) -> None:
    """Until the last line of every instance is in its file; stop after STALL seconds
    in which no file grew (lines lost or the tool stuck)."""
    last = {i: b"I%03d L%010d " % (i, res.per - 1) for i in range(len(files))}
    sizes: dict[int, int] = {}
    grew = time.monotonic()
    done_at = t0
    while last:
        now = time.monotonic()
        for i in list(last):
            try:
                size = files[i].stat().st_size
            except FileNotFoundError:
                continue
            if size != sizes.get(i):
                sizes[i] = size
                grew = now
                if last[i] in tail(files[i]):
                    del last[i]
                    done_at = now
        if last and now - grew > STALL:
            res.notes.append(
                f"{len(last)} instance(s) never showed their last line ({STALL:g} s without growth)"
            )
            res.seconds = grew - t0
            return
        time.sleep(POLL)
    res.seconds = done_at - t0


def count_lines(res: Flood, files: list[Path]) -> None:
    """Read every instance's numbered lines back: distinct, duplicated, corrupt."""
    for i, path in enumerate(files):
        paths = sorted(path.parent.glob(path.name + "*"))  # any rotated file too
        data = b"".join(p.read_bytes() for p in paths)
        record = re.compile(rb"I%03d L(\d{10}) x{%d}\n" % (i, PAD))
        numbers = record.findall(data)
        distinct = len(set(numbers))
        res.found += distinct
        res.duplicated += len(numbers) - distinct
        res.corrupt += data.count(b"\n") - len(numbers)


def at_gate(pids: set[int], timeout: float = 5.0) -> bool:
    """Until every flood is blocked opening the gate (it reports just before)."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/wchan") as f:
                    waiting += f.read() == "wait_for_partner"  # a FIFO's open()
            except OSError:
                pass
        if waiting == len(pids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def waits(pids: set[int]) -> tuple[float, int]:
    """Seconds the processes `pids` have waited for a CPU while runnable (schedstat's
    run_delay), and how often they went to sleep (voluntary context switches)."""
    delay, sleeps = 0.0, 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            delay += int(f.read().split()[1]) / 1e9
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        sleeps += int(fields["voluntary_ctxt_switches"])
    return delay, sleeps


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_daemon(setup: Setup, tmp: Path, log: Path) -> tuple[int, subprocess.Popen | None]:
    if not setup.detached:
        proc = run.launch(setup.argv, tmp, log)
        return proc.pid, proc
    with open(log, "wb") as out:
        subprocess.run(
            setup.argv, cwd=tmp, stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True
        )
    return int((tmp / "state" / "herdsman.lock").read_text().split()[0]), None


def stop_daemon(tool: str, pid: int, proc: subprocess.Popen | None, tmp: Path, res: Flood) -> None:
    """herdsman: `down`; the others: SIGTERM. Then SIGKILL whatever is left."""
    if tool == "herdsman":
        conf = tmp / "herdsman.toml"
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [str(run.herdsman_bin()), "-c", str(conf), "down"],
                capture_output=True,
                timeout=run.STOP_TIMEOUT,
            )
    elif proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(run.STOP_TIMEOUT)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        res.notes.append("did not stop in time; killed")
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_flood(tool: str, k: int, per: int) -> Flood:
    res = Flood(tool, k, per)
    tmp = Path(tempfile.mkdtemp(prefix="hl", dir="/tmp"))
    sock = f"{tmp}/s"
    gate = tmp / "gate"
    os.mkfifo(gate)
    collector = run.Collector(sock)
    log = tmp / "daemon.log"
    pid, proc, gate_fd = 0, None, -1
    try:
        setup = config_for(tool, k, per, tmp, sock, gate)
        try:
            pid, proc = start_daemon(setup, tmp, log)
        except (OSError, subprocess.CalledProcessError) as err:
            res.error = f"did not start: {err}"
            res.notes.append(f"daemon output:\n{run.log_tail(log)}")
            return res
        if not collector.wait_for_pids(k, START_TIMEOUT, proc):
            res.error = f"{len(collector.pids)}/{k} instances reported within {START_TIMEOUT:g} s"
            res.notes.append(f"daemon output:\n{run.log_tail(log)}")
            return res
        if not at_gate(collector.pids):
            res.notes.append("not every flood was waiting at the gate when it opened")
        cpu0 = cpu_seconds(pid)
        waits0 = waits(collector.pids)
        t0 = time.monotonic()
        gate_fd = os.open(gate, os.O_RDWR)  # a writer: every open() waiting on it returns
        wait_captured(res, setup.files, t0)
        res.cpu = cpu_seconds(pid) - cpu0
        with contextlib.suppress(OSError):  # they pause() once done: still there to ask
            res.flood_cpu = sum(cpu_seconds(flood) for flood in collector.pids)
            delay, sleeps = waits(collector.pids)
            res.flood_wait = delay - waits0[0]
            # Each has gone to sleep once more by now, in pause(), its lines all written.
            res.flood_blocked = max(0, sleeps - waits0[1] - k)
        if not alive(pid):
            res.error = "the daemon died during the flood"
            res.notes.append(f"daemon output:\n{run.log_tail(log)}")
        count_lines(res, setup.files)
        return res
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must wait
        try:
            if gate_fd >= 0:
                os.close(gate_fd)
            if pid:
                stop_daemon(tool, pid, proc, tmp, res)
            left = kill_floods(gate)
            if left and pid:
                res.notes.append(f"left {left} flood process(es) running (killed)")
            collector.close()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)


# ------------------------------------------------------------------------ report

ROWS = (  # label, value, digits
    ("capture time (s)", lambda r: r.seconds, 3),
    ("lines/s (M)", lambda r: r.lines / r.seconds / 1e6 if r.seconds else None, 3),
    ("MB/s", lambda r: r.mb / r.seconds if r.seconds else None, 1),
    ("daemon CPU s per MB", lambda r: r.cpu / r.mb if r.cpu is not None else None, 4),
    ("floods' CPU s per MB", lambda r: r.flood_cpu / r.mb if r.flood_cpu is not None else None, 4),
    ("floods' wait for a CPU (s)", lambda r: r.flood_wait, 3),
    ("floods' sleeps on a full pipe", lambda r: r.flood_blocked, 0),
    ("lost lines", lambda r: r.lost, 0),
    ("duplicated lines", lambda r: r.duplicated, 0),
    ("corrupt lines", lambda r: r.corrupt, 0),
)


def median(runs: list[Flood], value: object) -> float | None:
    values = [value(r) for r in runs if r.error is None]  # type: ignore[operator]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(results: dict[tuple[str, int], list[Flood]], tools: list[str], scenarios: list) -> str:
    header = ["scenario", "metric"]
    for t in tools:
        header.append(t)
        if t != "herdsman":
            header.append(f"{t}/herdsman")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for k, per in scenarios:
        label = f"{k} × {per:,} lines"
        for name, value, digits in ROWS:
            base = median(results.get(("herdsman", k), []), value)
            cells = [label, name]
            for t in tools:
                runs = results.get((t, k), [])
                v = median(runs, value)
                cells.append(
                    "failed" if runs and v is None else f"{v:.{digits}f}" if v is not None else "-"
                )
                if t != "herdsman":
                    cells.append(f"{v / base:.2f}x" if v is not None and base else "-")
            lines.append("| " + " | ".join(cells) + " |")
            label = ""
    return "\n".join(lines)


def notes_text(results: dict[tuple[str, int], list[Flood]]) -> str:
    out = []
    for (tool, k), runs in results.items():
        for n, r in enumerate(runs, 1):
            for item in ([f"FAILED: {r.error}"] if r.error else []) + r.notes:
                out.append(f"- {tool}, {k} instance(s), run {n}: {item}")
        times = [r.seconds for r in runs if r.seconds and r.error is None]
        if len(times) > 1:
            rates = sorted(runs[0].lines / s / 1e6 for s in times)
            out.append(
                f"- {tool}, {k} instance(s): {len(times)} runs,"
                f" {rates[0]:.3f} to {rates[-1]:.3f} M lines/s"
            )
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines per scenario")
    ap.add_argument("--instances", type=int, default=50, help="instances in the second scenario")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool and scenario (median)")
    ap.add_argument("--only", default=",".join(TOOLS), help="comma-separated tools")
    args = ap.parse_args()
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    bad = [t for t in args.only if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {', '.join(bad)}; choose from {', '.join(TOOLS)}")
    if args.runs < 1 or args.instances < 1 or args.lines < args.instances:
        ap.error("--runs and --instances must be at least 1, --lines at least --instances")
    if args.instances > 1000:
        ap.error("--instances is at most 1000 (flood tags lines with 3 digits)")
    return args


def main() -> int:
    args = parse_args()  # before ensure_env, so --help and bad usage are instant
    run.ensure_env()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    build_flood()
    run.raise_limits()
    run.become_subreaper()
    kill_stale_floods()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    versions = run.tool_versions()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    tools = [t for t in TOOLS if t in args.only]
    scenarios = [(1, args.lines), (args.instances, args.lines // args.instances)]
    results: dict[tuple[str, int], list[Flood]] = {}
    try:
        for k, per in scenarios:
            for n in range(args.runs):
                for tool in tools:  # interleaved, so a slow spell hits every tool alike
                    print(f"{tool}: {k} × {per:,} lines, run {n + 1} ...", flush=True)
                    r = run_flood(tool, k, per)
                    results.setdefault((tool, k), []).append(r)
                    rate = f"{r.lines / r.seconds / 1e6:.3f} M lines/s" if r.seconds else ""
                    print(f"  {r.error or 'ok'} {rate}, lost {r.lost}", flush=True)
                    time.sleep(1)  # let the page cache writeback settle
    except KeyboardInterrupt:
        print("interrupted; every daemon and flood of this run has been stopped", flush=True)
        return 130

    text = table(results, tools, scenarios)
    notes = notes_text(results)
    print()
    print(text)
    if notes:
        print("\nNotes:\n" + notes)
    head = "\n".join(run.header_lines(versions, ["python3 bench/logs.py", *sys.argv[1:]], load))
    body = f"""# herdsman log capture benchmark results

{head}

{text}

Medians of {args.runs} run(s). Ratios are peer / herdsman: for lines/s and MB/s above
1 is in the peer's favour, for CPU per MB above 1 is in herdsman's favour. herdsman
writes a 32-byte timestamp and stream prefix on every line; the others write the
lines as they came. See bench/README.md ("Log capture").
"""
    if notes:
        body += f"\n## Notes\n\n{notes}\n"
    RESULTS.write_text(body)
    print(f"\nwritten to {RESULTS.relative_to(run.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
