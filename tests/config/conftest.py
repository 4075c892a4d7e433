"""Fixtures for config tests: a config file written into a short temp dir we run in."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

WriteConfig = Callable[..., Path]


@pytest.fixture
def write(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> WriteConfig:
    """Write a dedented config file into `tmp` (also the cwd, so errors say its name)."""
    monkeypatch.chdir(tmp)

    def write_config(text: str, name: str = "herdsman.toml") -> Path:
        path = tmp / name
        path.write_text(textwrap.dedent(text))
        return path

    return write_config
