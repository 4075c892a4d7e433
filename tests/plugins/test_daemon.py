"""Plugins and hooks in a real daemon (`herdsman up -d`), with the test package
installed by pip and found through the daemon's PYTHONPATH."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.conftest import wait_for
from tests.plugins.conftest import Daemon, WebhookServer, write_config


def json_lines(path: Path) -> list[dict[str, object]]:
    """The complete lines written so far (a line being written is left for later)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]]


def test_entry_point_probe_and_hook_plugins(daemon: Daemon) -> None:
    tmp = daemon.dir
    flag, events, probed = tmp / "flag", tmp / "events.jsonl", tmp / "probed"
    write_config(
        tmp,
        f"""
        [settings]
        shutdown_timeout = "5s"

        [[hooks]]
        on = ["running", "exited"]
        plugin = "record"
        options = {{ path = "{events}" }}

        [services.web]
        command = ["sleep", "600"]
        start_seconds = 0
        ready = {{ plugin = "file-exists", options = {{ path = "{flag}" }}, interval = "50ms" }}
        health = {{ plugin = "file-probe", options = {{ path = "{probed}" }}, interval = "100ms" }}

        [services.task]
        command = ["sh", "-c", "exit 3"]
        restart = "never"
        depends_on = {{ web = "ready" }}
        """,
    )
    assert daemon.cli("check").returncode == 0
    up = daemon.up()
    assert up.returncode == 0, up.stderr
    wait_for(lambda: daemon.status()["web"]["pid"])
    web = daemon.status()["web"]
    assert (web["state"], web["ready"]) == ("starting", False)  # the probe has not passed yet
    assert daemon.status()["task"]["pid"] is None  # and so nothing that waits for it started
    flag.touch()
    wait_for(lambda: daemon.status()["web"]["ready"], 10)
    wait_for(lambda: daemon.status()["task"]["state"] == "exited", 10)
    wait_for(lambda: daemon.status()["web"]["health"] == "healthy", 10)

    # The class form of a probe is made once per process and called every interval.
    wait_for(lambda: probed.exists() and len(probed.read_text().splitlines()) >= 3)
    lines = probed.read_text().splitlines()
    assert lines[0] == f"health web {web['pid']} 1"
    assert lines[2] == f"health web {web['pid']} 3"

    wait_for(lambda: len(json_lines(events)) >= 2, 10)
    by_instance = {e["instance"]: e for e in json_lines(events)}
    running = by_instance["web"]
    assert running["state"] == "running"
    assert running["previous"] == "starting"
    assert running["pid"] == web["pid"]
    assert running["service"] == "web"
    assert running["ready"] is True
    exited = by_instance["task"]
    assert (exited["state"], exited["exit_code"], exited["exit_signal"]) == ("exited", 3, None)
    assert isinstance(exited["pid"], int)  # the process that just ended
    assert exited["message"] == "exited with code 3"
    assert exited["time"].endswith("Z")


def test_settings_plugin_and_builtin_exec_and_webhook_hooks(
    daemon: Daemon, webhook: WebhookServer
) -> None:
    tmp = daemon.dir
    notes = tmp / "notes.txt"
    write_config(
        tmp,
        f"""
        [settings]
        shutdown_timeout = "5s"
        plugins = ["hmplug.extra:note"]

        [[hooks]]
        on = "failed"
        webhook = "{webhook.url}/herdsman/events"

        [services.missing]
        command = "/nonexistent/program --flag"

        [[services.missing.hooks]]
        on = ["failed"]
        shell = true
        exec = 'printf %s "$HERDSMAN_EVENT" > event.json; echo "$HERDSMAN_EVENT_INSTANCE $HERDSMAN_EVENT_PREVIOUS $HERDSMAN_EVENT_STATE" > failed.txt'

        [[services.missing.hooks]]
        on = ["failed"]
        plugin = "note"
        options = {{ path = "{notes}" }}

        [services.crashy]
        command = ["sh", "-c", "exit 7"]
        start_seconds = "10s"
        backoff = {{ initial = 0 }}
        start_limit = {{ burst = 2, interval = "60s" }}

        [services.steady]
        command = ["sleep", "600"]
        start_seconds = 0
        """,
    )
    up = daemon.up()
    assert up.returncode == 0, up.stderr

    # The exec hook ran in the config's directory with the event in its environment.
    failed = tmp / "failed.txt"
    wait_for(lambda: failed.exists() and failed.read_text(), 10)
    assert failed.read_text() == "missing starting failed\n"
    event = json.loads((tmp / "event.json").read_text())
    assert event["instance"] == "missing"
    assert event["state"] == "failed"
    assert "cannot start" in event["message"]

    wait_for(lambda: notes.exists() and notes.read_text(), 10)
    assert notes.read_text() == "missing starting -> failed\n"

    # The webhook is global: both failures were POSTed, as JSON, to the path given.
    wait_for(lambda: len(webhook.bodies) >= 2, 15)
    posted = {body["instance"]: body for body in webhook.bodies}
    assert set(posted) == {"missing", "crashy"}
    assert posted["crashy"]["state"] == "failed"
    assert posted["crashy"]["exit_code"] == 7
    assert posted["missing"]["_path"] == "/herdsman/events"
    assert posted["missing"]["_content_type"] == "application/json"
    assert daemon.status()["steady"]["state"] == "running"
    # `failed` only: no other state change was posted.
    assert all(body["state"] == "failed" for body in webhook.bodies)
    assert len(webhook.bodies) == 2


