"""`${VAR}` interpolation: defaults, `$$`, untouched `$VAR`, and what fails."""

from __future__ import annotations

import pytest

from herdsman.config.interpolate import expand, interpolate

ENV = {"PORT": "8000", "HOST": "db", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("--port ${PORT}", "--port 8000"),
        ("${HOST}:${PORT}", "db:8000"),
        ("${MISSING:-5432}", "5432"),
        ("${PORT:-1}", "8000"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${MISSING:-a b:c}", "a b:c"),
        ("${EMPTY}", ""),
        ("cost: $$5", "cost: $5"),
        ("$${PORT}", "${PORT}"),
        ("$$$$", "$$"),
        ("echo $HOME $1 $", "echo $HOME $1 $"),
        ("awk '{print $1}'", "awk '{print $1}'"),
        ('{"json": true}', '{"json": true}'),
        ("{replica}", "{replica}"),
    ],
)
def test_expand(text: str, expanded: str) -> None:
    assert expand(text, ENV) == (expanded, [])


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("${NOPE}", ["${NOPE} is not set and has no default"]),
        ("${A}-${B}", ["${A} is not set and has no default", "${B} is not set and has no default"]),
        ("${1X}", ["'${1X}' is not a valid reference (use ${VAR} or ${VAR:-default})"]),
        ("${}", ["'${}' is not a valid reference (use ${VAR} or ${VAR:-default})"]),
        ("${PORT:5}", ["'${PORT:5}' is not a valid reference (use ${VAR} or ${VAR:-default})"]),
        ("x ${PORT", ["'${' has no closing '}' (write $$ for a literal $)"]),
    ],
)
def test_expand_problems(text: str, problems: list[str]) -> None:
    assert expand(text, ENV)[1] == problems


def test_interpolate_walks_values_not_keys_and_names_the_path() -> None:
    data = {
        "services": {
            "web": {
                "command": ["serve", "--port", "${PORT}", "${NOPE}"],
                "env": {"${HOST}": "${HOST}", "N": 3},
                "autostart": True,
            }
        }
    }
    out, problems = interpolate(data, ENV)
    assert out == {
        "services": {
            "web": {
                "command": ["serve", "--port", "8000", ""],
                "env": {"${HOST}": "db", "N": 3},
                "autostart": True,
            }
        }
    }
    assert problems == [
        (("services", "web", "command", 3), "${NOPE} is not set and has no default")
    ]
