"""The daemon's file descriptor budget.

Every instance holds the read ends of its two output pipes and, once it wrote a
line, its log file: three fds. The daemon needs a few of its own (lock, sockets,
state files, epoll, its log, probes in flight) and one per API connection, up to
`max_connections` per listener. The soft RLIMIT_NOFILE (1024 under systemd unless
the unit says otherwise) is raised to the hard limit at start; whatever the limit
then holds is what `check` and `up` tell the user when the config needs more.
"""

from __future__ import annotations

import resource

FDS_PER_INSTANCE = 3  # stdout pipe, stderr pipe, log file
FDS_RESERVED = 64  # the daemon's own, beside API connections


def raise_soft_limit() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit now in force.

    Services inherit it, as they would under a unit's `LimitNOFILE=`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard_limit()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def soft_limit() -> int:
    """The limit in force now (raised at start); 'unlimited' as the most it can be."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard_limit() if soft == resource.RLIM_INFINITY else soft


def hard_limit() -> int:
    """The most the soft limit can be raised to: the hard limit, itself capped by
    the kernel's fs.nr_open (an 'unlimited' hard limit cannot be set as soft)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024 * 1024  # the kernel's default nr_open


def instances_held(limit: int, listeners: int, max_connections: int) -> int:
    """How many instances an fd limit of `limit` holds beside the daemon's own needs."""
    spare = limit - FDS_RESERVED - listeners * max_connections
    return max(0, spare // FDS_PER_INSTANCE)


def shortfall(instances: int, limit: int, listeners: int, max_connections: int) -> str | None:
    """One sentence when `limit` is too low for `instances`, else None."""
    held = instances_held(limit, listeners, max_connections)
    if instances <= held:
        return None
    return (
        f"the open files limit ({limit}) holds about {held} of the {instances} instances "
        f"({FDS_PER_INSTANCE} file descriptors each, plus {max_connections} per API listener): "
        "raise it (LimitNOFILE= in the unit, ulimit -n in a shell); "
        "instances that cannot get file descriptors retry until some come free"
    )
