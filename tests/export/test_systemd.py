"""`herdsman export systemd`: the units, field by field, and systemd 252's verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.export.conftest import (
    notes,
    settings,
    split_stream,
    systemd_verify,
    value,
    values,
    write_rich,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "herdsman.toml"


def unit_paths(directory: Path, replicas: dict[str, int]) -> list[Path]:
    """Every unit file, with templates as their instances (verify needs an instance)."""
    paths = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith("@.service"):
            service = path.name.removesuffix("@.service")
            paths += [directory / f"{service}@{i}.service" for i in range(replicas[service])]
        else:
            paths.append(path)
    return paths


def test_examples_pass_systemd_analyze_verify(export, tmp: Path) -> None:
    config = tmp / "examples" / "herdsman.toml"
    shutil.copytree(EXAMPLES.parent, config.parent)
    result = export(config, "systemd", "-o", str(tmp / "units"))
    assert result.code == 0, result.err
    names = [Path(line).name for line in result.out.splitlines()]
    assert names == [
        "migrate.service",
        "api.service",
        "web.service",
        "worker@.service",
        "flaky.service",
        "examples.target",
    ]
    assert systemd_verify(unit_paths(tmp / "units", {"worker": 2})) == ""


def test_rich_config_passes_verify_and_254_keys_only_when_asked(export, tmp: Path) -> None:
    # systemd-analyze verify checks that every ExecStart program exists.
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    config = write_rich(tmp)
    for version in ("252", "254"):
        out = tmp / f"units{version}"
        result = export(config, "systemd", "-o", str(out), "--systemd-version", version)
        assert result.code == 0, result.err
    assert systemd_verify(unit_paths(tmp / "units252", {"web_app": 3})) == ""
    # systemd 252 itself does not know the keys 254 added, and nothing else.
    said = systemd_verify(unit_paths(tmp / "units254", {"web_app": 3})).splitlines()
    assert said
    assert all(
        "Unknown key 'RestartSteps'" in line or "Unknown key 'RestartMaxDelaySec'" in line
        for line in said
    ), said
    old = (tmp / "units252" / "web_app@.service").read_text()
    new = (tmp / "units254" / "web_app@.service").read_text()
    assert values(old, "Service", "RestartSteps") == []
    assert values(old, "Service", "RestartMaxDelaySec") == []
    assert value(new, "Service", "RestartSec") == "1s"
    assert value(new, "Service", "RestartSteps") == "4"  # 1s * 2^4 = 16s
    assert value(new, "Service", "RestartMaxDelaySec") == "16s"
    assert not any("backoff grows" in line for line in notes(new))


def test_units_field_by_field(export, tmp: Path) -> None:
    result = export(write_rich(tmp), "systemd")
    assert result.code == 0, result.err
    units = split_stream(result.out)
    group = f"{tmp.name}.target"
    assert list(units) == [
        "db.service",
        "migrate.service",
        "web_app@.service",
        "notifier.service",
        "report.service",
        "after_report.service",
        group,
    ]

    db = units["db.service"]
    assert value(db, "Service", "Type") == "exec"
    assert (
        value(db, "Service", "ExecStart").endswith("/redis-server --port 6390")
        or value(db, "Service", "ExecStart") == "redis-server --port 6390"
    )
    assert value(db, "Service", "User") == "999"
    assert value(db, "Service", "Group") == "www-data"
    assert value(db, "Service", "UMask") == "0027"
    assert value(db, "Service", "KillSignal") == "SIGINT"
    assert value(db, "Service", "KillMode") == "control-group"
    assert value(db, "Service", "TimeoutStopSec") == "20s"
    assert value(db, "Service", "MemoryMax") == str(512 * 1024 * 1024)
    assert value(db, "Service", "Restart") == "always"
    assert value(db, "Service", "RestartSec") == "100ms"
    assert value(db, "Service", "WorkingDirectory") == str(tmp)
    assert value(db, "Unit", "StartLimitBurst") == "6"  # 5 restarts after the first start
    assert value(db, "Unit", "StartLimitIntervalSec") == "60s"
    assert value(db, "Unit", "PartOf") == group
    assert values(db, "Service", "Environment") == [
        '"HERDSMAN_SERVICE=db"',
        '"HERDSMAN_INSTANCE=db"',
        '"HERDSMAN_REPLICA=0"',
    ]

    migrate = units["migrate.service"]
    assert value(migrate, "Service", "Type") == "oneshot"
    assert value(migrate, "Service", "RemainAfterExit") == "yes"
    assert value(migrate, "Service", "Restart") == "no"
    # a relative program is resolved against cwd: systemd refuses relative paths
    assert value(migrate, "Service", "ExecStart") == f"{tmp}/bin/migrate --to latest"
    assert value(migrate, "Service", "EnvironmentFile") == str(tmp / "app.env")
    assert values(migrate, "Unit", "StartLimitBurst") == []  # it never restarts
    assert values(migrate, "Service", "RestartSec") == []

    web = units["web_app@.service"]
    assert value(web, "Unit", "Description").startswith("web_app replica %i (service of ")
    assert value(web, "Unit", "After") == "db.service migrate.service"
    assert value(web, "Unit", "Requires") == "db.service migrate.service"
    assert values(web, "Unit", "PartOf") == [group, "db.service"]  # restart_with
    assert value(web, "Unit", "StartLimitBurst") == "4"
    assert value(web, "Unit", "StartLimitIntervalSec") == "30s"
    assert value(web, "Service", "ExecStart").endswith(" -m http.server 80%i")
    assert value(web, "Service", "RestartSec") == "1s"
    assert value(web, "Service", "EnvironmentFile") == str(tmp / "app.env")
    assert values(web, "Service", "Environment") == [
        '"HERDSMAN_SERVICE=web_app"',
        '"HERDSMAN_INSTANCE=web_app.%i"',
        '"HERDSMAN_REPLICA=%i"',
        r'"GREETING=hello \"world\" 100%% $HOME \\o/"',
        r'"LINES=a\nb"',
        '"PORT=80%i"',
    ]

    notifier = units["notifier.service"]
    assert value(notifier, "Service", "Type") == "notify"
    assert value(notifier, "Service", "NotifyAccess") == "all"
    assert value(notifier, "Service", "WatchdogSec") == "15s"
    assert value(notifier, "Service", "Restart") == "on-failure"
    # herdsman's on-failure restarts after any signal; systemd's counts these as clean
    assert value(notifier, "Service", "RestartForceExitStatus") == "SIGHUP SIGINT SIGTERM SIGPIPE"
    instances = "web_app@0.service web_app@1.service web_app@2.service"
    assert value(notifier, "Unit", "After") == instances
    assert value(notifier, "Unit", "Requires") == instances
    assert value(notifier, "Service", "ExecStart").endswith(" -c print(1)")

    report = units["report.service"]  # on-failure, and something waits for it to complete
    assert value(report, "Service", "Type") == "oneshot"
    assert value(report, "Service", "Restart") == "on-failure"
    # refused by systemd in a oneshot
    assert values(report, "Service", "RestartForceExitStatus") == []
    # shell = true runs /bin/sh -c; `$` and `%` are doubled so systemd passes them on
    assert value(report, "Service", "ExecStart") == (
        r'/bin/sh -c "echo \"done at $$(date)\" > /tmp/report-%%Y.txt; exit 0"'
    )

    target = units[group]
    wanted = "db.service migrate.service web_app@0.service web_app@1.service"
    wanted += " web_app@2.service report.service after_report.service"
    assert value(target, "Unit", "Wants") == wanted  # not notifier: autostart = false
    assert settings(target, "Install") == [("WantedBy", "multi-user.target")]


def test_what_has_no_equivalent_is_a_comment_and_a_warning(export, tmp: Path) -> None:
    result = export(write_rich(tmp), "systemd")
    units = split_stream(result.out)
    expected = {
        "db": ["ready = { tcp = '127.0.0.1:6390' } has no systemd equivalent", "health = {"],
        "web_app": [
            "depends_on db = 'ready': systemd cannot run db's tcp readiness probe",
            "restart_with db: PartOf=",
            "backoff grows from 1s to 16s; systemd 252 waits a fixed RestartSec=",
            "ready = { http = 'http://127.0.0.1:80{replica}/health?deep=1' }",
        ],
        "report": ["ready = { log = '^done' } has no systemd equivalent"],
    }
    for service, starts in expected.items():
        unit = units.get(f"{service}.service") or units[f"{service}@.service"]
        for start in starts:
            assert any(note.startswith(start) for note in notes(unit)), (start, notes(unit))
            warning = [
                w for w in result.warnings if w.startswith(f"herdsman: warning: {service}: {start}")
            ]
            assert len(warning) == 1, (start, result.warnings)
    # Every warning is also a comment in its unit.
    for line in result.warnings:
        service, text = line.removeprefix("herdsman: warning: ").split(": ", 1)
        unit = units.get(f"{service}.service") or units[f"{service}@.service"]
        assert text in notes(unit)
    # Defaults the user did not write are commented, not warned about.
    assert not any("jitter" in w or "start_seconds" in w for w in result.warnings)
    assert "backoff.jitter = 0.1 has no systemd equivalent" in notes(units["db.service"])


def test_env_file_systemd_reads_differently_is_written_inline(export, tmp: Path) -> None:
    (tmp / "quoted.env").write_text('export A=1\nB="two words"  # note\n')
    (tmp / "plain.env").write_text("A=1\nB=2\n")
    (tmp / "herdsman.toml").write_text(
        "[services.quoted]\ncommand = 'sleep 1'\nenv_file = 'quoted.env'\n"
        "[services.overridden]\ncommand = 'sleep 1'\nenv_file = 'plain.env'\nenv = { B = '3' }\n"
        "[services.same]\ncommand = 'sleep 1'\nenv_file = 'plain.env'\nenv = { B = '2', C = 'x' }\n"
    )
    result = export(tmp / "herdsman.toml", "systemd")
    units = split_stream(result.out)
    quoted = units["quoted.service"]
    assert values(quoted, "Service", "EnvironmentFile") == []
    assert values(quoted, "Service", "Environment")[3:] == ['"A=1"', '"B=two words"']
    assert any("does not take `export`" in w for w in result.warnings if ": quoted: " in w)
    overridden = units["overridden.service"]
    assert values(overridden, "Service", "EnvironmentFile") == []
    assert values(overridden, "Service", "Environment")[3:] == ['"A=1"', '"B=3"']
    assert any("systemd would let the file win" in w for w in result.warnings)
    same = units["same.service"]
    assert value(same, "Service", "EnvironmentFile") == str(tmp / "plain.env")
    assert values(same, "Service", "Environment")[3:] == ['"C=x"']
    # systemd only takes shell variable names; others are left out, with a warning
    (tmp / "herdsman.toml").write_text("[services.s]\ncommand = 'sleep 1'\nenv = { 'A.B' = '1' }\n")
    result = export(tmp / "herdsman.toml", "systemd")
    assert "A.B" not in split_stream(result.out)["s.service"].split("[Unit]")[1]
    assert any("'A.B' is left out" in w for w in result.warnings)


def test_program_is_resolved_on_path_or_warned_about(
    export, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp / "tools"
    bin_dir.mkdir()
    (bin_dir / "mytool").write_text("#!/bin/sh\n")
    (bin_dir / "mytool").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (tmp / "herdsman.toml").write_text(
        "[services.a]\ncommand = 'mytool --flag'\n"
        "[services.b]\ncommand = 'no-such-tool-here x'\n"
        r"""[services.c]
