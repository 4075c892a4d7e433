#!/usr/bin/env python3
"""Benchmark herdsman against supervisord, circus and a bare-Python floor.

    python3 bench/run.py [--instances 300] [--kills 30] [--idle 20]
                         [--scale 2000,5000,8000] [--only herdsman,floor,supervisord,circus]

Every tool supervises N copies of bench/build/stamp, a tiny C program that sends its
CLOCK_MONOTONIC start time and pid in one datagram to a Unix socket this harness
listens on, then pauses forever. From those datagrams the harness measures, per tool:
start time for N instances, respawn latency after SIGKILL, the daemon's idle CPU and
RSS, its stop time, and (herdsman and floor only) the scale runs: for each M, start,
RSS per instance, status latency, idle CPU and stop with M instances. See
bench/README.md for what each figure means and the caveats.

The harness runs in its own venv (bench/.env, created on first use, with supervisor,
circus, psutil and a normal, non-editable install of this checkout's herdsman); started
with any other python it re-executes itself there. After the table above it measures
status latency (bench/status.py): the client command listing --status-instances.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # first run with a bare python: main() re-executes into bench/.env
    psutil = None

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ENV = BENCH / ".env"
ENV_PY = ENV / "bin" / "python"
ENV_SOURCE_HASH = ENV / ".herdsman-source"  # hash of the source the installed herdsman came from
STAMP = BENCH / "build" / "stamp"
RESULTS = BENCH / "results.md"
TOOLS = ("herdsman", "floor", "pydantic-floor", "supervisord", "circus")
START_ONLY = ("pydantic-floor",)  # a reference for the start figure: no kills, no idle
ALL_TOOLS = (*TOOLS, "pm2")  # pm2: status latency only (bench/status.py)
SCALE_TOOLS = ("herdsman", "floor")
KILL_TIMEOUT = 10.0  # seconds to wait for a replacement before calling it a timeout
STOP_TIMEOUT = 30.0  # seconds a daemon gets to stop after SIGTERM before SIGKILL
PR_SET_CHILD_SUBREAPER = 36


# ----------------------------------------------------------------------------- setup


def ensure_env() -> None:
    """Create bench/.env with the peers, psutil and herdsman, byte-compile it, then run
    the script that was started (this one, or bench/status.py) with it."""
    if not ENV_PY.exists():
        print(f"creating {ENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    changed = False
    probe = subprocess.run(
        [str(ENV_PY), "-c", "import supervisor, circus, psutil"], capture_output=True
    )
    if probe.returncode != 0:
        print("installing supervisor, circus, psutil into bench/.env ...", flush=True)
        subprocess.run(
            [str(ENV_PY), "-m", "pip", "install", "-q", "supervisor", "circus", "psutil"],
            check=True,
        )
        changed = True
    if not os.environ.get("HERDSMAN"):
        changed |= install_herdsman()
    if changed:
        # Every tool starts from bytecode, as after a normal install, whatever
        # PYTHONDONTWRITEBYTECODE was when anything in the venv was installed or run.
        subprocess.run([str(ENV_PY), "-m", "compileall", "-q", str(ENV / "lib")], check=True)
    if Path(sys.prefix).resolve() != ENV.resolve() or psutil is None:
        script = str(Path(sys.argv[0]).resolve())
        os.execv(str(ENV_PY), [str(ENV_PY), script, *sys.argv[1:]])


def source_files() -> list[Path]:
    """What the herdsman wheel is built from."""
    files = [REPO / "pyproject.toml", REPO / "README.md", REPO / "LICENSE"]  # as pyproject names
    for path in sorted((REPO / "src").rglob("*")):
        parts = path.relative_to(REPO).parts
        skip = "__pycache__" in parts or any(part.endswith(".egg-info") for part in parts)
        if path.is_file() and not skip:
            files.append(path)
    return files


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def install_herdsman() -> bool:
    """(Re)install herdsman from this checkout into bench/.env as a regular wheel, as a
    user gets it, when its source changed since the last install. The dev venv's
    editable install would put an import hook in front of every start. The wheel is
    built from a copy of the source, so no build/ or egg-info lands in the checkout."""
    digest = source_hash()
    binary = ENV / "bin" / "herdsman"
    if (
        binary.exists()
        and ENV_SOURCE_HASH.exists()
        and ENV_SOURCE_HASH.read_text().strip() == digest
    ):
        return False
    print("installing herdsman (a wheel of this checkout) into bench/.env ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="hb-wheel") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for path in source_files():
            dest = src / path.relative_to(REPO)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        pip = [str(ENV_PY), "-m", "pip"]
        # The `herdsman` script is written by this pip. Python 3.11's venv brings pip
        # 23, whose scripts `import re` (a third of what `herdsman status` costs beyond
        # the interpreter's start-up); pip 25 and later write them without it, as for
        # `make install` and whoever installs herdsman with a current pip.
        subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", tmp, str(src)], check=True)
        (wheel,) = Path(tmp).glob("herdsman-*.whl")
        subprocess.run([*pip, "install", "-q", str(wheel)], check=True)  # + dependencies
        subprocess.run(
            [*pip, "install", "-q", "--force-reinstall", "--no-deps", str(wheel)], check=True
        )
    ENV_SOURCE_HASH.write_text(digest + "\n")
    return True


def herdsman_source() -> str:
    """The commit the installed herdsman was built from, and whether src/ differed."""
    if os.environ.get("HERDSMAN"):
        return f"$HERDSMAN={os.environ['HERDSMAN']}"
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "wheel of the checkout"
    return f"wheel of {rev}" + (" with uncommitted changes in src/" if dirty else "")


def build_stamp() -> None:
    src = BENCH / "stamp.c"
    if STAMP.exists() and STAMP.stat().st_mtime >= src.stat().st_mtime:
        return
    STAMP.parent.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(STAMP), str(src)], check=True)


def raise_limits() -> None:
    """Soft limits up to the hard ones; the daemons and the stamps inherit them."""
    for res in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC):
        _soft, hard = resource.getrlimit(res)
        resource.setrlimit(res, (hard, hard))


def become_subreaper() -> None:
    """Orphaned stamps (a daemon that died without killing them) get reparented to us,
    so we can reap them instead of leaving zombies behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def herdsman_bin() -> Path:
    return Path(os.environ.get("HERDSMAN") or ENV / "bin" / "herdsman")


