"""`watch`, `watch_ignore`, `watch_debounce`: validation and what the daemon is given."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from herdsman.config import ConfigError, load_config
from herdsman.config.plan import compile_plan
from herdsman.config.watch import DEFAULT_DEBOUNCE, root_of
from herdsman.core.plan import WatchPlan
from tests.config.conftest import WriteConfig


def _last_match(patterns: tuple[tuple[str, bool], ...], path: str) -> bool:
    decided = False
    for regex, include in patterns:
        if re.match(regex, path):
            decided = include
    return decided


def _plan(write: WriteConfig, body: str) -> WatchPlan:
    path = write(f'[services.web]\ncommand = "x"\n{body}\n')
    watch = compile_plan(load_config(path, environ={})).services["web"].watch
    assert watch is not None
    return watch


def test_patterns_are_relative_to_the_cwd(write: WriteConfig) -> None:
    watch = _plan(write, 'watch = ["src/**/*.py", "config/", "app.py", "!src/gen/**"]')
    matched = {
        path: _last_match(watch.match, path)
        for path in [
            "src/app.py",
            "src/a/b/c.py",
            "src/app.pyc",
            "config/x.yaml",
            "config/deep/y",
            "app.py",
            "lib/app.py",
            "src/gen/models.py",
            "other.py",
        ]
    }
    assert [path for path, hit in matched.items() if hit] == [
        "src/app.py",
        "src/a/b/c.py",
        "config/x.yaml",
        "config/deep/y",
        "app.py",
    ]
    assert watch.roots == (("src", False), ("config", True), ("app.py", True))
    assert watch.debounce == DEFAULT_DEBOUNCE


def test_default_and_own_ignores(write: WriteConfig, tmp: Path) -> None:
    watch = _plan(write, 'watch = ["**"]\nwatch_ignore = ["*.log", "!keep.pyc", "/build/"]')
    ignored = [
        path
        for path in [
            ".git/HEAD",
            "a/__pycache__/m.cpython-311.pyc",
            "x.pyc",
            "keep.pyc",
            "web/node_modules/left-pad/index.js",
            ".app.py.swp",
            "4913",
            "app.py~",
            ".#app.py",
            "#app.py#",
            "server.log",
            "build/out.js",
            "src/build/out.js",
            ".herdsman/logs/web.log",
            "app.py",
        ]
        if _last_match(watch.ignore, path)
    ]
    assert ignored == [
        ".git/HEAD",
        "a/__pycache__/m.cpython-311.pyc",
        "x.pyc",
        "web/node_modules/left-pad/index.js",
        ".app.py.swp",
        "4913",
        "app.py~",
        ".#app.py",
        "#app.py#",
        "server.log",
        "build/out.js",
        ".herdsman/logs/web.log",  # herdsman's own state_dir, inside the cwd
    ]


def test_a_service_without_watch_has_no_watch_plan(write: WriteConfig) -> None:
    path = write('[services.web]\ncommand = "x"\n')
    assert compile_plan(load_config(path, environ={})).services["web"].watch is None


@pytest.mark.parametrize(
    ("pattern", "root"),
    [
        ("src/**/*.py", ("src", False)),
        ("./src/app.py", ("src/app.py", True)),
        ("*.py", (".", False)),
        ("a/b[0-9]/c", ("a", False)),
        (".", (".", True)),
        ("config/", ("config", True)),
    ],
)
def test_roots(pattern: str, root: tuple[str, bool]) -> None:
    assert root_of(pattern) == root


def test_bad_watch_settings_are_errors_with_their_key(write: WriteConfig) -> None:
    path = write("""\
        [services.web]
        command = "x"
        watch = ["/etc/app.conf", "../shared/**", "", "ok/**"]
        watch_ignore = ["[z"]
        watch_debounce = "soon"
        """)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.errors == [
        "herdsman.toml:3: services.web.watch[0]: '/etc/app.conf' must be relative to the"
        " service's cwd and stay inside it (set cwd higher to watch more)",
        "herdsman.toml:3: services.web.watch[1]: '../shared/**' must be relative to the"
        " service's cwd and stay inside it (set cwd higher to watch more)",
        "herdsman.toml:3: services.web.watch[2]: must not be empty",
        "herdsman.toml:4: services.web.watch_ignore[0]: '[z' is not a pattern"
        " (see .gitignore's rules)",
        "herdsman.toml:5: services.web.watch_debounce: 'soon' is not a duration"
        " (use e.g. '250ms', '1.5s', '10s', '5m', '1h', '1m30s' or a number of seconds)",
    ]
