"""`herdsman export` as a user types it: a YAML config, stdout for the files only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.export.conftest import split_stream, value

HERDSMAN = [sys.executable, "-m", "herdsman"]

YAML_CONFIG = """\
services:
  cache:
    command: sleep 100
    kubernetes:
      image: "busybox:1.36"
    ready:
      notify: true
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HERDSMAN, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HERDSMAN_CONFIG": "herdsman.yaml"},
    )


def test_yaml_config_through_the_real_command(tmp: Path) -> None:
    (tmp / "herdsman.yaml").write_text(YAML_CONFIG)
    systemd = run(tmp, "export", "systemd")
    assert systemd.returncode == 0, systemd.stderr
    assert systemd.stderr == ""  # notify maps to Type=notify: nothing to warn about
    units = split_stream(systemd.stdout)
    assert value(units["cache.service"], "Service", "Type") == "notify"

    kubernetes = run(tmp, "export", "kubernetes")
    assert kubernetes.returncode == 0, kubernetes.stderr
    [deployment] = list(yaml.safe_load_all(kubernetes.stdout))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1.36"
    assert kubernetes.stderr == (
        "herdsman: warning: cache: ready = { notify = ... } (waiting for sd_notify READY=1)"
        " has no Kubernetes equivalent: the pod counts as ready once it runs\n"
    )


def test_usage_errors_exit_2(tmp: Path) -> None:
    (tmp / "herdsman.yaml").write_text(YAML_CONFIG)
    old = run(tmp, "export", "systemd", "--systemd-version", "249")
    assert (old.returncode, old.stdout) == (2, "")
    assert old.stderr == (
        "herdsman: --systemd-version 249 is older than the units allow: they are written"
        " for systemd 252 or later\n"
    )
    missing = run(tmp, "export")
    assert missing.returncode == 2
    assert "TARGET" in missing.stderr
    (tmp / "herdsman.yaml").write_text(
        "services:\n  s:\n    command: sleep 1\n    kubernetes: {}\n"
    )
    invalid = run(tmp, "export", "kubernetes", "--image", "x")
    assert (invalid.returncode, invalid.stdout) == (2, "")
    assert "services.s.kubernetes.image" in invalid.stderr
