"""The states of an instance: their one home.

The lifecycle, the daemon, the API document, metrics and the CLI all name states
from here. It imports nothing but `enum` (which `re` loads anyway), so the CLI's
start-up pays nothing for it.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    EXITED = "exited"
    FAILED = "failed"
