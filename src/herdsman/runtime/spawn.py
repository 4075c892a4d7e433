"""Spawning one instance's main process.

Each child gets its own session (so its own process group), stdin from
/dev/null and stdout/stderr on pipes the daemon reads. The fast path is
`os.posix_spawn` (vfork + exec in glibc, errors reported synchronously), run by
one spawning thread that has a file descriptor table, cwd and umask of its own
(see `LeanSpawner`): it enters the instance's cwd and umask just around the call
and returns to its own right after. Switching user or group needs setuid in the
child, which posix_spawn cannot do, so those instances go through
subprocess.Popen (still no preexec_fn), in the loop thread. A spawn that cannot
happen raises `SpawnError`, one sentence.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import grp
import os
import pwd
import queue
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from herdsman.core.plan import InstancePlan

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1024 * 1024  # the pumps read up to this much at once

# Python ignores these; a child must start with the default disposition.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
CLONE_FS, CLONE_FILES = 0x200, 0x400  # for unshare(2)


class SpawnError(Exception):
    """The process could not be started; the message is one sentence for the user.

    `retry`: herdsman itself ran out of something (file descriptors), which may
    come free again; the config is not to blame.
    """

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


# Out of file descriptors: the daemon's (EMFILE) or the whole system's (ENFILE).
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE)
TOO_MANY_OPEN_FILES = "too many open files"


def child_environment(base: Mapping[str, str], inst: InstancePlan) -> dict[str, str]:
    env = dict(base)
    env.update(inst.env)
    env["HERDSMAN_SERVICE"] = inst.service
    env["HERDSMAN_INSTANCE"] = inst.name
    env["HERDSMAN_REPLICA"] = str(inst.replica)
    return env


def close_inherited_fds() -> None:
    """Make every fd above stderr close-on-exec, so no child inherits ours.

    Python creates fds non-inheritable, but the daemon may have been handed
    inheritable ones by whoever started it; posix_spawn would pass them on.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def _identity(inst: InstancePlan) -> dict[str, object]:
    """Popen keyword arguments that switch user/group, resolved with clear errors."""
    if os.geteuid() != 0:
        who = inst.user if inst.user is not None else inst.group
        raise SpawnError(f"cannot switch to {who!r}: herdsman is not running as root")
    kwargs: dict[str, object] = {}
    gid: int | None = None
    if inst.group is not None:
        try:
            gid = grp.getgrnam(inst.group).gr_gid
        except KeyError:
            raise SpawnError(f"unknown group {inst.group!r}") from None
        kwargs["group"] = gid
    if inst.user is not None:
        try:
            entry = pwd.getpwnam(inst.user)
        except KeyError:
            raise SpawnError(f"unknown user {inst.user!r}") from None
        kwargs["user"] = entry.pw_uid
        if gid is None:
            gid = entry.pw_gid
            kwargs["group"] = gid
        kwargs["extra_groups"] = os.getgrouplist(inst.user, gid)
    return kwargs


def _explain(err: OSError, inst: InstancePlan) -> str:
    program = inst.argv[0]
    if err.errno in _OUT_OF_FDS:
        return TOO_MANY_OPEN_FILES
    if err.filename is not None and Path(os.fsdecode(err.filename)) == inst.cwd:
        if isinstance(err, FileNotFoundError):
            return f"working directory {inst.cwd} does not exist"
        if isinstance(err, NotADirectoryError):
            return f"working directory {inst.cwd} is not a directory"
        if isinstance(err, PermissionError):
            return f"working directory {inst.cwd} is not accessible (permission denied)"
    if isinstance(err, FileNotFoundError):
        if "/" in program:
            return f"command {program} does not exist"
        return f"command {program!r} not found in PATH"
    if isinstance(err, PermissionError):
        return f"command {program} is not executable (permission denied)"
    if err.errno == errno.ENOEXEC:
        return f"command {program} is not an executable file (missing #! line?)"
    return f"cannot start {program}: {err.strerror or err}"


