"""The seven states have one home, core/states.py: nothing else spells them all out
(the hook settings' Literal, which a type checker needs written out, is held to it)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import herdsman
from herdsman.cli import table
from herdsman.cli.top import app
from herdsman.config.models import HookState
from herdsman.core.states import State

SRC = Path(herdsman.__file__).parent
NAMES = {state.value for state in State}


def spelled_out(source: str) -> int:
    """How many collections (tuple, list, set, dict keys, subscript) in `source`
    name every state as a string literal."""
    found = 0
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            items: list[ast.expr | None] = list(node.keys)
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = list(node.elts)
        else:
            continue
        strings = {i.value for i in items if isinstance(i, ast.Constant)}
        found += strings >= NAMES
    return found


def test_no_module_but_the_states_home_spells_out_every_state() -> None:
    allowed = {SRC / "config" / "models.py": 1}  # HookState, held to State below
    offenders = {
        str(path.relative_to(SRC)): n
        for path in sorted(SRC.rglob("*.py"))
        if (n := spelled_out(path.read_text())) != allowed.get(path, 0)
    }
    assert offenders == {}


def test_the_hook_states_are_the_states_in_their_order() -> None:
    assert get_args(HookState) == tuple(state.value for state in State)


def test_every_state_has_a_colour_in_the_table_and_in_top() -> None:
    assert set(table.STATE_COLOURS) == set(State)
    assert set(app.STATE_STYLES) == set(State)


def test_the_enum_is_made_of_the_names_in_their_home() -> None:
    from herdsman.core import statenames

    names = {k: v for k, v in vars(statenames).items() if k.isupper()}
    assert {state.name: state.value for state in State} == names
