"""The config side of plugins and hooks: what is validated, what the plan carries, and
plugin names checked by importing them (so `check` fails early, naming the plugin)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from herdsman.config.plan import compile_plan
from herdsman.core.plan import CheckPlan, HookPlan
from tests.config.helpers import errors, load
from tests.plugins.conftest import Daemon, environment, write_config

SERVICE = """
[services.web]
command = "sleep 60"
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp)  # errors then name the file as `herdsman.toml`


def config(tmp: Path, text: str) -> Path:
    path = tmp / "herdsman.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def local_module(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A uniquely named module in `tmp`, importable (what `settings.plugins` may name)."""
    name = f"hm_local_{uuid.uuid4().hex[:8]}"
    (tmp / f"{name}.py").write_text(
        "async def notify(event):\n    pass\n\n"
        "async def probe(info, port=0):\n    return True\n\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp))
    return name


def test_hooks_and_plugin_probes_compile_into_the_plan(tmp: Path, local_module: str) -> None:
    path = config(
        tmp,
        f"""
        [settings]
        plugins = ["{local_module}:notify", "{local_module}:probe"]

        [[hooks]]
        on = "failed"
        webhook = "http://127.0.0.1:9/x"
        timeout = "2s"

        [services.web]
        command = "sleep 60"
        replicas = 2
        ready = {{ plugin = "probe", options = {{ port = "80{{replica}}", tries = 3 }} }}

        [[services.web.hooks]]
        on = ["exited", "failed"]
        exec = "notify-send 'web is down'"

        [[services.web.hooks]]
        on = ["running"]
        plugin = "notify"
        options = {{ channel = "#ops" }}
        """,
    )
    plan = compile_plan(load(path))
    assert plan.plugins == (f"{local_module}:notify", f"{local_module}:probe")
    assert plan.hooks == (
        HookPlan(
            on=frozenset({"failed"}),
            kind="webhook",
            where="hooks[0]",
            url="http://127.0.0.1:9/x",
            timeout=2.0,
        ),
    )
    web = plan.services["web"]
    assert web.hooks[0] == HookPlan(
        on=frozenset({"exited", "failed"}),
        kind="exec",
        where="services.web.hooks[0]",
        argv=("notify-send", "web is down"),
    )
    assert (web.hooks[1].kind, web.hooks[1].plugin, web.hooks[1].options) == (
        "plugin",
        "notify",
        {"channel": "#ops"},
    )
    ready = web.instances[1].ready
    assert isinstance(ready, CheckPlan)
    assert (ready.kind, ready.target, ready.options) == (
        "plugin",
        "probe",
        {"port": "801", "tries": 3},
    )


def test_hook_settings_are_validated_with_key_paths_and_lines(tmp: Path) -> None:
    path = config(
        tmp,
        """
        [settings]
        plugins = ["no_colon"]

        [[hooks]]
        on = ["faild"]
        exec = "true"

        [[hooks]]
        on = []
        webhook = "ftp://example.com/"

        [[hooks]]
        on = "failed"
        exec = "true"
        webhook = "http://127.0.0.1/"

        [[hooks]]
        on = "failed"
        exec = "true"
        tiemout = "1s"
        options = { a = 1 }

        [services.web]
        command = "sleep 60"
        health = { exec = "true", options = { a = 1 } }

        [[services.web.hooks]]
        on = "running"
        plugin = ""
        """,
    )
    assert errors(path) == [
        "herdsman.toml:3: settings.plugins[0]: 'no_colon' is not of the form 'package.module:object'",
        "herdsman.toml:6: hooks[0].on[0]: must be one of stopped, starting, running,"
        " stopping, restarting, exited, failed, not 'faild'",
        "herdsman.toml:10: hooks[1].on: must not be empty",
        "herdsman.toml:11: hooks[1].webhook: 'ftp://example.com/' is not an http:// or https:// URL",
        "herdsman.toml:13: hooks[2]: needs exactly one of exec, webhook, plugin (found exec and webhook)",
        "herdsman.toml:21: hooks[3].tiemout: unknown key (did you mean 'timeout'?)",
        "herdsman.toml:26: services.web.health: options only go with plugin",
        "herdsman.toml:30: services.web.hooks[0].plugin: must not be empty",
    ]


def test_listed_plugins_need_distinct_names(tmp: Path) -> None:
    path = config(tmp, '[settings]\nplugins = ["a.b:x", "c.d:x", "a.b:x"]\n' + SERVICE)
    assert errors(path) == [
        "herdsman.toml:2: settings.plugins: 'a.b:x' and 'c.d:x' would both be known as 'x'"
    ]


def test_options_only_go_with_a_plugin_hook(tmp: Path) -> None:
    path = config(
        tmp,
        SERVICE
        + """
        [[hooks]]
        on = "failed"
        exec = "true"
        options = { a = 1 }
        """,
    )
    assert errors(path) == ["herdsman.toml:5: hooks[0]: options only go with plugin"]


def test_unknown_and_broken_plugins_are_config_errors(tmp: Path, local_module: str) -> None:
    path = config(
        tmp,
        f"""
        [settings]
        plugins = ["{local_module}:notify", "{local_module}:missing", "nowhere_{local_module}.x:y",
                   "{local_module}:NOT_CALLABLE"]

        [[hooks]]
        on = "failed"
        plugin = "notfy"

        [[hooks]]
        on = "failed"
        plugin = "y"

        [services.web]
        command = "sleep 60"
        ready = {{ plugin = "NOT_CALLABLE" }}
        """,
    )
    found = errors(path)
    assert found == [
        f"herdsman.toml:3: settings.plugins[1]: {local_module!r} has no 'missing'",
        f"herdsman.toml:3: settings.plugins[2]: cannot import 'nowhere_{local_module}.x':"
        f" ModuleNotFoundError: No module named 'nowhere_{local_module}'",
        "herdsman.toml:8: hooks[0].plugin: no hook plugin named 'notfy' (did you mean 'notify'?):"
        " it is neither in settings.plugins nor an installed 'herdsman.hooks' entry point;"
        " known: NOT_CALLABLE, missing, notify, y",
        "herdsman.toml:16: services.web.ready.plugin: probe plugin 'NOT_CALLABLE' is not callable",
    ]


def test_check_finds_installed_entry_points(daemon: Daemon) -> None:
    write_config(
        daemon.dir,
        """
        [[hooks]]
        on = "failed"
        plugin = "recrd"

        [services.web]
        command = "sleep 60"
        ready = { plugin = "file-exists", options = { path = "/tmp" } }
        """,
    )
    check = daemon.cli("check")
    assert check.returncode == 2
    assert check.stderr == (
        "herdsman: herdsman.toml:4: hooks[0].plugin: no hook plugin named 'recrd'"
        " (did you mean 'record'?): it is neither in settings.plugins nor an installed"
        " 'herdsman.hooks' entry point; known: block, broken, explode, record, record-async\n"
    )
    (daemon.dir / "herdsman.toml").write_text(
        (daemon.dir / "herdsman.toml").read_text().replace("recrd", "record")
    )
    check = daemon.cli("check")
    assert (check.returncode, check.stderr) == (0, "")


def test_a_plugin_that_fails_to_import_stops_check_and_up(daemon: Daemon) -> None:
    write_config(
        daemon.dir,
        """
        [services.web]
        command = "sleep 60"

        [[services.web.hooks]]
        on = "failed"
        plugin = "broken"
        """,
    )
    expected = (
        "herdsman: herdsman.toml:7: services.web.hooks[0].plugin: cannot load entry point"
        " 'broken' (hmplug.broken:hook): ZeroDivisionError: division by zero\n"
    )
    check = daemon.cli("check")
    assert (check.returncode, check.stderr) == (2, expected)
    up = daemon.up()
    assert (up.returncode, up.stderr) == (2, expected)
    assert not (daemon.dir / ".herdsman" / "herdsman.lock").exists()


def test_without_the_package_on_the_path_the_plugin_is_unknown(
    tmp: Path, plugin_path: Path
) -> None:
    write_config(
        tmp,
        SERVICE
        + """
        [[hooks]]
        on = "failed"
        plugin = "record"
        """,
    )
    env = environment(plugin_path)
    del env["PYTHONPATH"]
    check = subprocess.run(
        [sys.executable, "-m", "herdsman", "check"],
        cwd=tmp,
        capture_output=True,
        text=True,
        env=env,
    )
    assert check.returncode == 2
    assert "no hook plugin named 'record'" in check.stderr


def test_export_says_plugin_probes_and_hooks_stay_with_herdsman(
    tmp: Path, local_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from herdsman.cli.main import main

    path = config(
        tmp,
        f"""
        [settings]
        plugins = ["{local_module}:probe"]

        [[hooks]]
        on = "failed"
        webhook = "http://127.0.0.1:9/x"

        [services.web]
        command = "sleep 60"
        ready = {{ plugin = "probe" }}
        health = {{ plugin = "probe" }}
        kubernetes = {{ image = "busybox:1" }}
        """,
    )
    warnings = {}
    for target in ("systemd", "kubernetes"):
        capsys.readouterr()
        assert main(["-c", str(path), "export", target]) == 0
        err = capsys.readouterr().err
        warnings[target] = [line for line in err.splitlines() if "warning" in line]
    assert "herdsman: warning: web: ready = { plugin = 'probe' } has no systemd equivalent:" in (
        "\n".join(warnings["systemd"])
    )
    assert (
        "herdsman: warning: web: hooks are run by herdsman: the unit does not run them"
        in (warnings["systemd"])
    )
    assert warnings["kubernetes"] == [
        "herdsman: warning: web: ready = { plugin = 'probe' } is a herdsman plugin: it has no"
        " Kubernetes equivalent",
        "herdsman: warning: web: health = { plugin = 'probe' } is a herdsman plugin: it has no"
        " Kubernetes equivalent",
        "herdsman: warning: web: hooks are run by herdsman: nothing runs them in Kubernetes",
    ]
