"""JSON for the client commands, by the C functions under the `json` package.

`import json` compiles json's regular expressions, which loads `re` and `enum`:
30M instructions, more than the rest of `herdsman status` at 50 instances beyond
the interpreter's own start-up. `_json` (what json.loads and json.dumps call when
no option asks for more) decodes and encodes the same without them;
tests/cli/test_cjson.py holds these two to json.loads and json.dumps.
"""

from __future__ import annotations

import _json

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


class _Defaults:
    """What the scanner reads of a json.JSONDecoder: json.loads' defaults (NaN and
    Infinity become the floats json.loads makes of them)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float


# typeshed types the argument as a scanner: the C code reads these attributes of it.
_scan = _json.make_scanner(_Defaults)  # type: ignore[arg-type]


def loads(data: bytes | str) -> Any:
    """json.loads(data) for UTF-8 text; ValueError when it is not JSON."""
    text = data.decode() if isinstance(data, bytes) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError("no JSON value") from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise ValueError("data after the JSON value")
    return value


def dumps(value: Any, *, ensure_ascii: bool = True) -> str:
    """json.dumps(value, ensure_ascii=ensure_ascii)."""
    quote = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    if isinstance(value, str):  # the encoder takes the other kinds of value
        return quote(value)
    # json.dumps' other defaults: a fresh dict of the containers being encoded (to
    # refuse a cycle), no indent, its separators, keys unsorted, none skipped, NaN.
    encode = _json.make_encoder({}, _unserializable, quote, None, ": ", ", ", False, False, True)
    return "".join(encode(value, 0))


def _unserializable(value: object) -> None:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