def tool_versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version(), "psutil": version("psutil")}
    out["supervisord"] = version("supervisor")
    out["circus"] = version("circus")
    try:
        res = subprocess.run(
            [str(herdsman_bin()), "version"], capture_output=True, text=True, timeout=20
        )
        text = (res.stdout or res.stderr).strip().splitlines()
        ok = res.returncode == 0 and text
        out["herdsman"] = text[0].removeprefix("herdsman ") if ok else "unavailable"
    except (OSError, subprocess.TimeoutExpired):
        out["herdsman"] = "unavailable"
    out["herdsman"] += f" ({herdsman_source()})"
    return out


# ------------------------------------------------------------------------- stamps


@dataclass(frozen=True)
class Stamp:
    started: float  # the stamp's own CLOCK_MONOTONIC reading at the top of main()
    pid: int


class Collector:
    """Listens on the datagram socket the stamps report to, in a background thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.stamps: list[Stamp] = []
        self.pids: set[int] = set()
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(128)
            except TimeoutError:
                continue
            except OSError:
                return
            started, pid = data.split()
            with self.cond:
                self.stamps.append(Stamp(float(started), int(pid)))
                self.pids.add(int(pid))
                self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.stamps)

    def wait_for_pids(self, n: int, timeout: float, daemon: subprocess.Popen | None) -> bool:
        """Wait until n distinct pids have reported; False on timeout or daemon exit."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.pids) < n:
                left = deadline - time.monotonic()
                if left <= 0 or (daemon is not None and daemon.poll() is not None):
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def wait_after(self, index: int, since: float, timeout: float) -> Stamp | None:
        """The first stamp at position >= index that started at or after `since`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for s in self.stamps[index:]:
                    if s.started >= since:
                        return s
                index = len(self.stamps)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.2))

    def close(self) -> None:
        self.closed = True
        self.thread.join(2)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def stamps_of(sock: str) -> list[psutil.Process]:
    """Live (non-zombie) stamp processes reporting to this socket."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["cmdline"] == [str(STAMP), sock] and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def kill_stamps(sock: str) -> int:
    """SIGKILL every stamp of this socket (and its process group); return how many."""
    left = stamps_of(sock)
    for p in left:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(p.pid), signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=5)
    return len(left)


def reap_orphans() -> None:
    """Reap whatever got reparented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_stale_stamps() -> None:
    """Stamps of an earlier run that was itself SIGKILLed: their socket dir is gone."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if len(cmd) == 2 and cmd[0] == str(STAMP) and not Path(cmd[1]).parent.exists():
            with contextlib.suppress(psutil.Error):
                p.kill()


