"""The client commands against a fake daemon serving canned answers: what they ask
for, what they print, and their exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from herdsman.cli import table
from tests.cli.conftest import Project
from tests.cli.fake import FakeDaemon, Feed, Reply, Request, Stream, error, instance, log_line
from tests.cli.fake import status as status_doc
from tests.conftest import wait_for

WEB0 = instance("web.0", pid=4242, uptime=192.0)
WEB1 = instance("web.1", "failed", message="cannot start: command 'x' not found in PATH")
DB = instance("db", "stopped", message="killed with SIGKILL after stop_timeout (10s)")


def test_status_table(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))
    result = cli("status")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "INSTANCE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "READY",
        "CPU",
        "MEM",
        "MESSAGE",
    ]
    assert lines[1].split()[:8] == [
        "web.0",
        "running",
        "4242",
        "3m12s",
        "0",
        "yes",
        "0.3%",
        "12.4M",
    ]
    assert "cannot start: command 'x' not found in PATH" in lines[2]
    assert lines[3].startswith("db ")
    # Columns line up: every row has its state where the header has STATE.
    at = lines[0].index("STATE")
    assert [line[at:].split()[0] for line in lines[1:]] == ["running", "failed", "stopped"]
    assert "\x1b[" not in result.out  # not a terminal: no colour
    assert [(r.path, r.query) for r in fake.requests] == [
        ("/v1/status", {"columns": [",".join(table.COLUMNS)]})
    ]


def test_status_from_a_daemon_that_answers_documents(cli, fake: FakeDaemon) -> None:
    # A daemon older than ?columns= answers the whole document: the same table.
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))
    columns = cli("status")
    fake.answer("GET", "/v1/status", lambda request: Reply(200, status_doc(WEB0, WEB1, DB)))
    documents = cli("status")
    assert (documents.code, documents.out, documents.err) == (
        columns.code,
        columns.out,
        columns.err,
    )
    assert documents.out.count("\n") == 4
    fake.answer("GET", "/v1/logs", Stream([]))
    detail = cli("status", "web.1")
    assert detail.out.startswith("web.1 (web)\n"), detail.err


def test_status_json_filtered(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))
    result = cli("status", "--json", "web")
    assert result.code == 0
    document = json.loads(result.out)
    assert [i["name"] for i in document["services"]] == ["web.0", "web.1"]
    assert document["daemon"]["version"] == "0.1.0"
    assert json.loads(cli("status", "--json", "d?").out)["services"] == [DB]


def test_status_pattern_without_match(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, DB)))
    result = cli("status", "db", "nope")
    assert result.code == 1
    assert result.err == "herdsman: no instance or service matches 'nope'\n"
    assert "db" in result.out
    assert "web.0" not in result.out


def test_status_of_one_instance_is_a_detail_view(cli, fake: FakeDaemon) -> None:
    web = instance(
        "web.0",
        "starting",
        pid=4242,
        ready=False,
        health="unknown",
        restarts=3,
        exit_code=1,
        since="2026-11-23T10:00:00.000000Z",
        command=["python3", "-m", "http.server", "8000"],
        checks={"ready": "cannot connect to 127.0.0.1:8000: Connection refused"},
        message="ready: cannot connect to 127.0.0.1:8000: Connection refused",
    )
    fake.answer("GET", "/v1/status", Reply(200, status_doc(web, WEB1, DB)))
    lines = [log_line("web.0", f"line {i}", i) for i in range(10)]
    fake.answer("GET", "/v1/logs", Stream(lines))
    result = cli("status", "web.0")
    assert result.code == 0, result.err
    out = result.out.splitlines()
    assert out[0] == "web.0 (web)"
    assert out[1].startswith("      State: starting since 2026-11-23 10:00:00 UTC (")
    assert out[2:9] == [
        "        PID: 4242 (1 process, 12.4M memory, 0.3% CPU) up 12s",
        "   Restarts: 3",
        "  Last exit: exited with code 1",
        "      Ready: no (last check: cannot connect to 127.0.0.1:8000: Connection refused)",
        "     Health: unknown",
        "    Command: python3 -m http.server 8000",
        "    Message: ready: cannot connect to 127.0.0.1:8000: Connection refused",
    ]
    assert out[10] == "Last 10 lines:"
    assert out[11] == "  2026-11-23T10:00:00Z out line 0"
    assert len(out) == 21
    logs = [r for r in fake.requests if r.path == "/v1/logs"]
    assert logs[0].query == {"instance": ["web.0"], "n": ["10"]}


def test_status_while_shutting_down(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, shutting_down=True)))
    result = cli("status")
    assert result.code == 0
    assert "shutting down" in result.err


def test_start_prints_each_instance(cli, fake: FakeDaemon) -> None:
    fake.answer(
        "POST", "/v1/instances/web.0/start", Reply(200, {"instances": [WEB0], "failed": []})
    )
    result = cli("start", "web.0")
    assert (result.code, result.out, result.err) == (0, "web.0: running (pid 4242)\n", "")
    assert fake.requests[0].body == {"wait": True, "timeout": 60.0}
    assert cli("start", "--timeout", "2m", "web.0").code == 0
    assert fake.requests[1].body == {"wait": True, "timeout": 120.0}


def test_start_failed_instances_exit_1(cli, fake: FakeDaemon) -> None:
    fake.answer(
        "POST",
        "/v1/instances/web/start",
        Reply(200, {"instances": [WEB0, WEB1], "failed": ["web.1"]}),
    )
    result = cli("start", "web")
    assert result.code == 1
    # The failed one is said once, with its reason, on stderr.
    assert result.out.splitlines() == ["web.0: running (pid 4242)"]
    assert result.err == "herdsman: web.1: cannot start: command 'x' not found in PATH\n"


def test_stop_that_killed_exits_0(cli, fake: FakeDaemon) -> None:
    fake.answer("POST", "/v1/instances/db/stop", Reply(200, {"instances": [DB], "failed": []}))
    result = cli("stop", "db")
    assert result.code == 0
    assert result.out == "db: stopped (killed with SIGKILL after stop_timeout (10s))\n"


def test_no_wait_and_pattern_encoding(cli, fake: FakeDaemon) -> None:
    starting = instance("web.0", "starting", pid=7)
    fake.answer(
        "POST", "/v1/instances/web.*/restart", Reply(200, {"instances": [starting], "failed": []})
    )
    result = cli("restart", "--no-wait", "web.*")
    assert result.code == 0
    assert result.out == "web.0: starting (pid 7)\n"
    request = fake.requests[0]
    assert request.body == {"wait": False}
    assert request.raw_path == "/v1/instances/web.%2A/restart"


def test_unknown_pattern_404_exit_1_others_still_done(cli, fake: FakeDaemon) -> None:
    fake.answer(
        "POST", "/v1/instances/nope/stop", error(404, "no instance or service matches 'nope'")
    )
    fake.answer("POST", "/v1/instances/db/stop", Reply(200, {"instances": [DB], "failed": []}))
    result = cli("stop", "nope", "db")
    assert result.code == 1
    assert result.err == "herdsman: no instance or service matches 'nope'\n"
    assert result.out.startswith("db: stopped")


def test_shutting_down_409_exit_1(cli, fake: FakeDaemon) -> None:
    fake.answer("POST", "/v1/instances/web/start", error(409, "herdsman is shutting down"))
    result = cli("start", "web", "db")
    assert (result.code, result.err) == (1, "herdsman: herdsman is shutting down\n")
    assert len(fake.requests) == 1  # no point asking again


def test_server_400_exit_2(cli, fake: FakeDaemon) -> None:
    fake.answer("POST", "/v1/instances/web/signal", error(400, "unknown signal 'SIGFOO'"))
    result = cli("signal", "HUP", "web")
    assert (result.code, result.err) == (2, "herdsman: unknown signal 'SIGFOO'\n")


def test_signal_by_name_and_number(cli, fake: FakeDaemon) -> None:
    answer = {"instances": [WEB0, WEB1], "failed": []}
    fake.answer("POST", "/v1/instances/web/signal", Reply(200, answer))
    result = cli("signal", "hup", "web")
    assert result.code == 0
    assert result.out == "sent SIGHUP to web.0\nweb.1: not signalled, it is failed\n"
    assert cli("signal", "SIGUSR1", "web").code == 0
    result = cli("signal", "10", "web")
    assert result.code == 0
    assert result.out.startswith("sent SIGUSR1 to web.0\n")  # a number is named too
    assert [r.body for r in fake.requests] == [{"signal": 1}, {"signal": 10}, {"signal": 10}]


def test_unknown_signal_exit_2_before_asking(cli, fake: FakeDaemon) -> None:
    for sig in ("FOO", "0", "999"):
        result = cli("signal", sig, "web")
        assert result.code == 2
        assert result.err.startswith("herdsman: ")
        assert result.err.count("\n") == 1
    assert fake.requests == []


def test_error_answer_that_is_not_json(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(500, "oops"))
    result = cli("status")
    assert result.code == 1
    assert result.err.startswith("herdsman: ")
    assert "Traceback" not in result.err


LINES = [
    log_line("web.0", "listening", 1),
    log_line("db", "ready to accept connections", 2, "err"),
    log_line("web.0", "GET /", 3),
]


def test_logs_recent_lines(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))
    fake.answer("GET", "/v1/logs", Stream(LINES))
    result = cli("logs", "-n", "5")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "web.0 │ listening",
        "db    │ ready to accept connections",
        "web.0 │ GET /",
    ]
    assert fake.requests[-1].query == {"n": ["5"]}


def test_logs_json_and_pattern(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))
    fake.answer("GET", "/v1/logs", Stream([LINES[0], LINES[2]]))
    result = cli("logs", "--json", "web.0")
    assert [json.loads(line) for line in result.out.splitlines()] == [LINES[0], LINES[2]]
    assert fake.requests[-1].query == {"n": ["100"], "instance": ["web.0"]}


def test_logs_several_patterns_merge_without_duplicates(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0, WEB1, DB)))

    def by_pattern(request: Request) -> Stream:
        pattern = request.query["instance"][0]
        names = {"web": {"web.0", "web.1"}, "web.0": {"web.0"}, "db": {"db"}}[pattern]
        return Stream([e for e in LINES if e["instance"] in names])

    fake.answer("GET", "/v1/logs", by_pattern)
    result = cli("logs", "-n", "2", "web", "db", "web.0")
    assert result.code == 0
    assert result.out.splitlines() == ["db    │ ready to accept connections", "web.0 │ GET /"]


def test_logs_unknown_pattern(cli, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0)))
    result = cli("logs", "nope")
    assert (result.code, result.err) == (1, "herdsman: no instance or service matches 'nope'\n")


def stopping_once_followed(fake: FakeDaemon, *instances: dict[str, Any]) -> None:
    """/v1/status as `logs -f` asks before it follows, then as a daemon that ends its
    streams because it stops (it would follow again a daemon still serving: one that
    re-executed, or dropped it for falling behind)."""
    asked: list[Request] = []

    def status(request: Request) -> Reply:
        asked.append(request)
        return Reply(200, status_doc(*instances, shutting_down=len(asked) > 1))

    fake.answer("GET", "/v1/status", status)


def test_logs_follow_streams_until_the_daemon_goes(cli, fake: FakeDaemon) -> None:
    stopping_once_followed(fake, WEB0, DB)
    feed = Feed()
    fake.answer("GET", "/v1/logs", Stream(feed))
    feed.put(LINES[0])
    feed.put(LINES[1])
    feed.end()
    result = cli("logs", "-f", "-n", "10")
    assert result.code == 0
    assert result.out.splitlines() == ["web.0 │ listening", "db    │ ready to accept connections"]
    [logs] = [r for r in fake.requests if r.path == "/v1/logs"]
    assert logs.query == {"n": ["10"], "follow": ["1"]}
    assert fake.requests[-1].path == "/v1/status"  # gone, stopping, or still serving?
    assert "stopped" in result.err


def test_logs_follow_several_patterns(cli, fake: FakeDaemon) -> None:
    stopping_once_followed(fake, WEB0, WEB1, DB)
    feed = Feed()
    recent = [LINES[0], LINES[1]]

    def logs(request: Request) -> Stream:
        if "follow" in request.query:
            return Stream(feed)
        pattern = request.query["instance"][0]
        return Stream([e for e in recent if e["instance"].startswith(pattern)])

    fake.answer("GET", "/v1/logs", logs)
    feed.put(LINES[1])  # already in the recent lines: shown once
    feed.put(log_line("web.1", "hello", 4))
    feed.put(log_line("other", "not asked for", 5))
    feed.end()
    result = cli("logs", "-f", "web", "db")
    assert result.out.splitlines() == [
        "web.0 │ listening",
        "db    │ ready to accept connections",
        "web.1 │ hello",
    ]
    follow = [r for r in fake.requests if "follow" in r.query]
    assert follow[0].query == {"n": ["0"], "follow": ["1"]}


def run_herdsman(project: Project, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "herdsman", "-c", str(project.config), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_logs_follow_ctrl_c_exits_0(project: Project, fake: FakeDaemon) -> None:
    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0)))
    feed = Feed()
    fake.answer("GET", "/v1/logs", Stream(feed))
    proc = run_herdsman(project, "logs", "-f")
    try:
        feed.put(LINES[0])
        assert proc.stdout is not None
        assert proc.stdout.readline() == "web.0 │ listening\n"  # printed while following
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        feed.end()
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert err == ""


def test_ctrl_c_while_waiting_exits_130_quietly(project: Project, fake: FakeDaemon) -> None:
    release = threading.Event()

    def slow(request: Request) -> Reply:
        release.wait(10)
        return Reply(200, {"instances": [WEB0], "failed": []})

    fake.answer("POST", "/v1/instances/web/start", slow)
    proc = run_herdsman(project, "start", "web")
    try:
        wait_for(lambda: fake.requests)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        release.set()
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert err == ""


def test_down_waits_until_the_daemon_is_gone(cli, project: Project) -> None:
    # A fake daemon in a process of its own, which lingers after answering, as the
    # real one does while it stops the services.
    daemon = subprocess.Popen(
        [sys.executable, "-m", "tests.cli.fake", str(project.socket), "0.3"],
        cwd=Path(__file__).parents[2],
    )
    try:
        wait_for(project.socket.exists, timeout=30)
        started = time.monotonic()
        result = cli("down")
        assert (result.code, result.out, result.err) == (0, "herdsman: stopped\n", "")
        assert time.monotonic() - started >= 0.25
        assert daemon.poll() is not None  # returned once the daemon had exited
    finally:
        daemon.kill()
        daemon.wait()


def test_down_gives_up_at_its_deadline(
    cli, fake: FakeDaemon, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake serves from this very process, which will not exit: down must give up.
    project.config.write_text('[settings]\nshutdown_timeout = "0s"\n')
    fake.answer("POST", "/v1/shutdown", Reply(202, {"shutting_down": True}))
    monkeypatch.setattr("herdsman.cli.commands.DOWN_GRACE", 0.3)
    result = cli("down")
    assert result.code == 1
    assert result.err == f"herdsman: the daemon (pid {os.getpid()}) did not stop within 0.3s\n"


def test_a_get_cut_off_before_its_answer_is_asked_again(cli, fake: FakeDaemon) -> None:
    """What a client sees when it connects just as the daemon hands over to a new image."""
    calls: list[int] = []

    def cut_off_once(request: Request) -> Reply:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("handing over")  # the fake closes the connection, no answer
        return Reply(200, status_doc(WEB0))

    fake.answer("GET", "/v1/status", cut_off_once)
    result = cli("status")
    assert result.code == 0, result.err
    assert len(calls) == 2
    assert "web.0" in result.out


def test_a_post_cut_off_before_its_answer_is_not_sent_again(cli, fake: FakeDaemon) -> None:
    calls: list[int] = []

    def cut_off(request: Request) -> Reply:
        calls.append(1)
        raise OSError("handing over")

    fake.answer("GET", "/v1/status", Reply(200, status_doc(WEB0)))
    fake.answer("POST", "/v1/instances/web.0/stop", cut_off)
    result = cli("stop", "web.0")
    assert result.code == 1
    assert "the daemon closed the connection before answering" in result.err
    assert len(calls) == 1