SpawnCall = Callable[[InstancePlan, Mapping[str, str], int, int], int]


class LeanSpawner:
    """A thread that spawns from a file descriptor table holding almost nothing.

    A spawn copies the caller's fd table into the child, which closes every
    close-on-exec fd again at exec: the kernel's share of a spawn grows with every
    fd the daemon holds, two pipes per instance, so starting N instances cost
    O(N²) (with 16,000 fds open, the child's part of a spawn took 4 ms instead of
    0.9). This thread unshares its fd table, cwd and umask (unshare(2) with
    CLONE_FILES | CLONE_FS) and keeps only the fds the spawn needs, so a spawn
    costs the same however many instances run. The loop thread passes it the
    pipes' write ends over a socket pair (SCM_RIGHTS) and waits for the pid: the
    spawn stays synchronous, and a spawn error is raised in the caller as before.

    Children of any thread are the daemon's children (reaped by its loop); the
    thread blocks every signal, so signals reach the loop thread, and gives each
    child an empty signal mask.
    """

    def __init__(self, spawn: SpawnCall, keep: tuple[int, ...]) -> None:
        self._spawn = spawn
        self._keep = keep  # fds of the daemon's table the spawns use: /dev/null, its cwd
        self._requests: queue.SimpleQueue[tuple[InstancePlan, Mapping[str, str]]] = (
            queue.SimpleQueue()
        )
        self._results: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._theirs = theirs.detach()  # a number, valid in either table
        self._ready = threading.Event()
        self.error: str | None = None  # why the thread could not take its own table
        self._thread = threading.Thread(target=self._run, name="herdsman-spawn", daemon=True)
        self._thread.start()
        self._ready.wait()
        os.close(self._theirs)  # the thread has its own copy now (or failed, and is gone)

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id

    def spawn(self, inst: InstancePlan, env: Mapping[str, str], out: int, err: int) -> int:
        """`spawn(inst, env, out, err)` in the thread, with these two fds; the pid."""
        self._requests.put((inst, env))
        socket.send_fds(self._ours, [b"s"], [out, err])
        while True:
            try:
                result = self._results.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise SpawnError("the spawning thread of herdsman is gone") from None
                continue
            if isinstance(result, BaseException):
                raise result
            return result

    def close(self) -> None:
        self._ours.close()  # the thread reads the end of the stream and returns
        self._thread.join(5.0)

    def _run(self) -> None:
        # Signals go to the loop thread: the wake-up fd their handler writes is a
        # number in the daemon's table, not in this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_FILES | CLONE_FS) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except Exception as error:  # no libc unshare, or refused
            self.error = f"unshare: {error}"
            self._ready.set()
            return
        sock = socket.socket(fileno=self._theirs)
        for name in os.listdir("/proc/thread-self/fd"):
            fd = int(name)
            if fd > 2 and fd != self._theirs and fd not in self._keep:
                with contextlib.suppress(OSError):
                    os.close(fd)  # only this thread's copy
        # Not even stdin/stdout/stderr: a copy of them here would hold whatever the
        # daemon points them at later (`up -d` waits for the EOF of its start pipe).
        for fd in (0, 1, 2):
            os.dup2(self._keep[0], fd, inheritable=False)
        self._ready.set()  # the caller may now close its copy of our socket
        with sock:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(sock, 16, 2, socket.MSG_CMSG_CLOEXEC)
                except OSError:
                    return
                if not message:
                    return  # closed
                try:
                    inst, env = self._requests.get_nowait()
                    out, err = fds
                    result: int | BaseException = self._spawn(inst, env, out, err)
                except BaseException as error:
                    result = error
                finally:
                    for fd in fds:
                        os.close(fd)
                self._results.put(result)


