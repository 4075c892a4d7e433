"""Compiling a validated config into the runtime's plan, in-process or as a helper.

`python -m herdsman.config.plan [-c FILE]` finds and validates the config and
writes the pickled result to stdout: `("ok", Plan)` or `("errors", [sentences])`.
It runs in a short-lived process (this program for a reload, a fork of `up` at
start-up: see runtime/planner.py) so that pydantic, and the memory it takes, never
enters the long-running daemon.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from herdsman.config import units
from herdsman.config.errors import ConfigError
from herdsman.config.loader import find_config_file, load_config
from herdsman.config.models import Config, HealthCheck, Hook, Probe, Service
from herdsman.config.watch import watch_plan
from herdsman.core.plan import CheckPlan, HookPlan, InstancePlan, Plan, Policy, ServicePlan


def check_plan(check: Probe | HealthCheck | None, replica: int) -> CheckPlan | None:
    if check is None:
        return None
    check = check.for_replica(replica)
    kind = check.kind
    target = {"tcp": check.tcp, "http": check.http, "plugin": check.plugin}.get(kind) or ""
    if isinstance(check, Probe) and kind == "log":
        target = check.log or ""
    thresholds: dict[str, Any] = {}
    if isinstance(check, Probe):
        thresholds["watchdog"] = check.watchdog
    if isinstance(check, HealthCheck):
        thresholds = {
            "failure_threshold": check.failure_threshold,
            "success_threshold": check.success_threshold,
        }
    return CheckPlan(
        kind=kind,
        target=target,
        address=units.parse_address(target) if kind == "tcp" else None,
        argv=tuple(check.exec or ()),
        interval=check.interval,
        timeout=check.timeout,
        initial_delay=check.initial_delay,
        options=dict(check.options),
        **thresholds,
    )


def hook_plans(hooks: list[Hook], where: str) -> tuple[HookPlan, ...]:
    return tuple(
        HookPlan(
            on=frozenset(hook.on),
            kind=hook.kind,
            where=f"{where}[{index}]",
            argv=tuple(hook.exec or ()),
            url=hook.webhook or "",
            plugin=hook.plugin or "",
            options=dict(hook.options),
            timeout=hook.timeout,
        )
        for index, hook in enumerate(hooks)
    )


def policy_of(svc: Service) -> Policy:
    return Policy(
        restart=svc.restart,
        backoff_initial=svc.backoff.initial,
        backoff_max=svc.backoff.max,
        backoff_factor=svc.backoff.factor,
        backoff_jitter=svc.backoff.jitter,
        burst=svc.start_limit.burst,
        interval=svc.start_limit.interval,
        start_seconds=svc.start_seconds,
        stop_signal=svc.stop_signal,
        stop_timeout=svc.stop_timeout,
        needs_ready=svc.ready is not None,
    )


def notify_socket(config: Config) -> Path | None:
    """Where the daemon receives sd_notify messages, if any service uses them."""
    if any(svc.ready and svc.ready.kind == "notify" for svc in config.services.values()):
        return config.settings.state_dir / "notify.sock"
    return None


def compile_service(svc: Service, notify: Path | None, own_dirs: list[Path]) -> ServicePlan:
    extra_env = {}
    if notify is not None and svc.ready is not None and svc.ready.kind == "notify":
        extra_env["NOTIFY_SOCKET"] = str(notify)
        if svc.ready.watchdog is not None:
            extra_env["WATCHDOG_USEC"] = str(round(svc.ready.watchdog * 1_000_000))
    # An instance's command, variables and checks differ from another's by their
    # `{replica}` only: what replica 1 has equal to replica 0 has none, so the
    # first one's serves every replica (the daemon holds the plan as long as it
    # runs; the pickle that carries it keeps what is shared here shared), and only
    # what differs is worked out for each (the helper that compiles the plan is the
    # critical path of up's start, and worked out for each of 8,000 replicas, all
    # of it cost 205M instructions).
    parts: tuple[Callable[[int], Any], ...] = (
        lambda replica: tuple(svc.argv_for(replica)),
        lambda replica: {**svc.env_for(replica), **extra_env},
        lambda replica: check_plan(svc.ready, replica),
        lambda replica: check_plan(svc.health, replica),
    )
    first = [part(0) for part in parts]
    varying = [i for i, part in enumerate(parts) if svc.replicas > 1 and part(1) != first[i]]
    instances: list[InstancePlan] = []
    for replica, name in enumerate(svc.instance_names()):
        argv, env, ready, health = first
        if varying:
            values = list(first)
            for i in varying:
                values[i] = parts[i](replica)
            argv, env, ready, health = values
        # By position, in the order of its fields (a fifth of what the same call
        # with their names costs).
        instances.append(
            InstancePlan(
                name,
                svc.name,
                replica,
                argv,
                env,
                svc.cwd,
                svc.user,
                svc.group,
                svc.umask,
                ready,
                health,
            )
        )
    return ServicePlan(
        name=svc.name,
        policy=policy_of(svc),
        instances=tuple(instances),
        autostart=svc.autostart,
        depends_on=dict(svc.depends_on),
        memory_limit=svc.memory_limit,
        restart_with=tuple(svc.restart_with),
        log_max_bytes=svc.log.max_bytes,
        log_backups=svc.log.backups,
        hooks=hook_plans(svc.hooks, f"services.{svc.name}.hooks"),
        watch=watch_plan(svc.watch, svc.watch_ignore, svc.watch_debounce, svc.cwd, own_dirs)
        if svc.watch
        else None,
    )


def compile_plan(config: Config) -> Plan:
    settings = config.settings
    notify = notify_socket(config)
    return Plan(
        config_path=config.path,
        state_dir=settings.state_dir,
        log_dir=settings.log_dir,
        socket=settings.socket,
        shutdown_timeout=settings.shutdown_timeout,
        memory_interval=settings.memory_interval,
        services={
            name: compile_service(svc, notify, [settings.state_dir, settings.log_dir])
            for name, svc in config.services.items()
        },
        socket_mode=settings.socket_mode,
        socket_group=settings.socket_group,
        max_connections=settings.max_connections,
        tcp=units.parse_address(settings.tcp) if settings.tcp else None,
        token_file=settings.token_file,
        log_format=settings.log_format,
        daemon_log_max_bytes=settings.daemon_log.max_bytes,
        daemon_log_backups=settings.daemon_log.backups,
        allow_shared_state_dir=settings.allow_shared_state_dir,
        notify_socket=notify,
        plugins=tuple(settings.plugins),
        hooks=hook_plans(config.hooks, "hooks"),
    )


def _write_new(path: Path, data: bytes) -> None:
    """`path` is in state_dir: a new file of ours, never written through a symlink."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o600), "wb") as out:
        out.write(data)


def answer(explicit: str | None) -> tuple[bytes, int]:
    """What the helper answers for the config `explicit` names (or the one found):
    the pickled result, and its exit code."""
    try:
        path = find_config_file(explicit, Path.cwd(), os.environ)
        result: tuple[str, object] = ("ok", compile_plan(load_config(path)))
        code = 0
    except ConfigError as err:
        result, code = ("errors", list(err.errors)), 2
    return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), code


def main(argv: list[str]) -> int:
    """`[-c FILE] [--out FILE]`: the pickled result to stdout, or to --out's file."""
    options = dict(zip(argv[::2], argv[1::2], strict=False))
    data, code = answer(options.get("-c"))
    if "--out" in options:
        _write_new(Path(options["--out"]), data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
