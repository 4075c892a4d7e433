"""Config input that could exhaust `check`: each is refused with exit 2, one sentence
and the key path, by the real CLI under a memory limit and a deadline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from herdsman.config.limits import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES
from herdsman.config.models import MAX_REPLICAS
from tests.config.conftest import WriteConfig
from tests.config.helpers import load

# Far more than a refusal needs, far less than an expansion of any of these inputs.
MEMORY = 512 * 1024 * 1024
DEADLINE = 60.0


def run(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["prlimit", f"--as={MEMORY}", sys.executable, "-m", "herdsman", "-c", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )


def refused(config: Path, *argv: str) -> str:
    """The one line `check` (or `argv`) prints for `config`, which it must refuse."""
    result = run(config, *(argv or ("check",)))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def alias_bomb(levels: int) -> str:
    """`levels` lists of 10 aliases to the list before: 10**levels strings, in 500 bytes."""
    anchors = ['      x0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for level in range(1, levels + 1):
        aliases = ",".join([f"*a{level - 1}"] * 10)
        anchors.append(f"      x{level}: &a{level} [{aliases}]")
    return "services:\n  web:\n    command: sleep 1\n    env:\n" + "\n".join(anchors) + "\n"


def test_yaml_alias_bomb_is_refused_without_expanding_it(write: WriteConfig) -> None:
    config = write(alias_bomb(7), "herdsman.yaml")
    assert len(config.read_bytes()) < 500
    line = refused(config)
    assert line.startswith("herdsman: herdsman.yaml:12: services.web.env.x7: YAML aliases expand")
    assert f"at most {MAX_ALIAS_VALUES:,} may come from aliases" in line


def test_yaml_aliases_within_the_budget_still_work(write: WriteConfig) -> None:
    """Merges and shared lists, the reason YAML has aliases, are not affected."""
    config = write(
        """\
        services:
          web: &base {command: &cmd [sleep, "1"], env: &env {A: "1", B: "2"}}
          api: {<<: *base, replicas: 2}
          job: {command: *cmd, env: *env}
        """,
        "herdsman.yaml",
    )
    services = load(config).services
    assert services["api"].env["A"] == "1"
    assert services["api"].command == ["sleep", "1"]
    assert services["job"].env == {"A": "1", "B": "2"}


def test_yaml_alias_that_contains_itself_is_refused(write: WriteConfig) -> None:
    config = write(
        """\
        services:
          web:
            command: sleep 1
            hooks: &loop [{on: [failed], exec: [*loop]}]
        """,
        "herdsman.yaml",
    )
    assert refused(config) == (
        "herdsman: herdsman.yaml:4: services.web.hooks[0].exec[0]: refers to itself through an alias"
    )


@pytest.mark.parametrize("suffix", ["toml", "yaml"])
def test_deep_nesting_is_refused(write: WriteConfig, suffix: str) -> None:
    # TOML 1,000 deep overflowed Python's stack; libyaml refuses 1,000 itself, but not 900.
    depth = 1000 if suffix == "toml" else 900
    deep = "[" * depth + "]" * depth
    text = (
        f'[services.web]\ncommand = "sleep 1"\n[services.web.ready]\nplugin = "x"\noptions = {{a = {deep}}}\n'
        if suffix == "toml"
        else f"services:\n  web:\n    command: sleep 1\n    ready:\n      options: {{a: {deep}}}\n"
    )
    config = write(text, f"herdsman.{suffix}")
    line = refused(config)
    where = "herdsman.toml:5" if suffix == "toml" else "herdsman.yaml:5"
    assert line.startswith(f"herdsman: {where}: services.web.ready.options.a[0][0]"), line
    assert line.endswith(f": is nested more than {MAX_DEPTH} levels deep"), line


def test_dotted_keys_nest_too(write: WriteConfig) -> None:
    config = write('[services.web]\ncommand = "sleep 1"\n' + "x." * 1000 + "y = 1\n")
    line = refused(config)
    assert line.startswith("herdsman: herdsman.toml:3: services.web.x.x.x"), line
    assert line.endswith(f"is nested more than {MAX_DEPTH} levels deep"), line


def test_an_endless_config_file_is_read_only_up_to_the_limit(write: WriteConfig) -> None:
    config = write("")
    with config.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    assert refused(config) == (
        f"herdsman: herdsman.toml: the config file is larger than {MAX_FILE_BYTES // 2**20} MiB"
    )


@pytest.mark.parametrize("command", ["check", "up"])
def test_replicas_have_a_maximum(write: WriteConfig, command: str) -> None:
    config = write(
        """\
        [settings]
        state_dir = "s"

        [services.web]
        command = "sleep 100"
        replicas = 1000000000
        """
    )
    assert refused(config, command) == (
        f"herdsman: herdsman.toml:6: services.web.replicas: must be at most {MAX_REPLICAS},"
        " not 1000000000"
    )
    assert not (config.parent / "s" / "state.json").exists()


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[services.web]\ncommand = "sleep\\u0000 1"\n', "herdsman.toml:2: services.web.command"),
        (
            '[services.web]\ncommand = ["sleep", "1"]\nenv = { A = "a\\u0000b" }\n',
            "herdsman.toml:3: services.web.env.A",
        ),
        (
            '[services.web]\ncommand = ["sleep", "1"]\ncwd = "/tmp\\u0000"\n',
            "herdsman.toml:3: services.web.cwd",
        ),
    ],
)
def test_nul_bytes_are_config_errors(write: WriteConfig, text: str, where: str) -> None:
    config = write(text)
    assert refused(config) == (
        f"herdsman: {where}: contains a NUL byte, which no command, path or environment"
        " variable can hold"
    )


def test_nul_byte_in_a_yaml_env_key(write: WriteConfig) -> None:
    config = write(
        'services:\n  web:\n    command: sleep 1\n    env: {"A\\0B": "1"}\n', "herdsman.yaml"
    )
    assert refused(config) == (
        "herdsman: herdsman.yaml:4: services.web.env: has a key with a NUL byte in it"
    )
