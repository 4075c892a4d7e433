"""What a pattern names: one home for the daemon (`start web.*`) and the CLI
(`status web.*`, `logs` without a daemon).

A pattern is an instance name, a service name (all its replicas) or a shell glob
matched against both; it is case-sensitive on every system.
"""

from __future__ import annotations

GLOB = frozenset("*?[")  # without one of these, a glob matches only itself


def matches(pattern: str, name: str, service: str) -> bool:
    """Whether `pattern` names the instance `name` of `service`."""
    if pattern in (name, service):
        return True
    if GLOB.isdisjoint(pattern):
        return False
    # Here, not at the top: fnmatch loads `re`, which `status web.0` does without.
    from fnmatch import fnmatchcase

    return fnmatchcase(name, pattern) or fnmatchcase(service, pattern)


def no_match(pattern: str) -> str:
    """What to say when `pattern` names nothing."""
    return f"no instance or service matches {pattern!r}"
