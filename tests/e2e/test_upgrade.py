"""`herdsman reexec` from the previous release into this code: a daemon of the last
release's commit, installed in a venv of its own, is upgraded on disk and re-execs
into the new code, which reads the hand-over the old image wrote (version 1, no
`version` key). Every service keeps its pid, a flooding writer loses no line, the
crash loop goes on, and `down` leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import numbers, processes_of
from tests.e2e.test_reexec import WRITER

# main when the hand-over became typed and versioned: its images hand over version 1.
PREVIOUS_RELEASE = "44f8c9f71d75a5e5e6f59a35c02c7d3a31224d81"
REPO = Path(__file__).resolve().parents[2]
NEW_CODE = REPO / "src" / "herdsman"

CONFIG = """
[settings]
shutdown_timeout = "5s"

[services.writer]
command = ["python3", "-c", {writer}]
start_seconds = "0.2s"

[services.quiet]
command = "sleep 600"
start_seconds = "0.1s"

[services.crashy]
command = ["sh", "-c", "sleep 0.3; exit 3"]
start_seconds = "0.1s"
backoff = {{ initial = "0.2s", max = "0.2s" }}
start_limit = {{ burst = 1000, interval = "1s" }}
"""


@pytest.fixture(scope="session")
def previous_release() -> Iterator[Path]:
    """A venv with the previous release's herdsman installed (offline: no deps, no
    build isolation; its dependencies are this venv's, through a .pth)."""
    known = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_RELEASE[:12]} (the previous release) is not in this clone")
    root = Path(tempfile.mkdtemp(prefix="hmup", dir="/tmp"))
    try:
        tree = root / "tree"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", PREVIOUS_RELEASE],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        venv = root / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        python = venv / "bin" / "python"
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # This venv's packages (the dependencies, setuptools to build), not its herdsman:
        # that one comes from an editable .pth, which a path added this way does not read.
        Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(tree),
            ],
            check=True,
            cwd=root,
        )
        yield venv
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_reexec_from_the_previous_release_keeps_every_service_and_every_line(
    tmp: Path, previous_release: Path
) -> None:
    # A copy per test: the upgrade below replaces its herdsman with this code.
    venv = tmp / "venv"
    shutil.copytree(previous_release, venv, symlinks=True)
    python = venv / "bin" / "python"
    where = "import herdsman, os; print(os.path.dirname(herdsman.__file__))"
    found = subprocess.run(
        [python, "-c", where],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    installed = Path(found.stdout.strip())
    assert installed.is_relative_to(venv), installed  # the old code, not this one

    # Its own code only, whatever this test run's import path is.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def herdsman(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "herdsman", *argv],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    def now() -> dict[str, dict[str, object]]:
        result = herdsman("status", "--json")
        assert result.returncode == 0, result.stderr
        return {i["name"]: i for i in json.loads(result.stdout)["services"]}

    (tmp / "herdsman.toml").write_text(CONFIG.format(writer=json.dumps(WRITER)))
    started = herdsman("up", "-d")
    assert started.returncode == 0, started.stderr
    daemon_pid = None
    try:
        wait_for(lambda: now()["crashy"]["restarts"] >= 2, timeout=15)  # type: ignore[operator]
        before = json.loads(herdsman("status", "--json").stdout)
        daemon_pid = before["daemon"]["pid"]
        pids = {i["name"]: i["pid"] for i in before["services"] if i["name"] != "crashy"}
        crashes = next(i["restarts"] for i in before["services"] if i["name"] == "crashy")

        # The upgrade: the new code replaces the old on disk, as `pip install -U` does.
        shutil.rmtree(installed)
        installed.symlink_to(NEW_CODE)
        done = herdsman("reexec")
        assert done.returncode == 0, done.stderr + done.stdout
        assert f"re-executed (pid {daemon_pid}" in done.stdout

        after = json.loads(herdsman("status", "--json").stdout)
        assert after["daemon"]["pid"] == daemon_pid
        assert after["daemon"]["reexecs"] == 1
        services = {i["name"]: i for i in after["services"]}
        for name, pid in pids.items():
            assert services[name]["pid"] == pid, name
            assert services[name]["state"] == "running", name
        wait_for(lambda: now()["crashy"]["restarts"] > crashes, timeout=10)  # type: ignore[operator]
        # The new image runs this code, and read the old image's hand-over as such.
        daemon_log = (tmp / ".herdsman/logs/herdsman.log").read_text()
        assert "took over from an older image (its hand-over: version 1)" in daemon_log
        assert "re-executed (image 1)" in daemon_log
        # Every line the writer wrote, once and in order, across the upgrade.
        log = tmp / ".herdsman" / "logs" / "writer.log"
        last = numbers(log)[-1]
        wait_for(lambda: numbers(log)[-1] > last + 200, timeout=10)
        got = numbers(log)
        assert got == list(range(len(got)))
    finally:
        down = herdsman("down")
        assert down.returncode == 0, down.stderr
    assert daemon_pid is not None
    assert not alive(daemon_pid)
    for name in ("writer", "quiet", "crashy"):
        assert processes_of(name) == [], name
