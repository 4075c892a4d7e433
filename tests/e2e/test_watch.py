"""Restart on file changes, against a real daemon and real processes (`up --watch`)."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import alive, wait_for
from tests.e2e.helpers import herdsman, instances

CONFIG = """
[services.web]
command = "sleep 600"
start_seconds = 0
watch = ["src/**/*.py", "config/"]
watch_debounce = "{debounce}"
[services.other]
command = "sleep 601"
start_seconds = 0
watch = ["src/"]
watch_debounce = "{debounce}"
"""


def write(path: Path, text: str = "x = 1\n") -> None:
    """Save a file as an editor does: open, write, close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp: Path) -> Iterator[Path]:
    (tmp / "src" / "pkg").mkdir(parents=True)
    (tmp / "config").mkdir()
    (tmp / "src" / "pkg" / "__pycache__").mkdir()
    yield tmp
    herdsman(tmp, "down")
    lock = tmp / ".herdsman" / "herdsman.lock"
    if lock.exists() and lock.read_text().strip().isdigit():
        pid = int(lock.read_text())
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def up(project: Path, config: str, *flags: str, debounce: str = "300ms") -> None:
    (project / "herdsman.toml").write_text(textwrap.dedent(config.format(debounce=debounce)))
    started = herdsman(project, "up", "-d", "--wait", *flags)
    assert started.returncode == 0, started.stderr


def inotify_fds(project: Path) -> int:
    """How many inotify instances the daemon holds."""
    daemon = int((project / ".herdsman" / "herdsman.lock").read_text())
    fds = Path(f"/proc/{daemon}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd) == "anon_inode:inotify")


def restarted(project: Path, name: str, pid: int) -> dict[str, object]:
    """The instance's document once it runs again with a pid other than `pid`."""
    found: dict[str, object] = {}

    def again() -> bool:
        doc = instances(project)[name]
        found.update(doc)
        return doc["state"] == "running" and doc["pid"] not in (None, pid)

    wait_for(again, timeout=20, interval=0.1)
    return found


def test_a_save_restarts_once_and_says_which_file(project: Path) -> None:
    up(project, CONFIG, "--watch")
    assert inotify_fds(project) == 1  # one for every service that watches
    before = instances(project)
    write(project / "src" / "pkg" / "app.py")
    web = restarted(project, "web", int(before["web"]["pid"]))
    assert web["message"] == "restart: src/pkg/app.py changed"
    assert web["restarts"] == 1
    # `other` watches src/ too, and is restarted by the same save.
    other = restarted(project, "other", int(before["other"]["pid"]))
    assert other["message"] == "restart: src/pkg/app.py changed"
    # Ignored paths (caches, swap files) and paths no pattern matches change nothing;
    # the save after them is the fence: if they had counted, the message would
    # name them (the first change is the one it names) or there would be two restarts.
    write(project / "src" / "pkg" / "__pycache__" / "app.cpython-311.pyc")
    write(project / "src" / "pkg" / ".app.py.swp")
    write(project / "src" / "notes.txt")
    write(project / "config" / "app.toml")
    web = restarted(project, "web", int(web["pid"]))  # type: ignore[call-overload]
    assert web["message"] == "restart: config/app.toml changed"
    assert web["restarts"] == 2
    log = (project / ".herdsman" / "logs" / "herdsman.log").read_text()
    assert log.count("web: restart: config/app.toml changed") == 1


def test_a_burst_of_saves_restarts_once(project: Path) -> None:
    up(project, CONFIG, "--watch", debounce="1s")
    pid = int(instances(project)["web"]["pid"])
    for n in range(30):  # a checkout, a formatter run: many files in a moment
        write(project / "src" / "pkg" / f"m{n}.py")
    new_dir = project / "src" / "new" / "deeper"
    write(new_dir / "made_with_its_directories.py")
    web = restarted(project, "web", pid)
    # All 31 files, the one in the directory made during the burst too.
    assert web["message"] == "restart: src/pkg/m0.py and 30 more changed"
    # The fence: one more save, well after the burst, is the second restart; a burst
    # that had restarted twice would make it the third, or be named by it.
    write(new_dir / "fence.py")
    web = restarted(project, "web", int(web["pid"]))  # type: ignore[call-overload]
    assert web["message"] == "restart: src/new/deeper/fence.py changed"
    assert web["restarts"] == 2


def test_reload_adds_and_removes_watch_in_place(project: Path) -> None:
    unwatched = CONFIG.replace('watch = ["src/**/*.py", "config/"]\n', "")
    up(project, unwatched, "--watch")
    pids = {name: doc["pid"] for name, doc in instances(project).items()}
    write(project / "src" / "a.py")
    other = restarted(project, "other", int(pids["other"]))  # type: ignore[arg-type]
    web = instances(project)["web"]
    assert (web["pid"], web["restarts"], web["state"]) == (pids["web"], 0, "running")

    (project / "herdsman.toml").write_text(textwrap.dedent(CONFIG.format(debounce="300ms")))
    reloaded = herdsman(project, "reload")
    assert reloaded.returncode == 0, reloaded.stderr
    assert "unchanged: web, other" in reloaded.stdout  # watch applies in place
    assert instances(project)["web"]["pid"] == pids["web"]
    write(project / "src" / "b.py")
    restarted(project, "web", int(pids["web"]))  # type: ignore[arg-type]

    (project / "herdsman.toml").write_text(textwrap.dedent(unwatched.format(debounce="300ms")))
    assert herdsman(project, "reload").returncode == 0
    web = instances(project)["web"]
    write(project / "src" / "c.py")
    restarted(project, "other", int(other["pid"]))  # type: ignore[call-overload]
    assert instances(project)["web"]["pid"] == web["pid"]


def test_without_the_flag_nothing_restarts(project: Path) -> None:
    up(project, CONFIG)
    pid = instances(project)["web"]["pid"]
    log = (project / ".herdsman" / "logs" / "herdsman.log").read_text()
    assert "web, other declare watch, and watch is off" in log
    assert inotify_fds(project) == 0
    write(project / "src" / "a.py")
    # Nothing could announce a restart that does not happen: wait ten debounces.
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        doc = instances(project)["web"]
        assert (doc["pid"], doc["restarts"]) == (pid, 0)
        time.sleep(0.2)


def test_watching_survives_a_reexec(project: Path) -> None:
    up(project, CONFIG, "--watch")
    pid = int(instances(project)["web"]["pid"])
    assert herdsman(project, "reexec").returncode == 0
    assert inotify_fds(project) == 1
    write(project / "config" / "after.toml")
    assert restarted(project, "web", pid)["message"] == "restart: config/after.toml changed"