def test_failing_plugins_are_disabled_and_the_daemon_keeps_supervising(daemon: Daemon) -> None:
    tmp = daemon.dir
    events = tmp / "events.jsonl"
    every = '["starting", "running", "stopping", "stopped", "restarting", "exited", "failed"]'
    write_config(
        tmp,
        f"""
        [settings]
        shutdown_timeout = "5s"

        [[hooks]]
        on = {every}
        plugin = "explode"

        [[hooks]]
        on = {every}
        plugin = "block"
        timeout = "100ms"

        [[hooks]]
        on = ["running"]
        plugin = "record-async"
        options = {{ path = "{events}" }}

        [services.bad-ready]
        command = ["sleep", "600"]
        ready = {{ plugin = "explode", interval = "50ms" }}

        [services.slow-health]
        command = ["sleep", "600"]
        start_seconds = 0
        health = {{ plugin = "hang", interval = "50ms", timeout = "100ms", failure_threshold = 10 }}

        [services.flappy]
        command = ["sh", "-c", "sleep 0.2; exit 1"]
        start_seconds = 0
        backoff = {{ initial = "50ms", max = "50ms" }}
        start_limit = {{ burst = 1000 }}

        [services.steady]
        command = ["sleep", "600"]
        start_seconds = 0
        """,
    )
    up = daemon.up()
    assert up.returncode == 0, up.stderr
    wait_for(lambda: daemon.status()["steady"]["state"] == "running")
    steady_pid = daemon.status()["steady"]["pid"]

    def message(name: str) -> str:
        return str(daemon.status()[name]["message"])

    wait_for(lambda: "disabled" in message("bad-ready"), 10)
    assert message("bad-ready") == (
        "readiness probe stopped: probe plugin 'explode' is disabled:"
        " it raised RuntimeError: probe plugin blew up on purpose"
    )
    assert daemon.status()["bad-ready"]["state"] == "starting"

    wait_for(lambda: "disabled" in message("slow-health"), 10)
    assert message("slow-health") == (
        "health check stopped: probe plugin 'hang' is disabled: timed out 3 times in a row (0.1s)"
    )
    slow = daemon.status()["slow-health"]
    assert (slow["state"], slow["restarts"]) == ("running", 0)

    # flappy keeps changing state; the broken hooks are out of the way, the good one works.
    wait_for(lambda: daemon.status()["flappy"]["restarts"] >= 5, 15)
    wait_for(lambda: "hook plugin 'block' disabled" in daemon.log(), 10)
    wait_for(lambda: sum(e["instance"] == "flappy" for e in json_lines(events)) >= 5, 10)
    log = daemon.log()
    assert log.count("hook plugin 'explode' disabled: it raised ValueError") == 1
    assert log.count("probe plugin 'explode' disabled: it raised RuntimeError") == 1
    assert "Traceback (most recent call last)" in log
    assert 'hmplug/hooks.py", line' in log  # the plugin's own frame is in the traceback
    assert log.count("hook plugin 'block' disabled: timed out 3 times in a row") == 1
    assert log.count("probe plugin 'hang' disabled") == 1

    status = daemon.status()
    assert (status["steady"]["state"], status["steady"]["pid"]) == ("running", steady_pid)
    assert status["steady"]["restarts"] == 0
    # Blocked worker threads do not keep the daemon from stopping at once.
    began = time.monotonic()
    down = daemon.cli("down")
    assert down.returncode == 0, down.stderr
    assert time.monotonic() - began < 10


def test_hooks_and_plugins_carry_on_after_a_reexec(daemon: Daemon) -> None:
    tmp = daemon.dir
    events = tmp / "events.jsonl"
    write_config(
        tmp,
        f"""
        [settings]
        shutdown_timeout = "5s"

        [[hooks]]
        on = ["running", "restarting"]
        plugin = "record"
        options = {{ path = "{events}" }}

        [services.web]
        command = ["sleep", "600"]
        start_seconds = 0
        backoff = {{ initial = "100ms" }}
        ready = {{ plugin = "file-exists", options = {{ path = "/" }}, interval = "50ms" }}
        """,
    )
    up = daemon.up("--wait")
    assert up.returncode == 0, up.stderr
    wait_for(lambda: len(json_lines(events)) == 1)
    first = daemon.status()["web"]["pid"]

    reexec = daemon.cli("reexec")
    assert reexec.returncode == 0, reexec.stderr
    assert daemon.status()["web"]["pid"] == first
    # The new image takes the instances over as they were: no change, so no event.
    time.sleep(0.3)
    assert [e["state"] for e in json_lines(events)] == ["running"]

    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(json_lines(events)) == 3, 10)
    restarting, running = json_lines(events)[1:]
    assert (restarting["state"], restarting["pid"], restarting["exit_signal"]) == (
        "restarting",
        first,
        "SIGKILL",
    )
    assert running["state"] == "running"
    assert running["pid"] == daemon.status()["web"]["pid"] != first
    assert daemon.status()["web"]["ready"] is True  # the probe plugin ran in the new image
