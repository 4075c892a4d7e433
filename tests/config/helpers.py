"""Loading a config in tests: the Config, or the errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from herdsman.config import Config, ConfigError, load_config


def load(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    return load_config(path, {} if environ is None else environ)


def errors(path: Path, environ: Mapping[str, str] | None = None) -> list[str]:
    """The errors loading `path` raises (the test fails if it loads)."""
    with pytest.raises(ConfigError) as caught:
        load(path, environ)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors
