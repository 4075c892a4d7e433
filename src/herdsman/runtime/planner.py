"""Getting a plan from the validating helper process (see config/plan.py).

The helper runs as `python -m herdsman.config.plan`, so the daemon never imports
pydantic. It is started before the runtime is imported, so the two overlap: the
helper is the longer of the two, so nothing is imported before it starts (not even
the core plan, which only its answer needs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from herdsman.core.plan import Plan


class PlanError(Exception):
    """The config is invalid; `errors` holds one sentence per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def request_plan(config: str | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-P", "-m", "herdsman.config.plan"]  # -P: cwd shadows nothing
    if config is not None:
        argv += ["-c", config]
    # pydantic looks for plugins of its own in every installed distribution's entry
    # points (a scan that grows with the environment) before its first model: none has
    # any business in herdsman's validation.
    env = {**os.environ, "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)


def receive_plan(helper: subprocess.Popen[bytes]) -> Plan:
    out, _ = helper.communicate()
    return unpickle_plan(out, f"exit code {helper.returncode}")


def helper_argv(config: Path, out: Path) -> tuple[str, ...]:
    """The validating helper for a daemon's reload: it writes its answer to `out`."""
    return (
        sys.executable,
        "-P",
        "-m",
        "herdsman.config.plan",
        "-c",
        str(config),
        "--out",
        str(out),
    )


def unpickle_plan(data: bytes, how_it_ended: str) -> Plan:
    """The helper's answer: the Plan, or PlanError with its errors."""
    import pickle

    from herdsman.core.plan import Plan

    try:
        kind, value = pickle.loads(data)
    except Exception:
        raise PlanError(
            [f"the config validator failed ({how_it_ended}); see the error above"]
        ) from None
    if kind == "errors":
        raise PlanError(list(value))
    if not isinstance(value, Plan):
        raise PlanError(["the config validator answered something unexpected"])
    return value
