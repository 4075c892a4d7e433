"""The first ten minutes with herdsman: what a new user types before reading on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from herdsman import __version__


def run(cwd: Path, *argv: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    # The config search stops at the home directory: never above the test's own.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home or cwd)}
    return subprocess.run(
        [sys.executable, "-m", "herdsman", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_version_as_an_option_and_a_command(tmp: Path) -> None:
    for argv in (["--version"], ["version"]):
        result = run(tmp, *argv)
        assert (result.returncode, result.stdout) == (0, f"herdsman {__version__}\n")


def test_a_mistyped_command_gets_a_did_you_mean(tmp: Path) -> None:
    result = run(tmp, "stauts")
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[-1]
        == "herdsman: unknown command 'stauts' (did you mean 'status'?)"
    )
    other = run(tmp, "export", "sytemd")
    assert other.returncode == 2
    assert other.stderr.splitlines()[-1].endswith("did you mean 'systemd'?")


def test_config_option_before_or_after_the_command(tmp: Path) -> None:
    (tmp / "a.toml").write_text('[services.web]\ncommand = "sleep 1"\n')
    for argv in (
        ["-c", "a.toml", "check"],
        ["check", "-c", "a.toml"],
        ["check", "--config=a.toml"],
    ):
        result = run(tmp, *argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stdout == f"{tmp / 'a.toml'}: ok (1 services, 1 instances)\n"
    missing = run(tmp, "status", "-c", "nope.toml")
    assert missing.returncode == 2
    assert missing.stderr == "herdsman: nope.toml: config file does not exist (given by -c)\n"


def test_the_config_is_found_from_a_subdirectory(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text('[services.web]\ncommand = "sleep 1"\n')
    deep = tmp / "src" / "app"
    deep.mkdir(parents=True)
    result = run(deep, "check", home=tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tmp / 'herdsman.toml'}: ok")
    status = run(deep, "status", home=tmp)
    assert status.returncode == 3  # no daemon, but the right config: it names it
    assert str(tmp / "herdsman.toml") in status.stderr


def test_check_warns_of_a_program_not_on_the_path(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(
        "[services.web]\n"
        'command = "pyhton3 -m http.server"\n'
        "[services.job]\n"
        'command = "./job.sh"\n'
        "[services.ok]\n"
        'command = "sleep 1"\n'
        "[services.sh]\n"
        "shell = true\n"
        'command = "whatever | wc -l"\n'
    )
    result = run(tmp, "check")
    assert result.returncode == 0  # a warning: the PATH may differ when it runs
    assert result.stderr.splitlines() == [
        "herdsman: warning: services.web.command: 'pyhton3' is not on the PATH"
        " (did you mean 'python3'?); it may be there when the service runs",
        f"herdsman: warning: services.job.command: ./job.sh does not exist (looked for"
        f" {tmp / 'job.sh'}); it may be there when the service runs",
    ]