command = ["sleep", "a b", "", "q\"uote", "back\\slash", ";", "tab\there"]
"""
    )
    result = export(tmp / "herdsman.toml", "systemd")
    units = split_stream(result.out)
    assert value(units["a.service"], "Service", "ExecStart") == f"{bin_dir}/mytool --flag"
    assert value(units["b.service"], "Service", "ExecStart") == "no-such-tool-here x"
    assert any("'no-such-tool-here' is not on this machine's PATH" in w for w in result.warnings)
    sleep = shutil.which("sleep", path="/usr/bin:/bin")
    assert value(units["c.service"], "Service", "ExecStart") == (
        f'{sleep} "a b" "" "q\\"uote" "back\\\\slash" ";" "tab\\there"'
    )
    # systemd 252 reads those quotes and escapes without a complaint
    export(tmp / "herdsman.toml", "systemd", "-o", str(tmp / "units"))
    assert systemd_verify([tmp / "units" / "a.service", tmp / "units" / "c.service"]) == ""


def test_stdout_without_o_and_names(export, tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        "[services.s]\ncommand = 'sleep 1'\nreplicas = 2\n"
        "[services.one]\ncommand = 'sleep 1{replica}'\nenv = { N = 'n{replica}' }\n"
    )
    result = export(tmp / "herdsman.toml", "systemd", "--name", "shop", "--prefix", "shop-")
    assert result.code == 0
    assert result.warnings == []
    units = split_stream(result.out)
    assert list(units) == ["shop-s@.service", "shop-one.service", "shop-shop.target"]
    # one replica: not a template, {replica} is 0 as in herdsman
    assert value(units["shop-one.service"], "Service", "ExecStart").endswith("/sleep 10")
    assert values(units["shop-one.service"], "Service", "Environment")[-1] == '"N=n0"'
    assert "%i" not in units["shop-one.service"]
    assert value(units["shop-s@.service"], "Unit", "PartOf") == "shop-shop.target"
    assert value(units["shop-shop.target"], "Unit", "Wants") == (
        "shop-s@0.service shop-s@1.service shop-one.service"
    )
    assert result.out.startswith("# --- file: shop-s@.service\n# Generated by `herdsman export")


def test_errors_are_one_sentence_and_exit_2(export, tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text("[services.s]\ncommand = 'sleep 1'\nrestart = 'sometimes'\n")
    result = export(tmp / "herdsman.toml", "systemd")
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("herdsman: ")
    assert "services.s.restart" in result.err
    (tmp / "herdsman.toml").write_text("[services.s]\ncommand = 'sleep 1'\n")
    (tmp / "file").write_text("")
    result = export(tmp / "herdsman.toml", "systemd", "-o", str(tmp / "file"))
    assert result.code == 2
    assert result.err.startswith(f"herdsman: cannot write to {tmp}/file")
    assert len(result.err.splitlines()) == 1
    with pytest.raises(SystemExit) as exited:
        export(tmp / "herdsman.toml", "openrc")
    assert exited.value.code == 2
