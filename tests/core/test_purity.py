"""core stays pure: it imports nothing of the outer layers and nothing that does I/O.

The check reads the source of every module in herdsman/core as an AST, so an import
inside a function or behind `if TYPE_CHECKING` is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import herdsman.core

CORE = Path(herdsman.core.__file__).parent
MODULES = sorted(CORE.rglob("*.py"))

# Clocks, processes, sockets, threads and event loops belong to the runtime. `signal`
# is allowed: core names signals by number.
FORBIDDEN = {
    "asyncio",
    "os",
    "time",
    "subprocess",
    "socket",
    "select",
    "selectors",
    "threading",
    "multiprocessing",
    "random",
    "importlib",
}


def imported_modules(source: str, package: str) -> list[str]:
    """Absolute names of every module `source` imports, as if it lived in `package`."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                if not node.module:
                    names += [f"{base}.{alias.name}" for alias in node.names]
                    continue
            else:
                module = node.module or ""
            names.append(module)
    return names


def outside_core(name: str) -> bool:
    return name.split(".")[0] == "herdsman" and name.split(".")[:2] != ["herdsman", "core"]


def impurities(source: str, package: str = "herdsman.core") -> list[str]:
    return [
        name
        for name in imported_modules(source, package)
        if name.split(".")[0] in FORBIDDEN or outside_core(name)
    ]


def test_core_has_modules() -> None:
    assert {p.name for p in MODULES} >= {"__init__.py", "lifecycle.py", "graph.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    package = "herdsman.core"
    for part in path.relative_to(CORE).parent.parts:
        package += f".{part}"
    assert impurities(path.read_text(), package) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import time as clock",
        "from asyncio import sleep",
        "from subprocess import Popen",
        "import socket",
        "def f():\n    import time\n",
        "from herdsman.runtime import supervisor",
        "from herdsman import cli",
        "from .. import runtime",
        "from ..config.models import Service",
        "import herdsman.api",
    ],
)
def test_the_check_catches_impure_imports(source: str) -> None:
    assert impurities(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import signal",
        "from dataclasses import dataclass",
        "from herdsman.core.graph import Condition",
        "from . import graph",
        "from .lifecycle import Policy",
        "import herdsman.core.lifecycle",
    ],
)
def test_the_check_allows_pure_imports(source: str) -> None:
    assert impurities(source) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_dataclass_in_core_has_a_docstring(path: Path) -> None:
    # Without one, @dataclass makes one from inspect.signature at import: the core is
    # imported before `up` spawns anything, so that would be start-up time.
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and any(
            "dataclass" in ast.unparse(decorator) for decorator in node.decorator_list
        ):
            assert ast.get_docstring(node), f"{path.name}: {node.name} has no docstring"