# ------------------------------------------------------------------ tool configs


def config_for(tool: str, n: int, tmp: Path, sock: str, circus_check_delay: float) -> list[str]:
    """Write tool's config for n stamps into tmp; return the daemon's argv."""
    stamp = str(STAMP)
    if tool == "floor":
        return [sys.executable, str(BENCH / "floor.py"), str(n), stamp, sock]
    if tool == "pydantic-floor":
        return [sys.executable, str(BENCH / "floor.py"), "--pydantic", str(n), stamp, sock]

    if tool == "herdsman":
        conf = tmp / "herdsman.toml"
        conf.write_text(
            "[services.stamp]\n"
            f"command = {json.dumps([stamp, sock])}\n"
            f"replicas = {n}\n"
            'restart = "always"\n'
            "backoff = { initial = 0 }\n"
            "start_seconds = 0\n"
            'start_limit = { burst = 100000, interval = "1s" }\n'
            'stop_timeout = "5s"\n'
        )
        return [str(herdsman_bin()), "-c", str(conf), "up"]

    if tool == "supervisord":
        return supervisord_config(tmp, n, "stamp", f"{stamp} {sock}")

    if tool == "circus":
        # One watcher with numprocesses = n is what a user writes for n identical
        # workers. circus has no SIGCHLD handling: dead processes are only noticed by
        # the periodic manage_watchers pass every check_delay seconds (default 5 s;
        # it must be > 0, or nothing is ever respawned), so check_delay bounds its
        # respawn latency and drives its idle CPU.
        conf = tmp / "circus.ini"
        conf.write_text(
            f"""\
[circus]
endpoint = ipc://{tmp}/circus-ctl
pubsub_endpoint = ipc://{tmp}/circus-pub
check_delay = {circus_check_delay}
warmup_delay = 0
statsd = false
httpd = false

[watcher:stamp]
cmd = {stamp}
args = {sock}
numprocesses = {n}
respawn = true
warmup_delay = 0
graceful_timeout = 5
"""
        )
        return [str(ENV / "bin" / "circusd"), str(conf)]

    raise ValueError(tool)


def supervisord_config(tmp: Path, n: int, program: str, command: str) -> list[str]:
    """supervisord's config for n copies of `command` (restarted whenever they exit,
    output to a file each) written into tmp, with the control socket supervisorctl
    reads; the daemon's argv."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if nproc == resource.RLIM_INFINITY:
        nproc = 10 * n + 1000
    conf = tmp / "supervisord.conf"
    conf.write_text(
        f"""\
[supervisord]
nodaemon = true
logfile = {tmp}/supervisord.log
pidfile = {tmp}/supervisord.pid
childlogdir = {tmp}
minfds = {min(nofile, 8 * n + 1024)}
minprocs = {min(nproc, 2 * n + 200)}

[unix_http_server]
file = {tmp}/supervisor.sock

[supervisorctl]
serverurl = unix://{tmp}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:{program}]
command = {command}
process_name = %(program_name)s_%(process_num)04d
numprocs = {n}
autostart = true
autorestart = true
startsecs = 0
startretries = 100000
stopwaitsecs = 5
redirect_stderr = true
stdout_logfile = {tmp}/%(program_name)s_%(process_num)04d.log
"""
    )
    return [str(ENV / "bin" / "supervisord"), "-n", "-c", str(conf)]


# ------------------------------------------------------------------------- a run


@dataclass
class Result:
    tool: str
    n: int
    start: float | None = None
    first: float | None = None  # the first child's start after the launch
    start_cpu: float | None = None  # the whole machine's busy CPU-s during the start
    respawn_ms: list[float] = field(default_factory=list)
    timeouts: int = 0
    idle_cpu: float | None = None
    rss_mb: float | None = None
    stop: float | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    # scale runs only
    status_api_ms: list[float] = field(default_factory=list)  # GET /v1/status, first one first
    status_cli_ms: list[float] = field(default_factory=list)  # `herdsman status`
    lost: int | None = None  # instances that never reported
    left: int | None = None  # stamps still running after the daemon exited


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores (/proc/stat:
    everything but idle and iowait, in clock ticks)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def launch(argv: list[str], tmp: Path, log: Path) -> subprocess.Popen:
    """Start a daemon in its own session, in tmp, its output into log."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


