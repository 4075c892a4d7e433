"""The states of an instance, as the enum the lifecycle, the daemon, the API
documents and metrics use; their names have their home in statenames.py, where
the client commands read them without loading `enum`.
"""

from __future__ import annotations

from enum import StrEnum

from herdsman.core import statenames as name


class State(StrEnum):
    STOPPED = name.STOPPED
    STARTING = name.STARTING
    RUNNING = name.RUNNING
    STOPPING = name.STOPPING
    RESTARTING = name.RESTARTING
    EXITED = name.EXITED
    FAILED = name.FAILED
