"""Settings that reach into services ([settings] log) and probe options (watchdog)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from herdsman.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "herdsman.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_services_inherit_settings_log_key_by_key(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            [settings]
            log = { max_bytes = "1MiB", backups = 2 }
            [services.a]
            command = "true"
            [services.b]
            command = "true"
            log = { backups = 9 }
            """,
        )
    )
    assert (config.services["a"].log.max_bytes, config.services["a"].log.backups) == (2**20, 2)
    assert (config.services["b"].log.max_bytes, config.services["b"].log.backups) == (2**20, 9)


def test_without_settings_log_the_defaults_hold(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[services.a]\ncommand = "true"\n'))
    assert (config.services["a"].log.max_bytes, config.services["a"].log.backups) == (10 * 2**20, 5)


def test_a_bad_settings_log_key_is_reported_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            write(
                tmp_path,
                """
                [settings]
                log = { max_bytes = "1MiB", bakups = 2 }
                [services.a]
                command = "true"
                [services.b]
                command = "true"
                """,
            )
        )
    assert len(err.value.errors) == 1
    assert "settings.log.bakups: unknown key (did you mean 'backups'?)" in err.value.errors[0]


def test_watchdog_only_goes_with_notify(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            write(
                tmp_path,
                """
                [services.a]
                command = "true"
                ready = { tcp = "127.0.0.1:80", watchdog = "5s" }
                """,
            )
        )
    assert "services.a.ready: watchdog only goes with notify = true" in err.value.errors[0]
    ok = load_config(
        write(
            tmp_path, '[services.a]\ncommand = "true"\nready = { notify = true, watchdog = "5s" }\n'
        )
    )
    assert ok.services["a"].ready is not None
    assert ok.services["a"].ready.watchdog == 5.0


def test_restart_with_must_name_a_dependency(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            write(
                tmp_path,
                """
                [services.db]
                command = "true"
                [services.app]
                command = "true"
                restart_with = ["db"]
                """,
            )
        )
    assert (
        "services.app: restart_with names 'db', which is not in depends_on" in err.value.errors[0]
    )
