"""`herdsman events` against a real daemon: readable lines and JSON lines, over the
Unix socket and over TCP with the token, across a re-exec, until the daemon stops."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from herdsman.cli.client import ApiError
from tests.cli.live import CONFIG, Follower, daemon, herdsman, instances, running
from tests.conftest import wait_for
from tests.e2e.helpers import free_port

LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+) (.+)$")


def subscribed(cwd: Path, follower: Follower, name: str, needle: str) -> str:
    """Restart `name` until the follower shows it changing (it has subscribed then):
    its first line about `name`."""
    for _ in range(20):
        assert herdsman(cwd, "restart", name).returncode == 0
        try:
            return follower.wait_for_line(lambda line: needle in line, timeout=1.0)
        except AssertionError:
            continue
    raise AssertionError(f"the follower never showed {name}: {follower.lines}")


def test_no_daemon_exits_3(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.a]\ncommand = "sleep 1"\n')
    proc = herdsman(tmp, "events")
    assert proc.returncode == 3
    assert proc.stderr.startswith("herdsman: no daemon is running for ")


def test_readable_lines_follow_a_reexec_and_end_with_the_daemon(tmp: Path) -> None:
    with daemon(tmp):
        follower = Follower(tmp, "events")
        try:
            subscribed(tmp, follower, "web.1", " web.1 ")
            os.kill(instances(tmp)["crashy"]["pid"], signal.SIGKILL)
            crash = follower.wait_for_line(lambda line: " crashy " in line)
            assert LINE.match(crash)
            assert crash.endswith(" crashy running → exited (SIGKILL)"), crash

            assert herdsman(tmp, "reexec").returncode == 0
            herdsman(tmp, "start", "crashy")
            started = follower.wait_for_line(
                lambda line: "crashy stopped" in line or "exited →" in line
            )
            assert "crashy exited → starting (pid " in started, started
            wait_for(lambda: running(tmp, "crashy"))
        except BaseException:
            follower.close()
            raise
    # `down` (leaving the daemon's block) ends the stream, and the command.
    try:
        code, rest, err = follower.finish()
    finally:
        follower.close()
    assert code == 0, err
    assert "the daemon re-executed" in err
    assert err.rstrip().endswith("herdsman: the daemon stopped; no more events")
    assert "crashy running → stopping" in rest
    assert all(LINE.match(line) for line in rest.splitlines())


def test_json_lines_over_tcp_with_the_token(tmp: Path) -> None:
    port = free_port()
    token = tmp / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    config = CONFIG.replace(
        "[settings]\n", f'[settings]\ntcp = "127.0.0.1:{port}"\ntoken_file = "token"\n'
    )
    with daemon(tmp, config):
        url = f"http://127.0.0.1:{port}"
        wrong = tmp / "wrong"
        wrong.write_text("nope\n")
        refused = herdsman(tmp, "events", "--url", url, "--token-file", str(wrong))
        assert refused.returncode == ApiError(401, "").exit_code  # as every client command
        assert "needs the API token" in refused.stderr

        follower = Follower(tmp, "events", "--json", "--url", url, "--token-file", str(token))
        try:
            first = json.loads(subscribed(tmp, follower, "web.0", '"web.0"'))
            assert first["instance"] == "web.0"
            assert {"time", "previous", "state", "pid", "restarts", "exit_code"} <= set(first)
        finally:
            follower.close()
