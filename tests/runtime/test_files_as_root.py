"""Files as root: a symlink planted by another user in a directory it can write never
makes herdsman write elsewhere; state_dir is private, and one others can write (or
another user's) is refused unless the config says it is shared; a token file
others can read is refused."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.e2e.helpers import free_port, herdsman, instances

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser (to plant symlinks as another user)",
)

SERVICE = """
[services.web]
command = ["sh", "-c", "while :; do echo line; sleep 0.05; done"]
start_seconds = "0.1s"
"""


@pytest.fixture(autouse=True)
def reachable(tmp: Path) -> None:
    tmp.chmod(0o755)  # nobody must reach the directories inside


def as_nobody(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", *argv], check=True)


def secret(path: Path) -> Path:
    path.write_text("root's own\n")
    path.chmod(0o600)
    return path


def test_a_symlink_planted_in_a_shared_log_dir_is_not_followed(tmp: Path) -> None:
    shared = tmp / "shared"
    shared.mkdir()
    # Anyone may create files in it (not sticky: fs.protected_symlinks does not apply).
    shared.chmod(0o777)
    victim = secret(tmp / "victim")
    as_nobody("ln", "-s", str(victim), str(shared / "web.log"))
    (tmp / "herdsman.toml").write_text(f'[settings]\nlog_dir = "{shared}"\n' + SERVICE)
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    try:
        wait_for(lambda: "cannot write" in instances(tmp)["web"]["message"], timeout=10)
        web = instances(tmp)["web"]
        assert web["state"] == "running"  # the service keeps running
        assert "Too many levels of symbolic links" in web["message"]
    finally:
        assert herdsman(tmp, "down").returncode == 0
    assert victim.read_text() == "root's own\n"
    assert oct(victim.stat().st_mode & 0o777) == "0o600"


def test_a_symlink_planted_as_the_state_temporary_is_replaced_not_followed(tmp: Path) -> None:
    state_dir = tmp / "state"
    state_dir.mkdir()
    state_dir.chmod(0o777)
    victim = secret(tmp / "victim")
    as_nobody("ln", "-s", str(victim), str(state_dir / "state.json.tmp"))
    as_nobody("ln", "-s", str(victim), str(state_dir / "state.journal"))
    (tmp / "herdsman.toml").write_text(
        f'[settings]\nstate_dir = "{state_dir}"\nallow_shared_state_dir = true\n' + SERVICE
    )
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    try:
        state = state_dir / "state.json"
        wait_for(state.exists)
        assert state.stat().st_uid == 0
        assert not state.is_symlink()
        assert oct(state.stat().st_mode & 0o777) == "0o600"
    finally:
        assert herdsman(tmp, "down").returncode == 0
    assert victim.read_text() == "root's own\n"


def test_state_dir_is_created_private_and_a_shared_one_is_refused(tmp: Path) -> None:
    (tmp / "herdsman.toml").write_text(SERVICE)
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    assert herdsman(tmp, "down").returncode == 0
    state_dir = tmp / ".herdsman"
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700

    state_dir.chmod(0o777)
    refused = herdsman(tmp, "up", "-d")
    assert refused.returncode == 1
    assert (
        f"state_dir {state_dir} can be written by its group and others (mode 0777): "
        "chmod go-w it, or set settings.allow_shared_state_dir = true" in refused.stderr
    )
    state_dir.chmod(0o700)
    os.chown(state_dir, 65534, -1)  # nobody's
    refused = herdsman(tmp, "up", "-d")
    assert refused.returncode == 1
    assert f"state_dir {state_dir} belongs to uid 65534, not to herdsman's user" in (refused.stderr)
    assert not list(tmp.glob(".herdsman/*.sock"))  # nothing was started


def test_a_token_file_others_can_read_is_refused(tmp: Path) -> None:
    token = tmp / "token"
    token.write_text("s3cret\n")
    token.chmod(0o644)
    (tmp / "herdsman.toml").write_text(
        f'[settings]\ntcp = "127.0.0.1:{free_port()}"\ntoken_file = "{token}"\n' + SERVICE
    )
    refused = herdsman(tmp, "up", "-d")
    assert refused.returncode == 1
    assert f"token_file {token} can be read by its group and others (mode 0644): chmod 600 it" in (
        refused.stderr
    )
    token.chmod(0o600)
    up = herdsman(tmp, "up", "-d", "--wait")
    assert up.returncode == 0, up.stderr
    assert herdsman(tmp, "down").returncode == 0
