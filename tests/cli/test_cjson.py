"""cli/cjson.py decodes and encodes as json.loads and json.dumps do (it calls the C
functions under them, without `json`'s import), and the client's percent-encoding
writes what urllib.parse writes."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote as url_quote
from urllib.parse import quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herdsman.cli import cjson
from herdsman.cli.client import quote

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(VALUES, st.sampled_from([None, 2]), st.booleans())
def test_loads_reads_what_json_writes(value: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    assert cjson.loads(text) == json.loads(text)
    assert cjson.loads(f" \n{text}\r\n\t".encode()) == json.loads(text)


@settings(max_examples=500, deadline=None)
@given(VALUES, st.booleans())
def test_dumps_writes_what_json_writes(value: Any, ascii_only: bool) -> None:
    assert cjson.dumps(value, ensure_ascii=ascii_only) == json.dumps(value, ensure_ascii=ascii_only)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='{}[]":,0123456789.eE+-tfrulnsaNIiy \n\\'))
def test_loads_refuses_what_json_refuses(text: str) -> None:
    assert _outcome(cjson.loads, text) == _outcome(json.loads, text)


def _outcome(loads: Any, text: str) -> str:
    """What `loads` makes of `text`, as text (NaN compares unequal to itself)."""
    try:
        return repr(loads(text))
    except ValueError:
        return "refused"


def test_constants_and_cycles_as_json_has_them() -> None:
    assert repr(cjson.loads("[NaN, Infinity, -Infinity]")) == "[nan, inf, -inf]"
    assert cjson.dumps([math.inf, -math.inf]) == "[Infinity, -Infinity]"
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        cjson.dumps(loop)
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        cjson.dumps({"a": {1}})
    assert cjson.dumps([[1]]) == "[[1]]"  # a refused value leaves nothing behind


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_quote_writes_what_urllib_writes(text: str) -> None:
    assert quote(text) == url_quote(text, safe="")
    assert quote(text, plus=True) == quote_plus(text, safe="")