def stop_daemon(daemon: subprocess.Popen, res: Result, sock: str, log: Path) -> None:
    """SIGTERM, wait, SIGKILL; then make sure no stamp of this run survives."""
    if daemon.poll() is None:
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(STOP_TIMEOUT)
            res.stop = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            res.notes.append(
                f"did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM ({len(stamps_of(sock))}"
                f" stamps still running); killed. Its output:\n{log_tail(log)}"
            )
            with contextlib.suppress(OSError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.kill()
            daemon.wait()
    left = kill_stamps(sock)
    res.left = left if res.stop is not None else None
    if left and res.stop is not None:
        res.notes.append(f"left {left} stamp(s) running after it exited (killed by the harness)")
    reap_orphans()


def run_tool(tool: str, n: int, kills: int, idle: float, circus_check_delay: float) -> Result:
    res = Result(tool, n)
    tmp = Path(tempfile.mkdtemp(prefix="hb"))
    sock = f"{tmp}/s"
    collector = Collector(sock)
    daemon = None
    log = tmp / "daemon.log"
    try:
        argv = config_for(tool, n, tmp, sock, circus_check_delay)
        busy0 = machine_busy()
        t0 = time.monotonic()
        daemon = launch(argv, tmp, log)
        if not collector.wait_for_pids(n, 30 + 0.05 * n, daemon):
            why = "exited" if daemon.poll() is not None else "timed out"
            res.error = f"{why}: {len(collector.pids)}/{n} stamps reported"
            res.notes.append(f"daemon output:\n{log_tail(log)}")
            return res
        res.start_cpu = machine_busy() - busy0
        seen: set[int] = set()
        last = 0.0
        for s in collector.stamps:
            if len(seen) == n:
                break
            seen.add(s.pid)
            last = max(last, s.started)
        res.start = last - t0
        res.first = min(s.started for s in collector.stamps) - t0
        if len(collector.pids) > n:
            res.notes.append(f"{len(collector.pids) - n} extra spawn(s) during start")

        # respawn latency: SIGKILL one live instance, time until its replacement starts
        rng = random.Random(0)
        live = set(collector.pids)
        time.sleep(0.5)
        for _ in range(kills):
            victim = rng.choice(sorted(live))
            live.discard(victim)
            index = collector.count()
            killed_at = time.monotonic()
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                res.notes.append(f"pid {victim} had already gone before its kill")
                continue
            new = collector.wait_after(index, killed_at, KILL_TIMEOUT)
            if new is None:
                res.timeouts += 1
            else:
                res.respawn_ms.append((new.started - killed_at) * 1000)
                live.add(new.pid)
            time.sleep(0.05)
        if res.timeouts:
            live = {p.pid for p in stamps_of(sock)}
        if daemon.poll() is not None:
            res.error = f"daemon exited with {daemon.returncode} during the respawn test"
            res.notes.append(f"daemon output:\n{log_tail(log)}")
            return res

        # idle: the daemon process alone, N instances running, nothing happening
        proc = psutil.Process(daemon.pid)
        if idle > 0:
            time.sleep(1)
            before = proc.cpu_times()
            time.sleep(idle)
            after = proc.cpu_times()
            res.idle_cpu = (after.user + after.system) - (before.user + before.system)
            res.rss_mb = proc.memory_info().rss / 2**20
        running = len(stamps_of(sock))
        if running != n:
            res.notes.append(f"{running} stamps running after the respawn test, not {n}")
        helpers = [c for c in proc.children(recursive=True) if c.cmdline()[:1] != [str(STAMP)]]
        if helpers:
            names = sorted({c.name() for c in helpers})
            res.notes.append(
                f"{len(helpers)} helper process(es) besides the stamps ({', '.join(names)});"
                " not counted in CPU/RSS"
            )
        return res
    finally:
        # a second Ctrl-C must not cut the cleanup short
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if daemon is not None:
                stop_daemon(daemon, res, sock, log)
            else:
                kill_stamps(sock)
            collector.close()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)


