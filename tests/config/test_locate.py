"""The TOML line locator: tables, dotted keys, inline tables, arrays, tricky strings."""

from __future__ import annotations

import tomllib

from herdsman.config.locate import line_of, toml_lines

TEXT = """\
# comment [services.fake]
title = "x" # [not.a.table]

[services.web]
command = \"\"\"
[services.fake]
restart = "never"
\"\"\"
"quoted key" = 1
'single' = 'a # b'
backoff = { initial = "1s", max = { deep = 1 } }
depends_on = [
    "db",   # comment, ]
    'cache',
]
env.A = "1"
env . "B" = "2"

[ services . "my db" ]
cmd = '''
x = 1
'''

[[things]]
a = 1
[[things]]
a = 2
"""


def test_lines_of_every_kind_of_key() -> None:
    tomllib.loads(TEXT)  # the locator only ever sees valid TOML
    lines = toml_lines(TEXT)
    assert lines[("title",)] == 2
    assert lines[("services",)] == 4
    assert lines[("services", "web")] == 4
    assert lines[("services", "web", "command")] == 5
    assert ("services", "fake") not in lines
    assert ("services", "web", "restart") not in lines
    assert lines[("services", "web", "quoted key")] == 9
    assert lines[("services", "web", "single")] == 10
    assert lines[("services", "web", "backoff", "max")] == 11
    assert lines[("services", "web", "backoff", "max", "deep")] == 11
    assert lines[("services", "web", "depends_on")] == 12
    assert lines[("services", "web", "depends_on", 0)] == 13
    assert lines[("services", "web", "depends_on", 1)] == 14
    assert lines[("services", "web", "env", "A")] == 16
    assert lines[("services", "web", "env", "B")] == 17
    assert lines[("services", "my db")] == 19
    assert lines[("services", "my db", "cmd")] == 20
    assert ("x",) not in lines
    assert lines[("things", 0, "a")] == 25
    assert lines[("things", 1, "a")] == 27


def test_missing_keys_fall_back_to_their_table() -> None:
    lines = toml_lines(TEXT)
    assert line_of(lines, ("services", "web", "stop_signal")) == 4
    assert line_of(lines, ("services", "web", "backoff", "factor")) == 11
    assert line_of(lines, ("nowhere",)) is None
    assert line_of(lines, ()) is None


def test_a_text_it_cannot_follow_keeps_what_it_found() -> None:
    assert toml_lines('a = 1\nb = "unterminated') == {("a",): 1, ("b",): 2}
