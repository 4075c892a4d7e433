"""Client commands when no daemon runs: exit 3 with one sentence, `down` exits 0,
and `logs` reads the log files instead (merged, last N, rotated backups)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Project


def no_daemon(project: Project) -> str:
    return (
        f"herdsman: no daemon is running for {project.config} (start one with 'herdsman up -d')\n"
    )


@pytest.mark.parametrize(
    "argv",
    [("status",), ("status", "--json", "web"), ("start", "web"), ("stop", "db"),
     ("restart", "--no-wait", "*"), ("signal", "HUP", "web")],
)  # fmt: skip
def test_exit_3_without_a_daemon(cli, project: Project, argv: tuple[str, ...]) -> None:
    result = cli(*argv)
    assert (result.code, result.out, result.err) == (3, "", no_daemon(project))


def test_exit_3_when_the_socket_refuses(cli, project: Project) -> None:
    # A socket file left behind by a daemon that died: connecting is refused.
    project.socket.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(project.socket))
    result = cli("status")
    assert (result.code, result.err) == (3, no_daemon(project))


def test_socket_path_from_settings(cli, project: Project) -> None:
    project.config.write_text('[settings]\nsocket = "${HM_RUN:-run}/ctl.sock"\n')
    result = cli("status")
    assert result.code == 3  # looked there, found nothing, and said so
    (project.dir / "run").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(project.dir / "run" / "ctl.sock"))
        assert cli("status").code == 3  # bound but not listening: refused


def test_down_without_a_daemon_exits_0(cli, project: Project) -> None:
    result = cli("down")
    assert (result.code, result.out, result.err) == (
        0,
        f"herdsman: no daemon was running for {project.config}\n",
        "",
    )


def test_missing_config_exit_2(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from herdsman.cli.main import main

    code = main(["-c", str(tmp / "nope.toml"), "status"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("herdsman: ")
    assert "does not exist" in err
    assert "Traceback" not in err


def test_through_the_real_command(project: Project) -> None:
    """As a user runs it, in a directory with a herdsman.toml: one line, exit 3."""
    proc = subprocess.run(
        [sys.executable, "-m", "herdsman", "status"],
        cwd=project.dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "", no_daemon(project))


def test_status_does_not_load_the_server_stack(project: Project) -> None:
    code = (
        "import sys\n"
        "from herdsman.cli.main import main\n"
        f"assert main(['-c', {str(project.config)!r}, 'status']) == 3\n"
        "heavy = {'asyncio', 'pydantic', 'psutil', 'h11', 'herdsman.api', 'herdsman.runtime',"
        " 'yaml', 'prometheus_client'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.stdout == "[]\n", proc.stderr


# --- logs from the files --------------------------------------------------------


def write_log(path: Path, *lines: tuple[str, str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for time_, stream, text in lines:
            f.write(f"2026-11-23T10:00:{time_}Z {stream} {text}\n")


def test_logs_reads_the_files_merged_in_time_order(cli, project: Project) -> None:
    logs = project.log_dir
    write_log(logs / "web.0.log", ("01.000001", "out", "web zero up"), ("03.5", "out", "GET /"))
    write_log(logs / "db.log", ("02.000000", "err", "db  ready "), ("04.000000", "out", ""))
    write_log(logs / "herdsman.log", ("00.000000", "out", "not an instance"))
    result = cli("logs")
    assert result.code == 0
    assert result.out.splitlines() == [
        "web.0 │ web zero up",
        "db    │ db  ready ",  # the text exactly as written
        "web.0 │ GET /",
        "db    │ ",
    ]
    assert result.err == (
        f"herdsman: no daemon is running for {project.config}; showing its log files in {logs}\n"
    )


def test_logs_files_last_n_pattern_and_json(cli, project: Project) -> None:
    logs = project.log_dir
    write_log(logs / "web.0.log", *[(f"{i:02d}.000000", "out", f"w0 {i}") for i in range(0, 20, 2)])
    write_log(logs / "web.1.log", *[(f"{i:02d}.000000", "out", f"w1 {i}") for i in range(1, 20, 2)])
    write_log(logs / "db.log", ("30.000000", "out", "db"))
    result = cli("logs", "-n", "3", "web")
    assert result.out.splitlines() == ["web.1 │ w1 17", "web.0 │ w0 18", "web.1 │ w1 19"]
    result = cli("logs", "-n", "1", "--json", "web.0")
    assert [json.loads(line) for line in result.out.splitlines()] == [
        {
            "time": "2026-11-23T10:00:18.000000Z",
            "instance": "web.0",
            "stream": "out",
            "line": "w0 18",
        }
    ]
    assert cli("logs", "-n", "0").out == ""


def test_logs_files_reach_into_rotated_backups(cli, project: Project) -> None:
    logs = project.log_dir
    write_log(logs / "db.log.2", ("01.000000", "out", "oldest"))
    write_log(logs / "db.log.1", ("02.000000", "out", "older"), ("03.000000", "out", "old"))
    write_log(logs / "db.log", ("04.000000", "out", "new"))
    result = cli("logs", "-n", "3", "db")
    assert result.out.splitlines() == ["db │ older", "db │ old", "db │ new"]
    assert len(cli("logs", "db").out.splitlines()) == 4


def test_logs_files_large_file_tail(cli, project: Project) -> None:
    # Longer than a read block, with lines that straddle block edges.
    lines = [(f"{i % 60:02d}.{i:06d}", "out", "x" * (i % 300)) for i in range(3000)]
    write_log(project.log_dir / "db.log", *lines)
    out = cli("logs", "-n", "1500", "--json", "db").out.splitlines()
    assert [json.loads(line)["line"] for line in out] == [x[2] for x in lines[-1500:]]


def test_logs_files_from_settings(cli, project: Project) -> None:
    project.config.write_text(
        '[settings]\nstate_dir = "${HM_STATE:-st}"\n[services.db]\ncommand = "x"\n'
    )
    write_log(project.dir / "st" / "logs" / "db.log", ("01.000000", "out", "from state_dir"))
    assert cli("logs").out == "db │ from state_dir\n"
    project.config.write_text('[settings]\nstate_dir = "st"\nlog_dir = "/nonexistent/x"\n')
    assert cli("logs").out == ""
    project.config.write_text(f'[settings]\nlog_dir = "{project.dir / "st" / "logs"}"\n')
    assert cli("logs").out == "db │ from state_dir\n"


def test_logs_without_files_is_a_note(cli, project: Project) -> None:
    result = cli("logs")
    assert (result.code, result.out) == (0, "")
    assert result.err == (
        f"herdsman: no daemon is running for {project.config}, "
        f"and no log lines in {project.log_dir}\n"
    )


def test_logs_files_unknown_pattern(cli, project: Project) -> None:
    write_log(project.log_dir / "db.log", ("01.000000", "out", "x"))
    result = cli("logs", "nope")
    assert (result.code, result.err) == (1, "herdsman: no instance or service matches 'nope'\n")
    # An instance of the config that never wrote a line is no error.
    assert cli("logs", "web.1").code == 0


def test_logs_follow_without_daemon_does_not_hang(cli, project: Project) -> None:
    write_log(project.log_dir / "db.log", ("01.000000", "out", "x"))
    started = time.monotonic()
    result = cli("logs", "-f")
    assert result.code == 0
    assert result.out == "db │ x\n"
    assert "not following" in result.err
    assert time.monotonic() - started < 5


def test_logs_broken_pipe_is_quiet(project: Project) -> None:
    write_log(project.log_dir / "db.log", *[("01.000000", "out", "y" * 100)] * 5000)
    proc = subprocess.run(
        f"{sys.executable} -m herdsman -c {project.config} logs -n 5000 | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout.startswith("db │ y")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Error" not in proc.stderr, proc.stderr
