"""The README's "How it is built" names every module of the package with its job
(issue 12): a module added without a line there fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "herdsman"


def test_every_module_is_named_in_how_it_is_built() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## How it is built\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(?:[\w/]+/)?(\w+\.py)`", section))
    modules = {
        path.name
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    assert len(modules) > 90  # the package, not an empty directory
    assert sorted(modules - named) == []
