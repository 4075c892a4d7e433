"""Pydantic's validation errors rewritten as one plain sentence each, by key path.

Users see `services.web.restart: must be one of always, on-failure, never, not
'alwys'`, never pydantic's own wording, type names or documentation links.
"""

from __future__ import annotations

import re
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from herdsman.config.errors import Loc
from herdsman.config.models import Config
from herdsman.config.units import show_value

# Fields filled in by the loader, not written by users, so never suggested.
_NOT_FROM_FILE = {"path", "name"}

_TYPE_NAMES = {
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "string_type": "a string",
    "list_type": "a list",
    "path_type": "a path (a string)",
}
_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}
_TABLE_TYPES = {"dict_type", "model_type", "model_attributes_type"}


def describe(error: ErrorDetails, table_word: str) -> tuple[Loc, str]:
    """The key path and sentence for one pydantic error.

    `table_word` is what the file format calls a mapping ("table" in TOML).
    """
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    given = show_value(error["input"])
    if kind == "value_error":
        if loc[:1] == ("services",) and loc[2:] == ("name",):
            # The name is the table's key, not a key the user wrote.
            loc = loc[:2]
        return loc, str(ctx["error"])
    if kind == "missing":
        return loc, "is required"
    if kind == "extra_forbidden":
        return loc, "unknown key" + did_you_mean(str(loc[-1]), _known_keys(loc[:-1]))
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
        return loc, f"must be one of {choices}, not {given}"
    if kind in _TYPE_NAMES:
        return loc, f"must be {_TYPE_NAMES[kind]}, not {given}"
    if kind in ("string_too_short", "too_short"):
        return loc, "must not be empty"
    if kind in _TABLE_TYPES:
        return loc, f"must be a {table_word}, not {given}"
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return loc, f"must be {words} {ctx[key]:g}, not {given}"
    return loc, error["msg"][:1].lower() + error["msg"][1:]


def did_you_mean(word: str, candidates: list[str]) -> str:
    """` (did you mean 'restart'?)` when a candidate is close to `word`, else ``."""
    import difflib  # only for a config with a mistake: not before a valid one's spawns

    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(loc: Loc) -> list[str]:
    """The keys the table at `loc` accepts, found by walking the models' annotations."""
    annotation: Any = Config
    for part in loc:
        model = _model_in(annotation)
        if model is not None:
            field = model.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
        else:
            return []
    model = _model_in(annotation)
    if model is None:
        return []
    return [name for name in model.model_fields if name not in _NOT_FROM_FILE]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model in `Model` or `Model | None`, else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        models = [_model_in(arg) for arg in get_args(annotation)]
        return next((model for model in models if model is not None), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
