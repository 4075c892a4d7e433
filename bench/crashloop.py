#!/usr/bin/env python3
"""Status latency while N instances crash-loop, and what the loop costs the daemon.

    python3 bench/crashloop.py [--instances 300] [--runs 20] [--life 1.0]
                               [--only herdsman,supervisord]

Each tool runs N copies of `sh -c 'sleep LIFE; exit 1'`, restarted at once on every
exit (herdsman: no backoff, a start limit it never reaches; supervisord: startsecs 0,
autorestart), so about N / LIFE restarts a second. Once they loop, the status client
runs --runs times (wall clock, median and p95), and the daemon's CPU over that time
is reported per restart. Both daemons run one after the other, on the same machine,
in one run. Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run  # the harness next to this file: venv, daemon launch and stop

SETTLE = 3.0  # seconds of crash loop before the first status
CLIENT_TIMEOUT = 30.0


def config(tool: str, n: int, life: float, tmp: Path) -> tuple[list[str], list[str]]:
    """Write tool's config into tmp; (the daemon's argv, the status client's argv)."""
    script = f"sleep {life}; exit 1"
    if tool == "herdsman":
        conf = tmp / "herdsman.toml"
        conf.write_text(
            "[services.crash]\n"
            f'command = ["sh", "-c", "{script}"]\n'
            f"replicas = {n}\n"
            'restart = "always"\n'
            "backoff = { initial = 0 }\n"
            "start_seconds = 0\n"
            'start_limit = { burst = 100000000, interval = "1s" }\n'
        )
        herdsman = str(run.herdsman_bin())
        return [herdsman, "-c", str(conf), "up"], [herdsman, "-c", str(conf), "status"]
    if tool == "supervisord":
        daemon = run.supervisord_config(tmp, n, "crash", f'sh -c "{script}"')
        ctl = str(run.ENV / "bin" / "supervisorctl")
        return daemon, [ctl, "-c", str(tmp / "supervisord.conf"), "status"]
    raise ValueError(tool)


def rows_of(tool: str, text: str) -> int:
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) - 1 if tool == "herdsman" else len(lines)


def measure(tool: str, n: int, life: float, runs: int) -> dict[str, float | str]:
    tmp = Path(tempfile.mkdtemp(prefix="hc"))
    daemon_argv, client = config(tool, n, life, tmp)
    daemon = run.launch(daemon_argv, tmp, tmp / "daemon.log")
    try:
        time.sleep(SETTLE)
        if daemon.poll() is not None:
            return {"error": f"daemon exited: {run.log_tail(tmp / 'daemon.log')}"}
        proc = run.psutil.Process(daemon.pid)
        before = proc.cpu_times()
        began = time.monotonic()
        ms = []
        for _ in range(runs):
            t0 = time.monotonic()
            try:
                out = subprocess.run(
                    client, cwd=tmp, capture_output=True, text=True, timeout=CLIENT_TIMEOUT
                )
            except subprocess.TimeoutExpired:
                return {"error": f"status did not answer within {CLIENT_TIMEOUT:.0f} s"}
            ms.append((time.monotonic() - t0) * 1000)
            if rows_of(tool, out.stdout) != n:
                return {"error": f"status showed {rows_of(tool, out.stdout)} of {n}: {out.stderr}"}
            time.sleep(0.1)
        after = proc.cpu_times()
        spent = time.monotonic() - began
        cpu = (after.user + after.system) - (before.user + before.system)
        restarts = n / life * spent
        return {
            "median": statistics.median(ms),
            "p95": sorted(ms)[max(0, round(0.95 * len(ms)) - 1)],
            "cpu": cpu / spent * 100,
            "per_restart": cpu / restarts * 1e6,
        }
    finally:
        scratch = run.Result(tool, n)
        run.stop_daemon(daemon, scratch, "", tmp / "daemon.log")
        run.reap_orphans()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--life", type=float, default=1.0)
    parser.add_argument("--only", default="herdsman,supervisord")
    args = parser.parse_args()
    run.ensure_env()
    run.install_herdsman()
    run.raise_limits()
    run.become_subreaper()
    results = {
        tool: measure(tool, args.instances, args.life, args.runs) for tool in args.only.split(",")
    }
    print(
        f"\n{args.instances} instances exiting every {args.life:g} s, restarted at once "
        f"(~{args.instances / args.life:.0f} restarts/s), `status` x {args.runs}:\n"
    )
    print("| tool | status median (ms) | status p95 (ms) | daemon CPU (%) | CPU per restart (µs) |")
    print("|---|---|---|---|---|")
    for tool, r in results.items():
        if "error" in r:
            print(f"| {tool} | {r['error']} | | | |")
            continue
        print(
            f"| {tool} | {r['median']:.0f} | {r['p95']:.0f} | {r['cpu']:.0f} | "
            f"{r['per_restart']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
