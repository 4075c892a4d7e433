"""The reload diff: what restarts and what keeps running."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from herdsman.core.diff import diff_plans
from herdsman.core.lifecycle import Policy
from herdsman.core.plan import InstancePlan, Plan, ServicePlan


def service(name: str, *argvs: tuple[str, ...], policy: Policy | None = None) -> ServicePlan:
    instances = tuple(
        InstancePlan(name if len(argvs) == 1 else f"{name}.{i}", name, i, argv, {}, Path("/"))
        for i, argv in enumerate(argvs)
    )
    return ServicePlan(name, policy or Policy(), instances, True, {})


def plan(*services: ServicePlan) -> Plan:
    p = Path("/x")
    return Plan(p, p, p, p, 1.0, {s.name: s for s in services})


def test_added_removed_changed_unchanged() -> None:
    old = plan(service("db", ("db",)), service("web", ("web", "1")), service("gone", ("x",)))
    new = plan(
        service("db", ("db",), policy=Policy(backoff_initial=5.0)),  # in place
        service("web", ("web", "2")),
        service("fresh", ("y",)),
    )
    change = diff_plans(old, new)
    assert (change.added, change.removed, change.changed, change.unchanged) == (
        ("fresh",),
        ("gone",),
        ("web",),
        ("db",),
    )


def test_env_cwd_identity_and_replicas_count_as_the_process() -> None:
    base = service("w", ("a",), ("a",))
    old = plan(base)
    inst = base.instances[0]
    for changed in (
        replace(inst, env={"A": "1"}),
        replace(inst, cwd=Path("/tmp")),
        replace(inst, user="nobody"),
        replace(inst, umask=0o22),
    ):
        new = plan(replace(base, instances=(changed, base.instances[1])))
        assert diff_plans(old, new).changed == ("w.0",)
    more = plan(service("w", ("a",), ("a",), ("a",)))
    change = diff_plans(old, more)
    assert (change.added, change.unchanged) == (("w.2",), ("w.0", "w.1"))
