"""Running the importers on the fixtures, and reading what they print back."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from herdsman.cli.main import main
from herdsman.config import Config, load_config
from herdsman.config.importers import Imported
from herdsman.config.importers.procfile import import_procfile
from herdsman.config.importers.supervisord import import_supervisord

FIXTURES = Path(__file__).parent / "fixtures"


def supervisord(path: Path) -> tuple[dict[str, Any], Imported]:
    result = import_supervisord(path)
    return tomllib.loads(result.toml), result


def procfile(path: Path, port: int | None = None) -> tuple[dict[str, Any], Imported]:
    result = import_procfile(path, port)
    return tomllib.loads(result.toml), result


def write_and_load(result: Imported, dir: Path, environ: dict[str, str] | None = None) -> Config:
    """The imported text saved as dir/herdsman.toml, loaded and validated as herdsman does."""
    path = dir / "herdsman.toml"
    path.write_text(result.toml)
    return load_config(path, environ if environ is not None else {})


def check(result: Imported, dir: Path) -> int:
    """`herdsman -c dir/herdsman.toml check` on the imported text; its exit code."""
    path = dir / "herdsman.toml"
    path.write_text(result.toml)
    return main(["-c", str(path), "check"])
