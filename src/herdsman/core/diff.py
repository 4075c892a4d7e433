"""What a reload changes: the difference between two plans, per instance.

An instance is *changed* when anything that shapes its process differs (command,
environment, cwd, identity, umask): it must be restarted. Everything else (restart
policy, backoff, probes, limits, log rotation) applies in place, so an instance
whose process would be the same is *unchanged* and keeps running with its pid.
"""

from __future__ import annotations

from dataclasses import dataclass

from herdsman.core.plan import InstancePlan, Plan


@dataclass(slots=True)
class PlanDiff:
    """What a new plan does to the instances: the names, per kind of change."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


def process_of(inst: InstancePlan) -> tuple[object, ...]:
    """What a running process was started with; a difference means a restart."""
    return (
        inst.argv,
        tuple(sorted(inst.env.items())),
        inst.cwd,
        inst.user,
        inst.group,
        inst.umask,
    )


def instances_of(plan: Plan) -> dict[str, InstancePlan]:
    return {inst.name: inst for svc in plan.services.values() for inst in svc.instances}


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    before, after = instances_of(old), instances_of(new)
    added = tuple(name for name in after if name not in before)
    removed = tuple(name for name in before if name not in after)
    kept = [name for name in after if name in before]
    changed = tuple(n for n in kept if process_of(before[n]) != process_of(after[n]))
    unchanged = tuple(n for n in kept if process_of(before[n]) == process_of(after[n]))
    return PlanDiff(added, removed, changed, unchanged)