def schedstat_cpu(pid: int) -> float:
    """CPU seconds of every thread of `pid`, from the scheduler's nanosecond counters
    (the tick-sampled figures of /proc/PID/stat miss short bursts)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


def rss_of(pid: int) -> float:
    """VmRSS of `pid` in MB (2^20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for {pid}")


def http_get(path: str, target: str, timeout: float = 60.0) -> bytes:
    """A plain HTTP/1.1 GET over a Unix socket; the body (the daemon closes after it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: herdsman\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"GET {target}: {head.splitlines()[0] if head else b'no answer'!r}")
    return body


def fds_needed(n: int) -> int:
    """What herdsman holds for n instances: two pipes each, plus its own few."""
    return 2 * n + 200


def run_scale(tool: str, n: int, idle: float, queries: int) -> Result:
    """One scale run: start n instances, then RSS, status latency (herdsman), idle CPU,
    stop; and whether every instance started (lost) and none survived the stop (left)."""
    res = Result(tool, n)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if tool == "herdsman" and fds_needed(n) > nofile:
        res.error = f"needs about {fds_needed(n)} fds, RLIMIT_NOFILE is {nofile}"
        return res
    tmp = Path(tempfile.mkdtemp(prefix="hb"))
    sock = f"{tmp}/s"
    collector = Collector(sock)
    daemon = None
    log = tmp / "daemon.log"
    try:
        argv = config_for(tool, n, tmp, sock, 0.1)
        busy0 = machine_busy()
        t0 = time.monotonic()
        daemon = launch(argv, tmp, log)
        if not collector.wait_for_pids(n, 60 + 0.05 * n, daemon):
            why = "exited" if daemon.poll() is not None else "timed out"
            res.lost = n - len(collector.pids)
            res.error = f"{why}: {len(collector.pids)}/{n} stamps reported"
            res.notes.append(f"daemon output:\n{log_tail(log)}")
            return res
        res.start_cpu = machine_busy() - busy0
        res.lost = 0
        firsts: dict[int, float] = {}
        for s in collector.stamps:
            firsts.setdefault(s.pid, s.started)
        res.start = max(sorted(firsts.values())[:n]) - t0
        res.first = min(firsts.values()) - t0
        time.sleep(1)
        res.rss_mb = rss_of(daemon.pid)
        if tool == "herdsman":
            api = f"{tmp}/.herdsman/herdsman.sock"
            for _ in range(queries):
                t = time.monotonic()
                body = http_get(api, "/v1/status")
                res.status_api_ms.append((time.monotonic() - t) * 1000)
                running = body.count(b'"state":"running"') + body.count(b'"state": "running"')
                if running != n:
                    res.notes.append(f"status showed {running} running, not {n}")
                time.sleep(0.2)
            conf = str(tmp / "herdsman.toml")
            for _ in range(max(1, queries // 2)):
                t = time.monotonic()
                out = subprocess.run(
                    [str(herdsman_bin()), "-c", conf, "status"], capture_output=True, timeout=120
                )
                res.status_cli_ms.append((time.monotonic() - t) * 1000)
                if out.returncode != 0:
                    res.notes.append(f"herdsman status exited {out.returncode}")
            # Idle means after whatever the requests started (herdsman samples the
            # rest of a big herd in the background): wait until a second passes
            # with no CPU used, at most 60 s.
            deadline = time.monotonic() + 60
            before = schedstat_cpu(daemon.pid)
            while time.monotonic() < deadline:
                time.sleep(1)
                now = schedstat_cpu(daemon.pid)
                if now - before < 0.001:
                    break
                before = now
        if idle > 0:
            before = schedstat_cpu(daemon.pid)
            time.sleep(idle)
            res.idle_cpu = schedstat_cpu(daemon.pid) - before
        extra = len(collector.pids) - n
        if extra:
            res.notes.append(f"{extra} respawn(s) while nothing was killed")
        return res
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if daemon is not None:
                stop_daemon(daemon, res, sock, log)
            else:
                kill_stamps(sock)
            collector.close()
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old)


# ------------------------------------------------------------------------ report


def median_known(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Result], args: argparse.Namespace) -> str:
    tools = [t for t in TOOLS if t in results]

    def metric(r: Result | None, name: str) -> float | None:
        if r is None:
            return None
        lat = r.respawn_ms
        return {
            "start": r.start,
            "first": r.first,
            "spread": r.start - r.first if r.start is not None and r.first is not None else None,
            "start_cpu": r.start_cpu,
            "median": statistics.median(lat) if lat else None,
            "p95": pct(lat, 0.95) if lat else None,
            "max": max(lat) if lat else None,
            "timeouts": (
                float(r.timeouts)
                if r.start is not None and args.kills and r.tool not in START_ONLY
                else None
            ),
            "idle": r.idle_cpu,
            "rss": r.rss_mb,
            "stop": r.stop,
            "per1000": r.start / r.n * 1000 if r.start is not None else None,
        }[name]

    rows = [
        (f"start {args.instances} (s)", "start", False, 3),
        ("... of which to the first child (s)", "first", False, 3),
        ("... and the rest: start minus first child (s)", "spread", False, 3),
        ("machine CPU during the start (s)", "start_cpu", False, 2),
        ("respawn median (ms)", "median", False, 1),
        ("respawn p95 (ms)", "p95", False, 1),
        ("respawn max (ms)", "max", False, 1),
        (f"respawn timeouts (of {args.kills})", "timeouts", False, 0),
        (f"idle CPU (s per {args.idle:g} s)", "idle", False, 3),
        ("RSS (MB)", "rss", False, 1),
        ("stop (s)", "stop", False, 3),
        (f"start s per 1000, at {args.instances}", "per1000", False, 3),
    ]
    header = ["metric"]
    for t in tools:
        header.append(t)
        if t != "herdsman":
            header.append(f"{t}/herdsman")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key, _, digits in rows:
        base = metric(results.get("herdsman"), key)
        cells = [label]
        for t in tools:
            r = results.get(t)
            v = metric(r, key)
            if r is not None and r.error and v is None:
                cells.append("failed")
            else:
                cells.append(fmt(v, digits))
            if t != "herdsman":
                ok = v is not None and base
                cells.append(f"{v / base:.2f}x" if ok else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scale_table(scale: dict[int, dict[str, Result]], args: argparse.Namespace) -> str:
    """One row per M: herdsman's figures beside the floor's, same run."""
    header = [
        "instances",
        "start (s)",
        "floor start (s)",
        "start / floor",
        "first child (s), floor's",
        "machine CPU during the start (s), floor's",
        "start rate (/s)",
        "RSS (MB)",
        "floor RSS (MB)",
        "RSS per instance (KB)",
        "status API first / median (ms)",
        "status CLI median (ms)",
        f"idle CPU (s per {args.scale_idle:g} s)",
        "stop (s)",
        "floor stop (s)",
        "lost / left",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n, group in scale.items():
        h, f = group.get("herdsman"), group.get("floor")

        def val(r: Result | None, get: Any, digits: int) -> str:
            if r is None:
                return "-"
            v = get(r)
            return ("failed" if r.error else "n/a") if v is None else f"{v:.{digits}f}"

        api = h.status_api_ms if h else []
        api_cell = (
            f"{api[0]:.0f} / {statistics.median(api):.0f}" if api else val(h, lambda r: None, 0)
        )
        cli = h.status_cli_ms if h else []
        ratio = "-"
        if h and f and h.start is not None and f.start:
            ratio = f"{h.start / f.start:.2f}x"
        lost_left = "-"
        if h is not None and h.lost is not None:
            lost_left = f"{h.lost} / {'n/a' if h.left is None else h.left}"
        lines.append(
            "| "
            + " | ".join(
                [
                    str(n),
                    val(h, lambda r: r.start, 3),
                    val(f, lambda r: r.start, 3),
                    ratio,
                    f"{val(h, lambda r: r.first, 3)}, {val(f, lambda r: r.first, 3)}",
                    f"{val(h, lambda r: r.start_cpu, 2)}, {val(f, lambda r: r.start_cpu, 2)}",
                    val(h, lambda r: r.n / r.start if r.start else None, 0),
                    val(h, lambda r: r.rss_mb, 1),
                    val(f, lambda r: r.rss_mb, 1),
                    val(h, lambda r: r.rss_mb * 1024 / r.n if r.rss_mb else None, 1),
                    api_cell,
                    f"{statistics.median(cli):.0f}" if cli else val(h, lambda r: None, 0),
                    val(h, lambda r: r.idle_cpu, 3),
                    val(h, lambda r: r.stop, 3),
                    val(f, lambda r: r.stop, 3),
                    lost_left,
                ]
            )
            + " |"
        )
    sizes = [
        (n, g["herdsman"].rss_mb)
        for n, g in scale.items()
        if "herdsman" in g and g["herdsman"].rss_mb is not None
    ]
    if len(sizes) > 1:
        (n0, r0), (n1, r1) = sizes[0], sizes[-1]
        lines.append("")
        lines.append(
            f"RSS added per instance from {n0} to {n1} instances: "
            f"{(r1 - r0) * 1024 / (n1 - n0):.1f} KB."
        )
    return "\n".join(lines)


def notes_text(results: dict[str, Result], scale: dict[int, dict[str, Result]]) -> str:
    out = []
    groups = [("", results)] + [(" (scale run)", g) for g in scale.values()]
    for label, group in groups:
        for t in TOOLS:
            r = group.get(t)
            if r is None:
                continue
            items = ([f"FAILED: {r.error}"] if r.error else []) + r.notes
            for item in items:
                out.append(f"- {t}{label}, {r.n} instances: {item}")
    return "\n".join(out)


def header_lines(versions: dict[str, str], command: list[str], load: str) -> list[str]:
    """Date, machine, load, versions and command, as markdown list items."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"- date: {now}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()},"
        f" Python {platform.python_version()}",
        f"- load average before the run (1, 5, 15 min): {load}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- command: `{' '.join(command)}`",
    ]


