"""The client commands over a real daemon's TCP listener: `--url http://HOST:PORT` and
`--token-file FILE`, from a directory that has no config at all (as on another
machine), and what a wrong, missing or unreadable token says."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import free_port, herdsman

TOKEN = "remote-token-for-tests"


@dataclass
class Remote:
    home: Path  # the daemon's directory: config, token
    away: Path  # an empty directory the client commands run in
    url: str
    pid: int

    def cli(self, *argv: str, token: str | None = "token") -> tuple[int, str, str]:
        options = ["--url", self.url]
        if token is not None:
            options += ["--token-file", str(self.home / token)]
        result = herdsman(self.away, *options, *argv)
        return result.returncode, result.stdout, result.stderr


@pytest.fixture
def remote(tmp: Path) -> Iterator[Remote]:
    home, away = tmp / "home", tmp / "away"
    home.mkdir()
    away.mkdir()
    port = free_port()
    (home / "token").write_text(TOKEN + "\n")
    (home / "token").chmod(0o600)
    (home / "wrong").write_text("not-" + TOKEN)
    (home / "herdsman.toml").write_text(
        textwrap.dedent(
            f"""
            [settings]
            tcp = "127.0.0.1:{port}"
            token_file = "token"
            shutdown_timeout = "5s"

            [services.web]
            command = ["sh", "-c", "echo hello from $HERDSMAN_INSTANCE; exec sleep 1000"]
            replicas = 2
            start_seconds = 0
            """
        )
    )
    up = herdsman(home, "up", "-d")
    assert up.returncode == 0, up.stderr
    pid = int(json.loads(herdsman(home, "status", "--json").stdout)["daemon"]["pid"])
    try:
        yield Remote(home, away, f"http://127.0.0.1:{port}", pid)
    finally:
        herdsman(home, "down")
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def states(remote: Remote) -> dict[str, str]:
    code, out, err = remote.cli("status", "--json")
    assert code == 0, err
    return {i["name"]: i["state"] for i in json.loads(out)["services"]}


def test_every_client_command_over_tcp(remote: Remote) -> None:
    wait_for(lambda: states(remote) == {"web.0": "running", "web.1": "running"}, timeout=15)

    code, out, err = remote.cli("status")
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["web.0", "running"],
        ["web.1", "running"],
    ]

    wait_for(lambda: len(remote.cli("logs", "--json")[1].splitlines()) == 2, timeout=10)
    code, out, err = remote.cli("logs", "--json", "web.1")
    assert code == 0, err
    assert [json.loads(line)["line"] for line in out.splitlines()] == ["hello from web.1"]

    code, out, err = remote.cli("stop", "web.0")
    assert code == 0, (code, out, err)
    assert out.startswith("web.0: stopped"), (code, out, err)
    assert states(remote)["web.0"] == "stopped"
    code, out, err = remote.cli("start", "web.0")
    assert code == 0, (code, out, err)
    assert out.startswith("web.0: running"), (code, out, err)
    code, out, err = remote.cli("signal", "CONT", "web.1")
    assert code == 0, (code, out, err)
    assert out.startswith("sent SIGCONT to web.1"), (code, out, err)

    code, out, err = remote.cli("down")
    assert (code, out.strip(), err) == (0, "herdsman: stopped", "")
    # Over TCP there is no pid to watch: `down` returns once nothing answers there,
    # after every service stopped; the process itself is about to exit.
    wait_for(lambda: not alive(remote.pid), timeout=10)


@pytest.mark.parametrize(
    ("token", "sentence"),
    [
        ("wrong", "herdsman: the daemon at {url} refused the token in {home}/wrong\n"),
        (None, "herdsman: the daemon at {url} wants its API token: give it with --token-file\n"),
    ],
)
def test_a_wrong_or_missing_token_is_exit_2_and_one_sentence(
    remote: Remote, token: str | None, sentence: str
) -> None:
    for argv in (("status",), ("stop", "web.0"), ("logs",), ("down",)):
        code, out, err = remote.cli(*argv, token=token)
        assert (code, out, err) == (2, "", sentence.format(url=remote.url, home=remote.home))
    assert alive(remote.pid)
    assert set(states(remote).values()) <= {"starting", "running"}  # nothing was stopped


def test_bad_options_and_nothing_listening(remote: Remote) -> None:
    code, out, err = remote.cli("status", token="missing")
    assert (code, out) == (2, "")
    assert err.startswith(f"herdsman: --token-file {remote.home}/missing: cannot read it: ")

    (remote.home / "empty").write_text("\n")
    assert remote.cli("status", token="empty") == (
        2,
        "",
        f"herdsman: --token-file {remote.home}/empty: no token in it (one line of text)\n",
    )

    for url in ("https://127.0.0.1:1", "127.0.0.1:9900", "http://127.0.0.1", "http://h:1/v1"):
        result = herdsman(remote.away, "--url", url, "status")
        assert result.returncode == 2, result
        assert result.stdout == "", result
        assert result.stderr.startswith(f"herdsman: --url {url}: "), result.stderr
        assert len(result.stderr.splitlines()) == 1

    port = free_port()
    result = herdsman(remote.away, "--url", f"http://127.0.0.1:{port}", "status")
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        "",
        f"herdsman: no daemon answers at http://127.0.0.1:{port}\n",
    )
