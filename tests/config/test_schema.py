"""`herdsman schema` against a real JSON Schema validator: whatever `check` accepts
validates, and what it refuses for a reason a schema can see does not."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from herdsman.cli.main import main
from herdsman.config import ConfigError, load_config
from herdsman.config.schema import DESCRIPTIONS, config_schema

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft7Validator(config_schema())


def _parsed(text: str) -> tuple[str, Any] | None:
    """(file name, data) for a config literal, TOML or YAML; None if neither."""
    try:
        return "herdsman.toml", tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pass
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return ("herdsman.yaml", data) if isinstance(data, dict) else None


def _literals() -> list[tuple[str, str]]:
    """Every string in the test suite that looks like a config: (where, text)."""
    found = []
    for source in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = textwrap.dedent(node.value)
                if "[services." in text or "services:" in text:
                    found.append((f"{source.relative_to(ROOT)}:{node.lineno}", text))
    return found


def _accepted(tmp: Path, name: str, text: str) -> bool:
    path = tmp / name
    path.write_text(text)
    try:
        load_config(path, environ={"HOME": "/root", "PORT": "8000"})
    except ConfigError:
        return False
    finally:
        path.unlink()
    return True


def test_the_schema_is_a_draft_7_schema_and_every_key_is_described() -> None:
    schema = config_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    for name, definition in schema["definitions"].items():
        for key, prop in definition["properties"].items():
            assert prop["description"] == DESCRIPTIONS[name][key]


def test_the_example_config_validates() -> None:
    data = tomllib.loads((ROOT / "examples" / "herdsman.toml").read_text())
    assert list(VALIDATOR.iter_errors(data)) == []


def test_every_config_the_tests_write_that_check_accepts_validates(tmp: Path) -> None:
    accepted = 0
    for where, text in _literals():
        parsed = _parsed(text)
        if parsed is None or not _accepted(tmp, parsed[0], text):
            continue
        accepted += 1
        errors = [
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in VALIDATOR.iter_errors(parsed[1])
        ]
        assert errors == [], f"{where}: check accepts it, the schema does not"
    assert accepted >= 80  # the walk found the suite's configs (90 when written)


REFUSED = [
    ("an unknown key", '[services.web]\ncommand = "x"\nrestrat = "always"\n'),
    ("no command", '[services.web]\nrestart = "always"\n'),
    ("no services", '[settings]\nstate_dir = "s"\n'),
    ("a bad duration", '[services.web]\ncommand = "x"\nstop_timeout = "10 parsecs"\n'),
    ("a negative duration", '[services.web]\ncommand = "x"\nstart_seconds = -1\n'),
    ("a bad size", '[services.web]\ncommand = "x"\nmemory_limit = "lots"\n'),
    ("a bad signal", '[services.web]\ncommand = "x"\nstop_signal = "TERM!"\n'),
    ("a bad mode", '[settings]\nsocket_mode = "rw-rw----"\n[services.web]\ncommand = "x"\n'),
    ("a bad restart", '[services.web]\ncommand = "x"\nrestart = "sometimes"\n'),
    ("no replicas", '[services.web]\ncommand = "x"\nreplicas = 0\n'),
    ("an empty command", "[services.web]\ncommand = []\n"),
    ("a bad name", '[services."web app"]\ncommand = "x"\n'),
    (
        "a bad condition",
        '[services.a]\ncommand = "x"\ndepends_on = { b = "done" }\n[services.b]\ncommand = "y"\n',
    ),
    ("a bad hook state", '[services.web]\ncommand = "x"\n[[hooks]]\non = "exploded"\nexec = "y"\n'),
    ("a watch that is not a list", '[services.web]\ncommand = "x"\nwatch = 3\n'),
    (
        "two kinds of probe",
        '[services.web]\ncommand = "x"\nready = { tcp = "h:1", http = "http://h" }\n',
    ),
    ("a hook of no kind", '[services.web]\ncommand = "x"\n[[hooks]]\non = "failed"\n'),
    ("tcp without a token", '[settings]\ntcp = "127.0.0.1:9900"\n[services.web]\ncommand = "x"\n'),
    ("a bad backoff factor", '[services.web]\ncommand = "x"\nbackoff = { factor = 0.5 }\n'),
]


@pytest.mark.parametrize(("why", "text"), REFUSED, ids=[why for why, _ in REFUSED])
def test_what_check_refuses_for_its_shape_does_not_validate(why: str, text: str, tmp: Path) -> None:
    assert not _accepted(tmp, "herdsman.toml", text)
    assert list(VALIDATOR.iter_errors(tomllib.loads(text))) != []


def test_the_command_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == config_schema()


def test_empty_yaml_sections_validate(tmp: Path) -> None:
    text = "settings:\nhooks:\nservices:\n  web:\n    command: [sleep, '1']\n    ready:\n"
    assert _accepted(tmp, "herdsman.yaml", text)
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []


def _taplo(tmp: Path, texts: list[str]) -> list[bool]:
    """Whether Taplo (the linter behind the TOML editor plugins) finds each config valid
    against `herdsman schema`, named by the first line the README gives."""
    taplo = shutil.which("taplo") or str(Path(sys.executable).parent / "taplo")
    (tmp / "herdsman.schema.json").write_text(json.dumps(config_schema()))
    verdicts = []
    for i, text in enumerate(texts):
        config = tmp / f"c{i}.toml"
        config.write_text("#:schema ./herdsman.schema.json\n" + text)
        proc = subprocess.run(
            [taplo, "lint", "--no-auto-config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp,
        )
        assert proc.returncode in (0, 1), proc.stderr
        verdicts.append(proc.returncode == 0)
    return verdicts


def test_taplo_accepts_the_example_and_what_check_accepts_and_refuses_the_rest(
    tmp: Path,
) -> None:
    accepted = [(ROOT / "examples" / "herdsman.toml").read_text()]
    for _, text in _literals():
        parsed = _parsed(text)
        if (
            parsed is not None
            and parsed[0] == "herdsman.toml"
            and _accepted(tmp, *parsed[:1], text)
        ):
            accepted.append(text)
    assert len(accepted) >= 50  # the walk found the suite's TOML configs
    assert _taplo(tmp, accepted) == [True] * len(accepted)
    refused = [text for _, text in REFUSED]
    assert _taplo(tmp, refused) == [False] * len(refused)