def write_results(
    text: str, notes: str, versions: dict[str, str], argv: list[str], load: str, extra: str = ""
) -> None:
    """results.md: the header, the table, its notes, then extra (the status section)."""
    head = "\n".join(header_lines(versions, ["python3 bench/run.py", *argv], load))
    body = f"""# herdsman benchmark results

{head}

{text}

Ratios are peer / herdsman: above 1 means the peer's figure is that many times
herdsman's (for times and CPU, herdsman is better when the ratio is above 1).
See bench/README.md for what each row means.
"""
    if notes:
        body += f"\n## Notes\n\n{notes}\n"
    if extra:
        body += f"\n{extra}"
    # Sections this run did not write (status latency from an earlier run, another
    # benchmark's section) stay.
    owned = {"## Notes", *extra.splitlines()[:1]}
    old = RESULTS.read_text() if RESULTS.exists() else ""
    for part in old.split("\n## ")[1:]:
        if f"## {part.splitlines()[0]}" not in owned:
            body += f"\n## {part.rstrip()}\n"
    RESULTS.write_text(body)


# -------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=300, help="N instances per tool")
    ap.add_argument("--kills", type=int, default=30, help="SIGKILLs for respawn latency")
    ap.add_argument("--idle", type=float, default=20, help="seconds of idle CPU sampling")
    ap.add_argument(
        "--scale",
        default="2000,5000,8000",
        help="instances of each scale run, comma-separated (0: none)",
    )
    ap.add_argument(
        "--scale-idle", type=float, default=5, help="seconds of idle CPU in each scale run"
    )
    ap.add_argument(
        "--scale-queries", type=int, default=5, help="GET /v1/status per scale run (herdsman)"
    )
    ap.add_argument(
        "--starts", type=int, default=3, help="launches per start figure (median; default 3)"
    )
    ap.add_argument(
        "--only",
        default=",".join(ALL_TOOLS),
        help="comma-separated tools (pm2 takes part in the status measurement only)",
    )
    ap.add_argument(
        "--circus-check-delay",
        type=float,
        default=0.1,
        help="circus check_delay in s (its respawn poll period; default 0.1)",
    )
    ap.add_argument("--status-instances", type=int, default=50, help="instances for status latency")
    ap.add_argument("--status-runs", type=int, default=20, help="status runs per client (0: skip)")
    args = ap.parse_args()
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    try:
        args.scale = [int(m) for m in args.scale.split(",") if int(m) > 0]
    except ValueError:
        ap.error(f"--scale takes numbers of instances, comma-separated, not {args.scale!r}")
    bad = [t for t in args.only if t not in ALL_TOOLS]
    if args.starts < 1:
        ap.error("--starts must be at least 1")
    if args.status_instances < 1:
        ap.error("--status-instances must be at least 1")
    if bad:
        ap.error(f"unknown tool(s) {', '.join(bad)}; choose from {', '.join(ALL_TOOLS)}")
    return args


