#!/usr/bin/env python3
"""Status latency: how long each tool's client takes to report on N running instances.

    python3 bench/status.py [--instances 50] [--runs 20] [--only herdsman,supervisord,circus,pm2]

With N copies of bench/build/stamp running under each daemon, times (wall clock, from
just before the client is started to its exit) `herdsman -c CONF status`,
`supervisorctl -c CONF status`, `circusctl --endpoint ENDPOINT status` and `pm2 jlist`,
one unmeasured round and then --runs measured ones (all daemons run side by side, the
clients take turns), and prints the median, p95 and fastest run. run.py runs this
too, after its own table, so `make bench` includes it; run alone, it replaces the
status section of bench/results.md and leaves the rest.

PM2 comes from the npm registry, installed with npm into bench/.env/node on first
use; without npm (or if the install fails) the pm2 column says so and the rest runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import run  # the harness next to this file: venv, stamps, daemon configs, cleanup

TOOLS = ("herdsman", "supervisord", "circus", "pm2")
COMMANDS = {
    "herdsman": "herdsman -c CONF status",
    "supervisord": "supervisorctl -c CONF status",
    "circus": "circusctl --endpoint ENDPOINT status",
    "pm2": "pm2 jlist",
}
NODE = run.ENV / "node"  # npm prefix for PM2
PM2 = NODE / "node_modules" / ".bin" / "pm2"
# circus's own default: its manage_watchers pass (the respawn poll) runs every
# check_delay seconds, and here nothing needs respawning.
CIRCUS_CHECK_DELAY = 5.0
SETTLE = 1.0  # seconds between the last stamp starting and the first status
PAUSE = 0.1  # seconds between two status runs
CLIENT_TIMEOUT = 60.0
SECTION = "## Status latency"
OWNER = "HERDSMAN_BENCH_PID"  # in PM2's environment: the harness that started it


@dataclass
class StatusResult:
    tool: str
    n: int
    ms: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


# ----------------------------------------------------------------------------- PM2


def ensure_pm2() -> str | None:
    """Install PM2 into bench/.env/node unless it is there; why not, or None."""
    if PM2.exists():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found, so PM2 could not be installed"
    print("installing pm2 (npm) into bench/.env/node ...", flush=True)
    NODE.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        [npm, "install", "--prefix", str(NODE), "--no-audit", "--no-fund", "pm2"],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0 or not PM2.exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return "npm install pm2 failed: " + " / ".join(tail)
    return None


def pm2_version() -> str:
    try:
        package = NODE / "node_modules" / "pm2" / "package.json"
        version = json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "unavailable"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True)
    return f"{version} (node {node.stdout.strip().removeprefix('v') or '?'})"


def pm2_env(tmp: Path) -> dict[str, str]:
    """PM2 keeps its daemon, sockets and logs in PM2_HOME: a fresh one per run. The
    harness's pid goes along, so that a later run can tell a PM2 left behind by a
    harness that was SIGKILLed (kill_stale_pm2)."""
    return {**os.environ, "PM2_HOME": str(tmp / "pm2"), OWNER: str(os.getpid())}


def pm2_start(n: int, tmp: Path, sock: str) -> subprocess.CompletedProcess:
    """n apps s0..s{n-1} running the stamp, from an ecosystem file; this starts PM2's
    daemon (God), which outlives the command."""
    apps = [
        {
            "name": f"s{i}",
            "script": str(run.STAMP),
            "args": [sock],
            "interpreter": "none",
            "autorestart": True,
        }
        for i in range(n)
    ]
    eco = tmp / "ecosystem.config.js"
    eco.write_text(f"module.exports = {json.dumps({'apps': apps}, indent=1)};\n")
    return subprocess.run(
        [str(PM2), "start", str(eco)],
        cwd=tmp,
        env=pm2_env(tmp),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pm2_processes(tmp: Path) -> list[run.psutil.Process]:
    """Every process started with this run's PM2_HOME in its environment: the God
    daemon, the stamps it spawned, a CLI still running."""
    home = str(tmp / "pm2")
    found = []
    for p in run.psutil.process_iter():
        with contextlib.suppress(run.psutil.Error):
            if p.pid != os.getpid() and p.environ().get("PM2_HOME") == home:
                found.append(p)
    return found


def kill_stale_pm2() -> None:
    """PM2 daemons and apps of an earlier run whose harness is gone (SIGKILLed)."""
    stale = []
    for p in run.psutil.process_iter():
        with contextlib.suppress(run.psutil.Error, ValueError):
            owner = p.environ().get(OWNER)
            if owner and not run.psutil.pid_exists(int(owner)):
                stale.append(p)
    for p in stale:
        with contextlib.suppress(run.psutil.Error):
            p.kill()
    run.psutil.wait_procs(stale, timeout=5)


def pm2_stop(tmp: Path, res: StatusResult) -> None:
    """`pm2 kill` (stops the apps and the daemon), then SIGKILL whatever is left."""
    try:
        subprocess.run(
            [str(PM2), "kill"],
            cwd=tmp,
            env=pm2_env(tmp),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        res.notes.append(f"pm2 kill failed ({err.__class__.__name__})")
    left = pm2_processes(tmp)
    if left:
        res.notes.append(f"{len(left)} PM2 process(es) left after pm2 kill (killed)")
        for p in left:
            with contextlib.suppress(run.psutil.Error):
                p.kill()
        run.psutil.wait_procs(left, timeout=5)


# -------------------------------------------------------------------------- clients


def client_argv(tool: str, tmp: Path) -> list[str]:
    """The status command, for the config run.config_for wrote into tmp."""
    if tool == "herdsman":
        return [str(run.herdsman_bin()), "-c", str(tmp / "herdsman.toml"), "status"]
    if tool == "supervisord":
        conf = tmp / "supervisord.conf"
        return [str(run.ENV / "bin" / "supervisorctl"), "-c", str(conf), "status"]
    if tool == "circus":
        endpoint = f"ipc://{tmp}/circus-ctl"
        return [str(run.ENV / "bin" / "circusctl"), "--endpoint", endpoint, "status"]
    if tool == "pm2":
        return [str(PM2), "jlist"]
    raise ValueError(tool)


def problem_with(tool: str, out: subprocess.CompletedProcess, n: int) -> str | None:
    """Why this answer is not a full report of n running instances; None when it is."""
    if out.returncode != 0:
        return f"exit status {out.returncode}"
    text = out.stdout
    if tool == "herdsman":
        rows = [line.split() for line in text.splitlines()[1:]]
        running = sum(1 for row in rows if len(row) > 1 and row[1] == "running")
        return None if running == n else f"{running} of {n} instances shown running"
    if tool == "supervisord":
        running = sum(1 for line in text.splitlines() if " RUNNING " in line)
        return None if running == n else f"{running} of {n} processes shown RUNNING"
    if tool == "circus":
        # One watcher with numprocesses = n: status prints one line for it.
        return None if "stamp: active" in text else "no 'stamp: active' line"
    if tool == "pm2":
        try:
            apps = json.loads(text)
        except ValueError:
            return "output is not JSON"
        online = sum(1 for a in apps if a.get("pm2_env", {}).get("status") == "online")
        return None if online == n else f"{online} of {n} apps online"
    raise ValueError(tool)


# ----------------------------------------------------------------------------- a run


def indented(text: str, lines: int = 10) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])


class Setup:
    """One tool's daemon with n stamps, and its status client."""

    def __init__(self, tool: str, n: int) -> None:
        self.tool = tool
        self.res = StatusResult(tool, n)
        self.tmp = Path(tempfile.mkdtemp(prefix="hb"))
        self.sock = f"{self.tmp}/s"
        self.log = self.tmp / "daemon.log"
        self.collector = run.Collector(self.sock)
        self.daemon: subprocess.Popen | None = None
        self.argv = client_argv(tool, self.tmp)
        self.env = pm2_env(self.tmp) if tool == "pm2" else None

    def start(self) -> None:
        """Launch the daemon (PM2: start it with the apps); errors go to res.error."""
        n = self.res.n
        if self.tool != "pm2":
            argv = run.config_for(self.tool, n, self.tmp, self.sock, CIRCUS_CHECK_DELAY)
            self.daemon = run.launch(argv, self.tmp, self.log)
            return
        if why := ensure_pm2():
            self.res.error = why
            return
        kill_stale_pm2()
        started = pm2_start(n, self.tmp, self.sock)
        if started.returncode != 0:
            self.res.error = f"pm2 start exited with {started.returncode}"
            self.res.notes.append(f"its output:\n{indented(started.stderr or started.stdout)}")

    def wait(self) -> None:
        """Until all n stamps have reported."""
        n = self.res.n
        if self.res.error or self.collector.wait_for_pids(n, 30 + 0.05 * n, self.daemon):
            return
        self.res.error = f"{len(self.collector.pids)}/{n} stamps reported"
        if self.daemon is not None:
            self.res.notes.append(f"daemon output:\n{run.log_tail(self.log)}")

    def status(self, counted: bool) -> None:
        """Run the client once; its wall time goes to res.ms when counted."""
        t0 = time.monotonic()
        out = subprocess.run(
            self.argv,
            cwd=self.tmp,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        )
        elapsed = time.monotonic() - t0
        if why := problem_with(self.tool, out, self.res.n):
            self.res.error = f"{COMMANDS[self.tool]}: {why}"
            self.res.notes.append(f"its output:\n{indented(out.stderr.strip() or out.stdout)}")
        elif counted:
            self.res.ms.append(elapsed * 1000)

    def stop(self) -> None:
        """Stop the daemon and every process of this setup; remove its files."""
        res = self.res
        if len(self.collector.pids) > res.n:
            res.notes.append(f"{len(self.collector.pids) - res.n} respawn(s) during the run")
        if self.daemon is not None:
            scratch = run.Result(self.tool, res.n)
            run.stop_daemon(self.daemon, scratch, self.sock, self.log)
            res.notes += scratch.notes
        else:
            if self.tool == "pm2":
                pm2_stop(self.tmp, res)
            run.kill_stamps(self.sock)
            run.reap_orphans()
        self.collector.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def measure_all(tools: list[str], n: int, runs: int) -> dict[str, StatusResult]:
    """All the daemons run at once; the clients take turns, one run each per round,
    the order rotating every round, so whatever else loads the machine meanwhile
    falls on every tool alike. The first round is not counted (cold caches)."""
    chosen = [t for t in TOOLS if t in tools]
    print(f"status: {', '.join(chosen)}, {n} instances each, {runs} runs ...", flush=True)
    setups: list[Setup] = []
    try:
        for tool in chosen:
            setups.append(Setup(tool, n))
            setups[-1].start()
        for setup in setups:
            setup.wait()
        time.sleep(SETTLE)
        for round_ in range(runs + 1):
            turn = round_ % len(setups)
            for setup in setups[turn:] + setups[:turn]:
                if not setup.res.error:
                    setup.status(counted=round_ > 0)
                    time.sleep(PAUSE)
    finally:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup must not be cut short
        try:
            for setup in setups:
                try:
                    setup.stop()
                except Exception as err:  # the others still have to be stopped
                    setup.res.notes.append(f"cleanup failed: {err!r}")
                    print(f"WARNING: {setup.tool}: cleanup failed: {err!r}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old)
    for setup in setups:
        print(f"  {setup.tool}: {setup.res.error or 'ok'}", flush=True)
    return {setup.tool: setup.res for setup in setups}


# --------------------------------------------------------------------------- report


def table(results: dict[str, StatusResult]) -> str:
    tools = [t for t in TOOLS if t in results]
    rows = [
        ("status median (ms)", statistics.median),
        ("status p95 (ms)", lambda ms: run.pct(ms, 0.95)),
        ("status fastest (ms)", min),
    ]
    header = ["metric"]
    for t in tools:
        header.append(t)
        if t != "herdsman":
            header.append(f"{t}/herdsman")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base_ms = results["herdsman"].ms if "herdsman" in results else []
    for label, stat in rows:
        base = stat(base_ms) if base_ms else None
        cells = [label]
        for t in tools:
            r = results[t]
            v = stat(r.ms) if r.ms else None
            cells.append("failed" if r.error else run.fmt(v, 1))
            if t != "herdsman":
                cells.append(f"{v / base:.2f}x" if v is not None and base else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


TARGET_MS = 60  # issue 3: `herdsman status` with 50 instances, median wall time


def section(results: dict[str, StatusResult], n: int, runs: int, head: list[str]) -> str:
    """The status part of results.md: head (date, load... lines), table, notes."""
    parts = [
        SECTION,
        "\n".join(head),
        f"Wall time of each client listing {n} running instances, from just before it is"
        f" started to its exit: median, p95 (nearest rank) and fastest of {runs} runs, after"
        " one unmeasured run; output to a pipe. The daemons run side by side and the"
        " clients take turns, in an order rotated every round. Ratios are peer / herdsman.",
        "\n".join(f"- {t}: `{COMMANDS[t]}`" for t in TOOLS if t in results),
        table(results),
    ]
    herdsman = results.get("herdsman")
    if herdsman is not None and herdsman.ms:
        met = "met" if statistics.median(herdsman.ms) <= TARGET_MS else "NOT met"
        parts.append(f"Target (issue 3): `herdsman status` median at most {TARGET_MS} ms: {met}.")
    notes = []
    for t in TOOLS:
        r = results.get(t)
        if r is not None:
            notes += [f"- {t}: {x}" for x in ([f"FAILED: {r.error}"] if r.error else []) + r.notes]
    if notes:
        parts += ["Notes:", "\n".join(notes)]
    return "\n\n".join(part for part in parts if part) + "\n"


def replace_section(text: str, new: str) -> str:
    """text with its status section (up to the next `## ` heading) replaced by new,
    or new appended."""
    start = text.find(SECTION)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + new
    end = text.find("\n## ", start + len(SECTION))
    rest = text[end + 1 :] if end >= 0 else ""
    return text[:start] + new + ("\n" + rest if rest else "")


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=50, help="instances per daemon")
    ap.add_argument("--runs", type=int, default=20, help="measured runs per client")
    ap.add_argument("--only", default=",".join(TOOLS), help="comma-separated tools")
    args = ap.parse_args()
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    bad = [t for t in args.only if t not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {', '.join(bad)}; choose from {', '.join(TOOLS)}")
    if args.runs < 1 or args.instances < 1:
        ap.error("--runs and --instances must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    run.prepare()
    versions = run.tool_versions()
    if "pm2" in args.only and ensure_pm2() is None:
        versions["pm2"] = pm2_version()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        results = measure_all(args.only, args.instances, args.runs)
    except KeyboardInterrupt:
        print("interrupted; every daemon and stamp of this run has been stopped", flush=True)
        return 130
    finally:
        run.warn_survivors()
    head = run.header_lines(versions, ["python3 bench/status.py", *sys.argv[1:]], load)
    text = section(results, args.instances, args.runs, head)
    print()
    print(text)
    old = run.RESULTS.read_text() if run.RESULTS.exists() else "# herdsman benchmark results\n"
    run.RESULTS.write_text(replace_section(old, text))
    print(f"written to {run.RESULTS.relative_to(run.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
