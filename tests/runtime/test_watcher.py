"""The inotify watcher on a real event loop and a real file system."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from herdsman.config import load_config
from herdsman.config.plan import compile_plan
from herdsman.core.plan import Plan
from herdsman.runtime.watcher import Watcher
from tests.runtime.harness import until


def plan_of(tmp: Path, toml: str) -> Plan:
    path = tmp / "herdsman.toml"
    path.write_text(textwrap.dedent(toml))
    return compile_plan(load_config(path, environ={}))


@asynccontextmanager
async def watching(
    tmp: Path, toml: str
) -> AsyncIterator[tuple[Watcher, list[tuple[str, list[str]]]]]:
    calls: list[tuple[str, list[str]]] = []
    watcher = Watcher(
        asyncio.get_running_loop(),
        lambda name, paths: calls.append((name, paths)),
        logging.getLogger("test"),
    )
    watcher.sync(plan_of(tmp, toml))
    try:
        yield watcher, calls
    finally:
        watcher.close()


APP = """
[services.app]
command = "x"
watch = ["src/", "settings.toml"]
watch_debounce = "50ms"
"""


def test_directories_come_and_go_with_the_tree(tmp: Path) -> None:
    (tmp / "src" / "a" / "node_modules" / "dep").mkdir(parents=True)
    (tmp / "src" / ".git").mkdir()

    async def body() -> None:
        async with watching(tmp, APP) as (watcher, calls):
            src = str(tmp / "src")
            # Ignored trees are never entered; a literal file's directory is watched.
            assert watcher.watched_dirs() == {str(tmp), src, f"{src}/a"}
            (tmp / "src" / "b" / "c").mkdir(parents=True)
            await until(lambda: f"{src}/b/c" in watcher.watched_dirs())
            (tmp / "src" / "b" / "c" / "x.py").write_text("1")
            await until(lambda: calls)
            assert calls == [("app", ["src/b/c/x.py"])]
            # A directory moved away takes its watches along; where it lands is watched.
            (tmp / "src" / "b").rename(tmp / "src" / "moved")
            await until(lambda: f"{src}/moved/c" in watcher.watched_dirs())
            await until(lambda: f"{src}/b/c" not in watcher.watched_dirs())
            shutil.rmtree(tmp / "src" / "moved")
            await until(lambda: watcher.watched_dirs() == {str(tmp), src, f"{src}/a"})
            (tmp / "other.toml").write_text("x = 1")
            (tmp / "settings.toml").write_text("x = 1")
            await until(lambda: any("settings.toml" in paths for _, paths in calls))
            assert not any("other.toml" in paths for _, paths in calls)

    asyncio.run(body())


def test_sync_follows_the_plan_and_keeps_shared_directories(tmp: Path) -> None:
    (tmp / "src").mkdir()
    (tmp / "lib").mkdir()
    two = APP + '[services.lib]\ncommand = "y"\nwatch = ["lib/**/*.py", "src/*.py"]\n'

    async def body() -> None:
        async with watching(tmp, two) as (watcher, calls):
            assert watcher.watched_dirs() == {str(tmp), str(tmp / "src"), str(tmp / "lib")}
            watcher.sync(plan_of(tmp, APP))  # lib no longer watches
            assert watcher.watched_dirs() == {str(tmp), str(tmp / "src")}
            (tmp / "src" / "m.py").write_text("1")
            (tmp / "lib" / "m.py").write_text("1")
            await until(lambda: calls)
            await asyncio.sleep(0.2)  # four debounces: lib would have been called by now
            assert calls == [("app", ["src/m.py"])]
            watcher.sync(plan_of(tmp, '[services.app]\ncommand = "x"\n'))
            assert watcher.watched_dirs() == set()

    asyncio.run(body())


def test_a_debounce_under_way_survives_a_sync(tmp: Path) -> None:
    (tmp / "src").mkdir()
    slow = APP.replace("50ms", "300ms")

    async def body() -> None:
        async with watching(tmp, slow) as (watcher, calls):
            (tmp / "src" / "a.py").write_text("1")
            await until(lambda: watcher._services["app"].changed)  # debouncing
            watcher.sync(plan_of(tmp, slow.replace("settings.toml", "other.toml")))
            await until(lambda: calls)
            assert calls == [("app", ["src/a.py"])]

    asyncio.run(body())


def test_a_path_not_there_yet_is_watched_from_its_directory(tmp: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    toml = APP.replace('"src/"', '"src/", "lib/**/*.py"')

    async def body() -> None:
        async with watching(tmp, toml) as (watcher, calls):
            watcher.sync(plan_of(tmp, toml.replace("50ms", "60ms")))
            assert watcher.watched_dirs() == {str(tmp)}
            (tmp / "src" / "deep").mkdir(parents=True)
            await until(lambda: str(tmp / "src" / "deep") in watcher.watched_dirs())
            (tmp / "src" / "deep" / "x.py").write_text("1")
            await until(lambda: any("src/deep/x.py" in paths for _, paths in calls))

    with caplog.at_level(logging.WARNING):
        asyncio.run(body())
    missing = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    # Said once, not at every reload; a glob's directory is not awaited.
    assert missing == [f"watch: {os.path.join(tmp, 'lib')} does not exist; it is not watched"]
