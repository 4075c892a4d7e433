"""Knowing that an instance can no longer start, and why.

An instance waiting for its dependencies (`starting` without a pid) is *blocked*
when one of them can no longer meet its condition without someone asking again:
an instance of it `failed` (start limit spent, or it could not be spawned), it
`exited` and will not be restarted (and exiting is not what was asked of it), it
was `stopped`, or it is itself blocked. Every one of those states is final for
the lifecycle (no timer, exit or probe moves it; only a user's start does), so a
wait on a blocked instance can end at once, with the reason.

`restarting`, `starting` with a process, `running` and `stopping` are not final:
the instance may still get there, and whoever waits keeps waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from herdsman.core.graph import Condition
from herdsman.core.lifecycle import Instance
from herdsman.core.states import State


def blocked(
    by_service: Mapping[str, Sequence[Instance]],
    depends_on: Mapping[str, Mapping[str, Condition]],
    services: Sequence[str] | None = None,
) -> dict[str, str]:
    """Per waiting instance of `services` (default: all) that can no longer start, why:
    `depends on db, which failed (exited with code 1)`."""
    why_service: dict[str, str | None] = {}
    found: dict[str, str] = {}
    for service in by_service if services is None else services:
        for inst in by_service[service]:
            if inst.waiting:
                reason = _service_blocked(service, by_service, depends_on, why_service)
                if reason is not None:
                    found[inst.name] = reason
    return found


def _service_blocked(
    service: str,
    by_service: Mapping[str, Sequence[Instance]],
    depends_on: Mapping[str, Mapping[str, Condition]],
    memo: dict[str, str | None],
) -> str | None:
    """Why a waiting instance of `service` cannot start, or None. Every instance of a
    service has the same dependencies, so the answer is the service's."""
    if service in memo:
        return memo[service]
    memo[service] = None  # a cycle (never in a validated plan) must not recurse forever
    for dep, condition in depends_on.get(service, {}).items():
        for inst in by_service.get(dep, ()):
            why = _cannot_meet(inst, condition)
            if why is None and inst.waiting:
                inner = _service_blocked(dep, by_service, depends_on, memo)
                why = None if inner is None else f"which cannot start: {inner}"
            if why is not None:
                memo[service] = f"depends on {inst.name}, {why}"
                return memo[service]
    return None


def _cannot_meet(inst: Instance, condition: Condition) -> str | None:
    """Why `inst`, in a final state, will never meet `condition`; None if it might."""
    match inst.state:
        case State.FAILED:
            return f"which failed ({inst.message})" if inst.message else "which failed"
        case State.EXITED:
            if inst.exit_code == 0 and condition in ("started", "completed"):
                return None  # a finished one-shot task counts as started, and completed
            said = inst.message or "exited"
            return f"which {said}" if said.startswith("exited") else f"which exited ({said})"
        case State.STOPPED:
            return "which is stopped"
        case State.STARTING | State.RUNNING | State.RESTARTING | State.STOPPING:
            return None
    raise AssertionError(f"unhandled state {inst.state!r}")  # pragma: no cover
