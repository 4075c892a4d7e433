"""`herdsman top` against a real daemon: its widgets and keys through Textual's pilot,
and once in a real terminal (tmux) as a user runs it."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog, Static
from textual.widgets.data_table import ColumnKey

from herdsman.cli.stream import AsyncClient, endpoint
from herdsman.cli.top.app import DetailScreen, KeysScreen, TopApp
from tests.cli.live import CONFIG, daemon, herdsman, instances
from tests.conftest import wait_for
from tests.e2e.helpers import free_port

UNTIL = 10.0  # seconds a condition on the screen may take


def client_for(**options: str | None) -> AsyncClient:
    return AsyncClient(endpoint(argparse.Namespace(**options)))


async def until(pilot: Pilot[int], predicate: Callable[[], object]) -> None:
    try:
        async with asyncio.timeout(UNTIL):
            while not predicate():
                await pilot.pause(0.05)  # the app's own messages: no event says "changed"
    except TimeoutError:
        shown = output(pilot.app) if isinstance(pilot.app, TopApp) else ""
        raise AssertionError(f"condition not met within {UNTIL}s; output:\n{shown}") from None


def output(app: TopApp) -> str:
    return "\n".join(line.text for line in app.query_one("#output", RichLog).lines)


def row(app: TopApp, name: str) -> list[str]:
    return [cell.plain for cell in app.query_one("#instances", DataTable).get_row(name)]


def banner(app: TopApp) -> str:
    return str(app.query_one("#banner", Static).render())


def state(app: TopApp, name: str) -> object:
    return app.model.instances.get(name, {}).get("state")


async def run_in_thread(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(herdsman, cwd, *argv)


def test_the_table_the_output_and_the_keys(tmp: Path) -> None:
    with daemon(tmp):
        asyncio.run(keys_scenario(tmp))


async def keys_scenario(tmp: Path) -> None:
    app = TopApp(client_for(config=str(tmp / "herdsman.toml")))
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app._shown_keys == ["crashy", "web.0", "web.1"])
        assert row(app, "web.0")[1] == "running"
        # The first row is selected, and its output follows.
        await until(pilot, lambda: "crashy up" in output(app))
        await pilot.press("down")
        await until(pilot, lambda: app.selected == "web.0" and "hello from web.0" in output(app))
        assert "crashy" not in output(app)
        await pilot.press("a")  # everyone's output, merged
        await until(pilot, lambda: re.search(r"web\.1\s+│ hello from web\.1", output(app)))

        await pilot.press("slash", *"web.1", "enter")  # filter
        await until(pilot, lambda: app._shown_keys == ["web.1"])
        await pilot.press("slash", *["backspace"] * 5, "enter")
        await until(pilot, lambda: len(app._shown_keys) == 3)
        await pilot.press("o", "O")  # by name, the other way round
        await until(pilot, lambda: app._shown_keys == ["web.1", "web.0", "crashy"])
        await pilot.press(*["o"] * 8, "O")  # back to the config's order, forwards
        await until(pilot, lambda: app._shown_keys == ["crashy", "web.0", "web.1"])

        assert app.selected == "web.1"  # what the filter left, kept through the sorts
        await pilot.press("up")
        await until(pilot, lambda: app.selected == "web.0")
        # Stop asks first; n keeps it running, y stops it.
        await pilot.press("x", "n")
        await pilot.pause(0.3)
        assert state(app, "web.0") == "running"
        await pilot.press("x", "y")
        await until(pilot, lambda: row(app, "web.0")[1] == "stopped")
        await pilot.press("s")
        await until(pilot, lambda: row(app, "web.0")[1] == "running")
        pid = app.model.instances["web.0"]["pid"]
        await pilot.press("r")
        await until(pilot, lambda: app.model.instances["web.0"]["pid"] not in (None, pid))
        await until(pilot, lambda: row(app, "web.0")[1] == "running")
        pid = app.model.instances["web.0"]["pid"]
        await pilot.press("k", *["backspace"] * 3, *"TERM", "enter")  # a signal
        await until(pilot, lambda: app.model.instances["web.0"]["pid"] != pid)
        assert app.model.instances["web.0"]["restarts"] >= 1

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        detail = str(app.screen.query_one("#detail", Static).render())
        assert "web.0" in detail
        assert "restarts" in detail
        await pilot.press("escape", "question_mark")
        await until(pilot, lambda: isinstance(app.screen, KeysScreen))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, (KeysScreen, DetailScreen)))

        # A re-exec ends the daemon's streams: top reconnects, and says so.
        assert (await run_in_thread("reexec", cwd=tmp)).returncode == 0
        await until(pilot, lambda: "re-executed" in banner(app))
        await run_in_thread("stop", "web.1", cwd=tmp)
        await until(pilot, lambda: row(app, "web.1")[1] == "stopped")
        await pilot.press("q")
    assert app.return_code in (None, 0)


def test_over_tcp_with_the_token_and_the_daemon_gone(tmp: Path) -> None:
    port = free_port()
    token = tmp / "token"
    token.write_text("s3cret-token\n")
    token.chmod(0o600)
    config = CONFIG.replace(
        "[settings]\n", f'[settings]\ntcp = "127.0.0.1:{port}"\ntoken_file = "token"\n'
    )
    with daemon(tmp, config):
        client = client_for(url=f"http://127.0.0.1:{port}", token_file=str(token), config=None)
        asyncio.run(gone_scenario(tmp, client))


async def gone_scenario(tmp: Path, client: AsyncClient) -> None:
    app = TopApp(client)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: len(app._shown_keys) == 3)
        await until(pilot, lambda: "crashy up" in output(app))
        assert (await run_in_thread("down", cwd=tmp)).returncode == 0
        await until(pilot, lambda: "the daemon is gone" in banner(app))
        assert "nothing answers at http://127.0.0.1:" in banner(app)
        assert row(app, "web.0")[1] == "stopped"  # the last it said, dimmed
        await pilot.press("q")


def tmux_available() -> bool:
    return shutil.which("tmux") is not None


def test_a_cell_wider_than_its_column_is_shown_whole(tmp: Path) -> None:
    """A crash's message is wider than the MESSAGE header: the column widens as the row
    is laid out, not later (Textual measured it when idle and kept the row it had drawn
    cut: "killed" stayed on screen for "killed by SIGKILL")."""

    async def run() -> None:
        (tmp / "herdsman.toml").write_text("")  # no daemon runs for it: nothing connects
        app = TopApp(client_for(config=str(tmp / "herdsman.toml")), interval=60)
        async with app.run_test(size=(140, 40)) as pilot:
            grid = app.query_one("#instances", DataTable)
            running = {"name": "crashy", "state": "running", "pid": 42, "restarts": 0}
            app.model.instances = {"crashy": running}
            app.redraw()
            await pilot.pause()
            app.model.instances = {
                "crashy": {**running, "state": "exited", "pid": None, "exit_signal": "SIGKILL"}
            }
            app.redraw()
            message = grid.columns[ColumnKey("message")]
            assert message.get_render_width(grid) >= len("killed by SIGKILL")
            # Drawn by a refresh to come (a few turns of Textual's loop under load).
            deadline = time.monotonic() + 5
            while True:
                await pilot.pause()
                drawn = grid.render_line(1).text  # the first row, under the header
                if "killed by SIGKILL" in drawn or time.monotonic() > deadline:
                    break
            assert "killed by SIGKILL" in drawn, drawn

    asyncio.run(run())


@pytest.mark.skipif(not tmux_available(), reason="tmux is not installed (.ci/run installs it)")
def test_in_a_real_terminal(tmp: Path) -> None:
    """As a user runs it: a crash shows by its event (CPU/memory refresh only every
    60 s here, so nothing else can show it), `r` restarts the selected instance, `q`
    quits and leaves the terminal as it was."""
    tmux = ["tmux", "-S", str(tmp / "tmux.sock")]
    run = (
        f"cd {tmp} && echo before top && {sys.executable} -m herdsman top -d 60; echo top exited $?"
    )
    with daemon(tmp):
        piped = herdsman(tmp, "top")  # not a terminal
        assert piped.returncode == 2
        assert piped.stderr.startswith("herdsman: top needs a terminal; ")
        subprocess.run(
            [*tmux, "new-session", "-d", "-x", "130", "-y", "35", f"{run}; exec sleep 600"],
            check=True,
            # The pane's size, not one a terminal library left in the environment.
            env={
                **{k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
                "TERM": "xterm-256color",
            },
        )
        try:

            def screen() -> str:
                return subprocess.run(
                    [*tmux, "capture-pane", "-p"], capture_output=True, text=True, check=True
                ).stdout

            def crashy_row() -> list[str]:
                for line in screen().splitlines():
                    if line.split()[:1] == ["crashy"]:
                        return line.split()
                return []

            wait_for(lambda: crashy_row()[1:2] == ["running"], 30)
            wait_for(lambda: "crashy up" in screen(), 30)
            old = instances(tmp)["crashy"]["pid"]
            os.kill(old, signal.SIGKILL)

            def shows_the_crash() -> bool:
                row = crashy_row()
                return row[1:2] == ["exited"] and "SIGKILL" in row

            try:
                wait_for(shows_the_crash, 30)
            except AssertionError:
                raise AssertionError(f"no crash shown; the screen:\n{screen()}") from None

            subprocess.run([*tmux, "send-keys", "r"], check=True)  # crashy is selected
            wait_for(lambda: instances(tmp)["crashy"]["state"] == "running", 30)
            new = str(instances(tmp)["crashy"]["pid"])
            wait_for(lambda: crashy_row()[1:3] == ["running", new], 30)

            subprocess.run([*tmux, "send-keys", "q"], check=True)
            wait_for(lambda: "top exited 0" in screen(), 30)
            lines = [line for line in screen().splitlines() if line.strip()]
            assert lines[-2:] == ["before top", "top exited 0"], lines
        finally:
            subprocess.run([*tmux, "kill-server"], capture_output=True)


def test_without_a_daemon_it_exits_3_before_taking_the_screen(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.a]\ncommand = "sleep 1"\n')
    proc = herdsman(tmp, "top")
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.startswith("herdsman: no daemon is running for ")
    bad = herdsman(tmp, "top", "--url", "ftp://x:1", "--token-file", "t")
    assert bad.returncode == 2
    assert bad.stderr == "herdsman: --url ftp://x:1: expected http://HOST:PORT\n"
