"""env_file parsing: the dotenv forms people keep in `.env`."""

from __future__ import annotations

import pytest

from herdsman.config.envfile import parse_env_file


def test_forms() -> None:
    text = "\n".join(
        [
            "# a comment",
            "",
            "PLAIN=value",
            "SPACED = padded value  ",
            "export EXPORTED=yes",
            'DOUBLE="line\\nbreak \\"q\\" \\\\ $HOME"',
            "COMMENTED=abc # trailing",
            "HASH=abc#def",
            "QUOTED_COMMENT='x y' # note",
            "EMPTY=",
            "EQUALS=a=b=c",
            "  INDENTED=1",
            "PLAIN=last wins",
        ]
    )
    assert parse_env_file(text, ".env") == {
        "PLAIN": "last wins",
        "SPACED": "padded value",
        "EXPORTED": "yes",
        "DOUBLE": 'line\nbreak "q" \\ $HOME',
        "COMMENTED": "abc",
        "HASH": "abc#def",
        "QUOTED_COMMENT": "x y",
        "EMPTY": "",
        "EQUALS": "a=b=c",
        "INDENTED": "1",
    }


def test_single_quotes_are_literal() -> None:
    assert parse_env_file("A='$HOME \\n'", ".env") == {"A": "$HOME \\n"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("OK=1\njust words", ".env line 2: expected KEY=VALUE, not 'just words'"),
        ("=value", ".env line 1: expected KEY=VALUE, not '=value'"),
        ("BAD KEY=1", ".env line 1: expected KEY=VALUE, not 'BAD KEY=1'"),
        ('A="open', '.env line 1: the value of A has no closing "'),
        ("A='x' y", ".env line 1: unexpected 'y' after the quoted value of A"),
    ],
)
def test_bad_lines(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_env_file(text, ".env")
    assert str(caught.value) == message
