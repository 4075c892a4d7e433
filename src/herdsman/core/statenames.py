"""The names of an instance's states, as the API and the CLI write them: their one
home. core/states.py makes the State enum of them for the daemon; the client
commands compare and colour these as text, without `enum`, whose import is a
third of what `herdsman status` costs beyond the interpreter's own start-up.
"""

from __future__ import annotations

STOPPED = "stopped"
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
RESTARTING = "restarting"
EXITED = "exited"
FAILED = "failed"
