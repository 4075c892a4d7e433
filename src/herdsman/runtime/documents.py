"""The documents the daemon answers with, built here and nowhere else.

Each is a TypedDict that matches its schema in the OpenAPI document
(api/openapi.py; tests/api/test_documents.py holds them to it).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from herdsman.runtime.logfile import timestamp
from herdsman.runtime.pump import CUT

# What an instance's document holds from resource sampling: an event leaves it out
# (no state change makes a sample fresh).
SAMPLED = frozenset({"cpu_percent", "rss_bytes", "processes", "open_fds"})


class LogDocument(TypedDict):
    """One line of output (LogLine)."""

    time: str
    instance: str
    stream: str
    line: str
    partial: NotRequired[bool]


def iso(ts: float) -> str:
    """The time form of the API, the same as in the log files."""
    return timestamp(ts).decode()


def log_document(ts: float, instance: str, stream: str, line: bytes) -> LogDocument:
    text = line.decode("utf-8", "replace")
    if stream.endswith(CUT):  # a piece of a longer line; the next line continues it
        return {
            "time": iso(ts),
            "instance": instance,
            "stream": stream[: -len(CUT)],
            "line": text,
            "partial": True,
        }
    return {"time": iso(ts), "instance": instance, "stream": stream, "line": text}