class Spawner:
    """Starts processes. Holds /dev/null and the daemon's own cwd open."""

    def __init__(self) -> None:
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # (program, PATH) -> absolute path: a PATH search in the vforked child
        # costs a failed exec per directory, about a third of a spawn.
        self._resolved: dict[tuple[str, str | None], str] = {}
        self.lean: LeanSpawner | None = LeanSpawner(self._posix_spawn, (self._devnull, self._home))
        if self.lean.error is not None:
            # unshare refused (a seccomp filter): spawn from the loop thread, whose
            # fd table every child copies.
            self.lean = None

    def close(self) -> None:
        if self.lean is not None:
            self.lean.close()
        os.close(self._devnull)
        os.close(self._home)

    def spawn(self, inst: InstancePlan, env: Mapping[str, str]) -> tuple[int, int, int]:
        """Start the process: (pid, stdout read fd, stderr read fd), both non-blocking."""
        out_r, out_w = self._pipe()
        try:
            err_r, err_w = self._pipe()
        except SpawnError:
            os.close(out_r)
            os.close(out_w)
            raise
        for fd in (out_r, err_r):
            # A bigger pipe means fewer, larger reads from a chatty child; without
            # the privilege or under the user's pipe budget, the default will do.
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        try:
            os.set_blocking(out_w, True)
            os.set_blocking(err_w, True)
            if inst.user is None and inst.group is None:
                spawn = self.lean.spawn if self.lean is not None else self._posix_spawn
                pid = spawn(inst, env, out_w, err_w)
            else:
                pid = self._popen(inst, env, out_w, err_w)
        except OSError as err:
            os.close(out_r)
            os.close(err_r)
            raise SpawnError(_explain(err, inst), retry=err.errno in _OUT_OF_FDS) from None
        except (SpawnError, ValueError, TypeError) as err:  # ValueError: a NUL in an argument
            os.close(out_r)
            os.close(err_r)
            if isinstance(err, SpawnError):
                raise
            raise SpawnError(f"cannot start {inst.argv[0]}: {err}") from None
        finally:
            os.close(out_w)
            os.close(err_w)
        return pid, out_r, err_r

    @staticmethod
    def _pipe() -> tuple[int, int]:
        try:
            return os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            # EMFILE/ENFILE, or ENOMEM: all are shortages that may pass.
            if err.errno in _OUT_OF_FDS:
                raise SpawnError(TOO_MANY_OPEN_FILES, retry=True) from None
            raise SpawnError(f"cannot create output pipes: {err.strerror}", retry=True) from None

    def _executable(self, program: str, search_path: str | None) -> str | None:
        if "/" in program:
            return program
        key = (program, search_path)
        found = self._resolved.get(key)
        if found is None:
            found = shutil.which(program, path=search_path or os.defpath)
            if found is not None:
                self._resolved[key] = found
        return found

    def _posix_spawn(self, inst: InstancePlan, env: Mapping[str, str], out: int, err: int) -> int:
        program = inst.argv[0]
        executable = self._executable(program, env.get("PATH"))
        if executable is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        os.chdir(inst.cwd)
        old_umask = os.umask(inst.umask) if inst.umask is not None else None
        try:
            return os.posix_spawn(
                executable,
                inst.argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, self._devnull, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, err, 2),
                ],
                setsid=True,
                setsigdef=_RESET_SIGNALS,
                setsigmask=(),  # not the spawning thread's (which blocks every signal)
            )
        except OSError:
            self._resolved.pop((program, env.get("PATH")), None)  # moved or removed since
            raise
        finally:
            os.fchdir(self._home)
            if old_umask is not None:
                os.umask(old_umask)

    def _popen(self, inst: InstancePlan, env: Mapping[str, str], out: int, err: int) -> int:
        popen = subprocess.Popen(  # type: ignore[call-overload]
            inst.argv,
            stdin=self._devnull,
            stdout=out,
            stderr=err,
            cwd=inst.cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            umask=-1 if inst.umask is None else inst.umask,
            **_identity(inst),
        )
        # The reaper collects the exit status; Popen must never wait on it itself.
        popen.returncode = 0
        pid: int = popen.pid
        return pid
