"""Spawning one instance's main process.

Each child gets its own session (so its own process group), stdin from
/dev/null and stdout/stderr on pipes the daemon reads. subprocess.Popen is used
for its vfork fast path and its exec-error reporting; no preexec_fn, ever.
A spawn that cannot happen raises `SpawnError` with one sentence.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class SpawnError(Exception):
    """The process could not be started; the message is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """Everything needed to start one instance's process, resolved from config."""

    argv: tuple[str, ...]
    env: Mapping[str, str]  # complete environment of the child
    cwd: Path
    user: str | None = None
    group: str | None = None
    umask: int | None = None


@dataclass(slots=True)
class Child:
    """A running main process with the read ends of its output pipes."""

    popen: subprocess.Popen[bytes]
    stdout: int
    stderr: int

    @property
    def pid(self) -> int:
        return self.popen.pid


def child_environment(
    base: Mapping[str, str],
    service_env: Mapping[str, str],
    service: str,
    instance: str,
    replica: int,
) -> dict[str, str]:
    env = dict(base)
    env.update(service_env)
    env["HERDSMAN_SERVICE"] = service
    env["HERDSMAN_INSTANCE"] = instance
    env["HERDSMAN_REPLICA"] = str(replica)
    return env


def _identity(spec: SpawnSpec) -> dict[str, object]:
    """Popen keyword arguments that switch user/group, resolved with clear errors."""
    kwargs: dict[str, object] = {}
    if spec.user is None and spec.group is None:
        return kwargs
    if os.geteuid() != 0:
        raise SpawnError(
            f"cannot switch to user {spec.user or spec.group!r}: herdsman is not running as root"
        )
    gid: int | None = None
    if spec.group is not None:
        try:
            gid = grp.getgrnam(spec.group).gr_gid
        except KeyError:
            raise SpawnError(f"unknown group {spec.group!r}") from None
        kwargs["group"] = gid
    if spec.user is not None:
        try:
            entry = pwd.getpwnam(spec.user)
        except KeyError:
            raise SpawnError(f"unknown user {spec.user!r}") from None
        kwargs["user"] = entry.pw_uid
        if gid is None:
            gid = entry.pw_gid
            kwargs["group"] = gid
        kwargs["extra_groups"] = os.getgrouplist(spec.user, gid)
    return kwargs


def _explain(err: OSError, spec: SpawnSpec) -> str:
    program = spec.argv[0]
    if err.filename is not None and Path(os.fsdecode(err.filename)) == spec.cwd:
        if isinstance(err, FileNotFoundError):
            return f"working directory {spec.cwd} does not exist"
        if isinstance(err, NotADirectoryError):
            return f"working directory {spec.cwd} is not a directory"
        if isinstance(err, PermissionError):
            return f"working directory {spec.cwd} is not accessible (permission denied)"
    if isinstance(err, FileNotFoundError):
        if "/" in program:
            return f"command {program} does not exist"
        return f"command {program!r} not found in PATH"
    if isinstance(err, PermissionError):
        return f"command {program} is not executable (permission denied)"
    if err.errno == 8:  # ENOEXEC
        return f"command {program} is not an executable file (missing #! line?)"
    return f"cannot start {program}: {err.strerror or err}"


def spawn(spec: SpawnSpec) -> Child:
    """Start the process; raise SpawnError with one sentence when it cannot start."""
    identity = _identity(spec)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        popen = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,
            close_fds=True,
            umask=-1 if spec.umask is None else spec.umask,
            **identity,  # type: ignore[arg-type]
        )
    except OSError as err:
        os.close(out_r)
        os.close(err_r)
        raise SpawnError(_explain(err, spec)) from None
    except (ValueError, TypeError) as err:  # e.g. a NUL byte in an argument
        os.close(out_r)
        os.close(err_r)
        raise SpawnError(f"cannot start {spec.argv[0]}: {err}") from None
    finally:
        os.close(out_w)
        os.close(err_w)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    return Child(popen, out_r, err_r)