def interleaved(
    tools: list[str], full: Any, start_only: Any, starts: int, *, stops: bool
) -> dict[str, Result]:
    """One full run per tool (`full(tool)`), then rounds of start-only runs
    (`start_only(tool)`) up to `starts` launches per tool, the tools taking turns in
    each round: a machine that slows down or speeds up during the run then shifts
    every tool's figures alike, not the last tool's alone. Start, first child and
    machine CPU are the medians of the launches; with `stops`, the stop time too."""
    results: dict[str, Result] = {}
    for tool in tools:
        results[tool] = full(tool)
        print(f"  {results[tool].error or 'ok'}", flush=True)
        time.sleep(2)  # let the machine settle after the teardown
    extras: dict[str, list[Result]] = {tool: [] for tool in tools}
    for round_ in range(starts - 1):
        for tool in tools:
            if results[tool].start is None:
                continue
            print(f"  {tool}: start {round_ + 2} of {starts}", flush=True)
            extras[tool].append(start_only(tool))
            time.sleep(2)
    for tool in tools:
        fold(results[tool], extras[tool], stops=stops)
    return results


def fold(r: Result, extras: list[Result], *, stops: bool) -> None:
    """Fold start-only runs into r: medians of the launches, their notes and errors."""
    if r.start is None:
        return
    starts, firsts, cpus, ends = [r.start], [r.first], [r.start_cpu], [r.stop]
    for extra in extras:
        r.notes += [f"extra start run: {note}" for note in extra.notes]
        if extra.error:
            r.notes.append(f"extra start run failed: {extra.error}")
            continue
        starts.append(extra.start)
        firsts.append(extra.first)
        cpus.append(extra.start_cpu)
        ends.append(extra.stop)
        if extra.lost is not None:
            r.lost = max(r.lost or 0, extra.lost)
        if extra.left is not None:
            r.left = max(r.left or 0, extra.left)
    if len(starts) > 1:
        r.start = statistics.median(starts)
        r.first = median_known(firsts)
        r.start_cpu = median_known(cpus)
        r.notes.append(
            f"start: median of {len(starts)} launches, {min(starts):.3f} to {max(starts):.3f} s"
        )
    done = [x for x in ends if x is not None]
    if stops and len(done) > 1:
        r.stop = statistics.median(done)
        r.notes.append(f"stop: median of {len(done)}, {min(done):.3f} to {max(done):.3f} s")


