"""The line sink's log files: made by an instance's first line, not before, with the
rotation settings of the plan in force then."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from herdsman.config import load_config
from herdsman.config.plan import compile_plan
from herdsman.core.plan import Plan
from herdsman.runtime.logsink import LogSink
from herdsman.runtime.tails import Tails


def plan_of(tmp: Path, toml: str) -> Plan:
    path = tmp / "herdsman.toml"
    path.write_text(textwrap.dedent(toml))
    return compile_plan(load_config(path))


def sink_for(tmp: Path) -> LogSink:
    sink = LogSink(
        tmp / "logs.pos", Tails(), log=logging.getLogger("test"), note=lambda _level, _text: None
    )
    sink.open()
    return sink


SERVICES = """
    [settings]
    log_dir = "logs"

    [services.w]
    command = "true"
    replicas = 3
    log = {{ max_bytes = {max_bytes}, backups = 1 }}
    """


def test_an_instance_that_writes_nothing_has_no_log_file(tmp: Path) -> None:
    (tmp / "logs").mkdir()
    sink = sink_for(tmp)
    sink.track(plan_of(tmp, SERVICES.format(max_bytes=1000)))
    try:
        assert not sink._log_files  # none made before a line comes
        sink.begin_batch("w.1", "out", 0)
        sink.lines("w.1", "out", b"one\ntwo", 1.0)
        sink.end_batch("w.1")
        sink.lines("w.2", "err", b"three", 2.0)  # without a batch (a drain's last lines)
        assert sorted(sink._log_files) == ["w.1", "w.2"]
        assert not (tmp / "logs/w.0.log").exists()
        one = (tmp / "logs/w.1.log").read_text().splitlines()
        assert [line.split(" ", 2)[1:] for line in one] == [["out", "one"], ["out", "two"]]
        assert (tmp / "logs/w.2.log").read_text().split(" ", 2)[1:] == ["err", "three\n"]
    finally:
        sink.close()


def test_a_reload_gives_a_made_log_file_the_new_rotation(tmp: Path) -> None:
    (tmp / "logs").mkdir()
    sink = sink_for(tmp)
    sink.track(plan_of(tmp, SERVICES.format(max_bytes=100_000)))
    try:
        line = b"x" * 60
        sink.lines("w.0", "out", line, 1.0)
        sink.lines("w.0", "out", line, 1.0)
        assert not (tmp / "logs/w.0.log.1").exists()  # 100,000 bytes: no rotation
        sink.track(plan_of(tmp, SERVICES.format(max_bytes=100)))
        sink.lines("w.0", "out", line, 2.0)  # past 100 bytes: rotated first
        assert len((tmp / "logs/w.0.log.1").read_text().splitlines()) == 2
        assert len((tmp / "logs/w.0.log").read_text().splitlines()) == 1
        sink.track(plan_of(tmp, SERVICES.format(max_bytes=100).replace("replicas = 3", "")))
        assert sorted(sink._log_files) == []  # w.0 and its file are gone with the reload
        assert sink.errors == {}
    finally:
        sink.close()
