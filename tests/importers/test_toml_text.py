"""The TOML writer: whatever text goes in comes back out of herdsman's loader unchanged."""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from herdsman.config.importers.toml_text import Document, Table, escape_interpolation, key, value
from herdsman.config.interpolate import expand

texts = st.text(alphabet=st.sampled_from("$${}ab :-\\\"'\n\t#é"), max_size=40) | st.text(
    max_size=40
)


@given(texts)
def test_escaped_text_expands_to_itself(text: str) -> None:
    assert expand(escape_interpolation(text), {}) == (text, [])


@given(st.dictionaries(texts, texts | st.integers() | st.booleans(), max_size=4), texts)
def test_tables_and_comments_round_trip(env: dict[str, object], note: str) -> None:
    table = Table("services.x")
    table.note(note)
    table.set("env", env, note)
    table.set("command", "a b")
    doc = Document()
    doc.note(note)
    doc.tables.append(table)
    assert tomllib.loads(doc.render()) == {"services": {"x": {"env": env, "command": "a b"}}}


def test_keys_are_bare_when_they_can_be() -> None:
    assert key("web-1_a") == "web-1_a"
    assert key("a.b") == '"a.b"'
    assert value({"A": "1", "b c": True}) == '{ A = "1", "b c" = true }'
    assert value({}) == "{}"