def prepare() -> None:
    """Everything a measurement needs before the first daemon starts."""
    ensure_env()
    # The tools' Python processes may write bytecode, as they would after a normal
    # install (bench/.env is compiled already; this matters for anything that is not).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    build_stamp()
    raise_limits()
    become_subreaper()
    kill_stale_stamps()

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def warn_survivors() -> None:
    survivors = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if (p.info["cmdline"] or [""])[0] == str(STAMP)
    ]
    if survivors:
        print(f"WARNING: stamp processes still alive: {survivors}", file=sys.stderr)


def main() -> int:
    args = parse_args()  # before ensure_env, so --help and bad usage are instant
    prepare()
    # bench/status.py imports this file as `run`: let it share this module, not load
    # a second copy.
    sys.modules.setdefault("run", sys.modules[__name__])
    import status

    status_tools = [t for t in status.TOOLS if t in args.only] if args.status_runs else []
    versions = tool_versions()
    if "pm2" in status_tools and status.ensure_pm2() is None:
        versions["pm2"] = status.pm2_version()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict[str, Result] = {}
    scale: dict[int, dict[str, Result]] = {}
    statuses: dict[str, status.StatusResult] = {}
    try:
        n = args.instances

        def full(tool: str) -> Result:
            print(f"{tool}: {n} instances ...", flush=True)
            if tool in START_ONLY:
                return run_tool(tool, n, 0, 0, args.circus_check_delay)
            return run_tool(tool, n, args.kills, args.idle, args.circus_check_delay)

        def start_only(tool: str) -> Result:
            return run_tool(tool, n, 0, 0, args.circus_check_delay)

        tools = [t for t in TOOLS if t in args.only]
        results = interleaved(tools, full, start_only, args.starts, stops=False)
        for m in args.scale:

            def full_scale(tool: str, m: int = m) -> Result:
                print(f"{tool}: {m} instances (scale run) ...", flush=True)
                return run_scale(tool, m, args.scale_idle, args.scale_queries)

            def scale_start(tool: str, m: int = m) -> Result:
                return run_scale(tool, m, 0, 0)

            tools = [t for t in SCALE_TOOLS if t in args.only]
            scale[m] = interleaved(tools, full_scale, scale_start, args.starts, stops=True)
        if status_tools:
            status_load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            statuses = status.measure_all(status_tools, args.status_instances, args.status_runs)
    except KeyboardInterrupt:
        print("interrupted; every daemon and stamp of this run has been stopped", flush=True)
        return 130
    finally:
        warn_survivors()

    text = table(results, args) if results else ""
    if scale:
        text += ("\n\n" if text else "") + "### Scale\n\n" + scale_table(scale, args)
    notes = notes_text(results, scale)
    print()
    print(text)
    if notes:
        print("\nNotes:\n" + notes)
    extra = ""
    if statuses:
        command = ["python3 bench/run.py", *sys.argv[1:]]
        head = header_lines(versions, command, status_load)
        extra = status.section(statuses, args.status_instances, args.status_runs, head)
        print()
        print(extra, end="")
    write_results(text, notes, versions, sys.argv[1:], load, extra)
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
