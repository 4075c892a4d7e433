"""The spawner finds a program on PATH as shutil.which does, without loading shutil."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from herdsman.runtime.spawn import which


@pytest.fixture
def bins(tmp: Path) -> Path:
    for name, mode in (
        ("a/tool", 0o755),
        ("a/plain", 0o644),
        ("b/plain", 0o755),
        ("b/tool", 0o755),
    ):
        path = tmp / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    (tmp / "a" / "dir").mkdir(mode=0o755)  # executable, but no program
    (tmp / "b" / "dir").write_text("#!/bin/sh\n")
    (tmp / "b" / "dir").chmod(0o755)
    return tmp


@pytest.mark.parametrize("program", ["tool", "plain", "dir", "missing"])
@pytest.mark.parametrize(
    "order", [["a", "b"], ["b", "a"], ["a", "", "a", "b"], ["missing", "b"], ["a"]]
)
def test_as_shutil_which(bins: Path, program: str, order: list[str]) -> None:
    search_path = os.pathsep.join(str(bins / d) if d else "" for d in order)
    assert which(program, search_path) == shutil.which(program, path=search_path)
