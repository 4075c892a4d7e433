"""Spawning one instance's main process.

Each child gets its own session (so its own process group), stdin from
/dev/null and stdout/stderr on pipes the daemon reads. The fast path is glibc's
`posix_spawn` (vfork + exec, errors reported synchronously), run by spawning
threads (THREADS) that each have a file descriptor table, cwd and umask of their
own (see `LeanSpawner`): a thread enters the instance's cwd and umask just around
the call and returns to its own right after. The loop thread does not wait for
them: `start()` hands a spawn over and returns, and the outcomes come back in the
order started from `finished()`, so the loop prepares the next spawn (pipes,
environment) while the threads run the last ones. Switching user or group needs
setuid in the child, which posix_spawn cannot do, so those instances go through
subprocess.Popen (still no preexec_fn), in the loop thread. A spawn that cannot
happen is a `SpawnError`, one sentence.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import operator
import os
import pwd
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, TypeVar

from herdsman.core.plan import InstancePlan
from herdsman.runtime import procfs
from herdsman.runtime.procfs import boot_clock, start_time_between

# Python ignores these; a child must start with the default disposition.
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
CLONE_FS, CLONE_FILES = 0x200, 0x400  # for unshare(2)

# posix_spawn through ctypes rather than os.posix_spawn, which holds the GIL while
# the child execs (the thread is blocked in vfork): the loop thread could not run
# meanwhile, and spawning in a thread would overlap nothing. A CDLL call releases
# the GIL; the short calls around it go through PyDLL, which keeps it (releasing
# and taking it back costs more than they do, and the loop may hold it by then).
_libc = ctypes.CDLL(None, use_errno=True)
_plibc = ctypes.PyDLL(None, use_errno=True)
# The calls of every spawn, looked up once: a CDLL's attribute goes through its
# __getattr__ hook at each use (a tenth of the spawning thread's instructions).
_posix_spawn = _libc.posix_spawn
_recvmsg, _send, _close = _plibc.recvmsg, _plibc.send, _plibc.close
_chdir, _fchdir = _plibc.chdir, _plibc.fchdir
POSIX_SPAWN_SETSIGDEF, POSIX_SPAWN_SETSIGMASK, POSIX_SPAWN_SETSID = 0x04, 0x08, 0x80
# glibc's posix_spawnattr_t takes 336 bytes, posix_spawn_file_actions_t 80 and
# sigset_t 128 (x86-64 and arm64): room to spare, they are opaque to us.
_ATTR_SIZE, _ACTIONS_SIZE, _SIGSET_SIZE = 512, 256, 256
# While the loop thread runs Python, the spawning thread waits this long at most
# for the GIL once its child has exec'd (Python's default is 5 ms per spawn).
SWITCH_INTERVAL = 0.0002
# Spawns handed to the thread and not yet collected, at most: enough that the
# thread never waits for the loop, few enough that each comes back soon.
IN_FLIGHT = 16
# How long the loop waits at most for the idle spawning thread to spawn a restart.
GATE_TIMEOUT = 0.002
# Spawning threads, one per core the daemon may run on (its affinity: a container
# or `taskset` may give it fewer than the machine has), two at most. A thread waits in posix_spawn
# while its vforked child runs up to its exec, then for the GIL: with two, one
# spawns while the other waits. Measured on two cores, interleaved with one thread:
# a wave of 2,000 out in 0.92-1.02 s instead of 1.15-1.26 on a quiet machine, and
# in half the time or less on a busy one (another session's load), where a lone
# thread waited for a CPU at every spawn; a lone restart is as quick.
THREADS = min(2, len(os.sched_getaffinity(0)))


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
# A fork past a process limit (RLIMIT_NPROC, the cgroup's pids.max, kernel.pid_max or
# threads-max) fails with EAGAIN; one without memory for the new process, ENOMEM.
# Shortages that pass, as fds do: the start is retried by the backoff.
TOO_MANY_PROCESSES = "too many processes (ulimit -u, TasksMax= or pids.max, kernel.pid_max)"
_SHORTAGES = (*_OUT_OF_FDS, errno.EAGAIN, errno.ENOMEM)


def own_environment(inst: InstancePlan) -> dict[str, str]:
    """The variables an instance's process gets over the daemon's environment."""
    env = dict(inst.env)
    env["HERDSMAN_SERVICE"] = inst.service
    env["HERDSMAN_INSTANCE"] = inst.name
    env["HERDSMAN_REPLICA"] = str(inst.replica)
    return env


def which(program: str, search_path: str) -> str | None:
    """Where `program` (no `/` in it) is found on `search_path`, as `shutil.which`
    finds it on Linux; here because shutil loads zlib, bz2 and lzma, 0.6 MB of a
    daemon that compresses nothing."""
    seen = set()
    for directory in search_path.split(os.pathsep):
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, program)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


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
    if err.errno == errno.EAGAIN:
        return TOO_MANY_PROCESSES
    if err.errno == errno.ENOMEM:
        return "not enough memory to start a process"
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


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


def _attributes() -> ctypes.Array[ctypes.c_char]:
    """What every child gets: a session of its own, the default disposition for
    the signals Python ignores, and an empty signal mask (not the spawning
    thread's, which blocks every signal).

    The vforked child, which shares the daemon's memory until its exec, must
    first take every handler of the daemon's off. glibc blocks every signal around
    the spawn, and its child asks each blocked signal's disposition, then sets
    it to the default if it was a handler: about 120 system calls before the
    exec, each a microsecond on a virtual machine, while the spawning thread
    waits. A signal in the "set to default" set is set at once, unasked: so it
    holds every signal but those ignored when the spawner is made, which the
    child still asks and keeps ignored, as exec does (herdsman ignores no
    signal itself: one it handles later is asked too, or in the set); half the
    calls."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    default = ctypes.create_string_buffer(_SIGSET_SIZE)
    empty = ctypes.create_string_buffer(_SIGSET_SIZE)
    _check(_plibc.posix_spawnattr_init(attr), "posix_spawnattr_init")
    _plibc.sigemptyset(default)
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        if sig in _RESET_SIGNALS or signal.getsignal(sig) is not signal.SIG_IGN:
            _plibc.sigaddset(default, int(sig))
    _plibc.sigemptyset(empty)
    _check(_plibc.posix_spawnattr_setsigdefault(attr, default), "posix_spawnattr_setsigdefault")
    _check(_plibc.posix_spawnattr_setsigmask(attr, empty), "posix_spawnattr_setsigmask")
    flags = ctypes.c_short(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID)
    _check(_plibc.posix_spawnattr_setflags(attr, flags), "posix_spawnattr_setflags")
    return attr


# A NULL-terminated `char *[]` (argv, envp). No string holds a NUL byte: the config
# refuses them in commands, paths and variables, and no environment can hold one.
Strings = ctypes.Array[ctypes.c_char_p]


def _entry(key: str, value: str) -> bytes:
    return f"{key}={value}".encode("utf-8", "surrogateescape")


class _Template:
    """The environment of the spawns whose own variables have these names: the
    base's entries, then a slot per own name (and the NULL that ends it), which
    holds the value the first such spawn had."""

    __slots__ = ("array", "slots", "values")

    def __init__(self, kept: list[bytes], own: Mapping[str, str]) -> None:
        entries = [_entry(key, value) for key, value in own.items()]
        self.array = (ctypes.c_char_p * (len(kept) + len(entries) + 1))(*kept, *entries, None)
        self.slots = {key: i for i, key in enumerate(own, len(kept))}
        self.values = dict(own)


class Environment:
    """The daemon's environment for its children, encoded once: a spawn copies it,
    a few hundred bytes of pointers, from a template made once per set of own
    names (see `own_environment`), and encodes only those of its own variables
    whose value is not the template's. Most are the same for every replica of a
    service (its name, its env, the state dir): each replica of a wave encodes
    two (its instance's name and number), not all of them (a quarter of a
    microsecond each, on the loop thread)."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self.base = dict(base)
        self._encoded = {key: _entry(key, value) for key, value in base.items()}
        self._templates: dict[frozenset[str], _Template] = {}

    def envp(self, own: Mapping[str, str]) -> tuple[Strings, Strings]:
        """(the environment with `own` over the base, the template it was copied
        from, which holds the bytes it points to and must outlive it)."""
        names = frozenset(own)
        template = self._templates.get(names)
        if template is None:
            kept = [entry for key, entry in self._encoded.items() if key not in names]
            template = self._templates[names] = _Template(kept, own)
        envp = type(template.array).from_buffer_copy(template.array)
        values, slots = template.values, template.slots
        for key, value in own.items():
            if values[key] != value:
                envp[slots[key]] = _entry(key, value)
        return envp, template.array

    def get(self, own: Mapping[str, str], name: str) -> str | None:
        return own.get(name, self.base.get(name))


class Request:
    """One spawn as the spawning thread needs it, encoded in the loop thread."""

    __slots__ = ("argv", "cwd", "envp", "inst", "keep", "path")

    def __init__(
        self,
        inst: InstancePlan,
        environment: Environment,
        own: Mapping[str, str],
        command: Command,
    ) -> None:
        self.inst = inst
        self.path = environment.get(own, "PATH")  # where a bare command name is looked up
        self.argv, self.cwd = command.argv, command.cwd
        self.envp, self.keep = environment.envp(own)


class Command:
    """An instance's argv and cwd, encoded: shared by the requests of the replicas
    that share them (see config/plan.py); the spawns only read them."""

    __slots__ = ("argv", "cwd", "of")

    def __init__(self, inst: InstancePlan) -> None:
        self.of = (inst.argv, inst.cwd)  # encoded from these very objects
        argv = [os.fsencode(arg) for arg in inst.argv]
        self.argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
        self.cwd = os.fsencode(inst.cwd)

    def serves(self, inst: InstancePlan) -> bool:
        return self.of[0] is inst.argv and self.of[1] is inst.cwd


def _stat_inode() -> Callable[[int], int]:
    """The inode of an fd (the loop journals each spawn's two pipes by theirs) through
    libc's fstat with the GIL held, into one buffer: os.fstat builds a stat_result
    (three float times among its twenty fields) for the one field, and lets go of
    the GIL around the call, which a spawning thread waiting for it takes, and the
    loop waits to have back. Where libc has no fstat (glibc before 2.33) or st_ino
    is not where x86-64 and arm64 keep it (checked on /dev/null), procfs.fd_inode
    (os.fstat's). One caller at a time (it has one buffer): the loop thread."""
    try:
        fstat = _plibc.fstat
    except AttributeError:
        return procfs.fd_inode
    buffer = ctypes.create_string_buffer(256)  # a struct stat takes 144 bytes or less
    inode = ctypes.c_uint64.from_buffer(buffer, 8)

    def by_libc(fd: int) -> int:
        if fstat(fd, buffer) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return inode.value

    probe = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return by_libc if by_libc(probe) == os.fstat(probe).st_ino else procfs.fd_inode
    except OSError:
        return procfs.fd_inode
    finally:
        os.close(probe)


fd_inode = _stat_inode()


# A process spawned: its pid, and its start time (clock ticks since boot, as /proc
# has it) when the spawn could tell it (see procfs.start_time_between).
Started = tuple[int, int | None]


class _IOVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IOVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


# A control message (cmsghdr: its length, level and type, then the data) holding
# two fds; its length is also its space on the platforms herdsman runs on.
_RIGHTS = struct.Struct("@Nii2i")
_TWO_FDS = struct.Struct("@2i")  # a control message's data: the fds it holds
_SOL_SOCKET, _SCM_RIGHTS = socket.SOL_SOCKET, socket.SCM_RIGHTS
_BYTE = [b"s"]  # a message of fds carries a byte
_CMSG_HEADER = struct.calcsize("@Nii")
MSG_DONTWAIT, MSG_NOSIGNAL = 0x40, 0x4000
# A plain int: socket.MSG_CMSG_CLOEXEC is an IntFlag, and `|` on it makes a new enum
# member through Python code (0.7 us, twice per spawn, on the spawning thread).
_RECEIVE = MSG_DONTWAIT | int(socket.MSG_CMSG_CLOEXEC)


class _Mailbox:
    """The spawning thread's end of the socket pair: its two fds per spawn, and its
    word to the loop, through libc with the GIL held. Python's socket methods let
    go of the GIL around each call, and taking it back from a loop thread that is
    running Python means waiting for a forced switch (SWITCH_INTERVAL); with
    requests queued (a wave), the thread now lets go of it once per spawn, in
    posix_spawn itself."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._byte = ctypes.create_string_buffer(1)
        self._control = ctypes.create_string_buffer(_RIGHTS.size)
        self._iov = _IOVec(ctypes.cast(self._byte, ctypes.c_void_p), 1)
        self._header = _MsgHdr(
            None, 0, ctypes.pointer(self._iov), 1, ctypes.cast(self._control, ctypes.c_void_p)
        )
        self._at = ctypes.byref(self._header)

    def fds(self) -> tuple[int, int] | OSError | None:
        """The next two fds sent, or why they could not be taken; None when none
        are here (yet)."""
        header = self._header
        header.controllen = _RIGHTS.size  # the kernel says how much it wrote
        got = _recvmsg(self.fd, self._at, _RECEIVE)
        if got <= 0:
            code = ctypes.get_errno() if got < 0 else errno.EPIPE
            return None if code == errno.EAGAIN else OSError(code, os.strerror(code))
        # No control message at all (not one fd installed) leaves the last one's
        # bytes in the buffer: those fds are closed, or another's by now.
        if header.controllen == 0:
            return OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        length, level, kind, out, err = _RIGHTS.unpack_from(self._control)
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
            if length == _RIGHTS.size:
                return out, err
            if length > _CMSG_HEADER:
                _close(out)  # only the first came
        # This table had no room for them (the kernel drops what it cannot install).
        return OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    def tell(self) -> None:
        """Say to the loop that outcomes wait (nothing if its end is closed)."""
        _send(self.fd, self._byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL)


class LeanSpawner:
    """A thread that spawns from a file descriptor table holding almost nothing.

    A spawn copies the caller's fd table into the child, which closes every
    close-on-exec fd again at exec: the kernel's share of a spawn grows with every
    fd the daemon holds, two pipes per instance, so starting N instances cost
    O(N²) (with 16,000 fds open, the child's part of a spawn took 4 ms instead of
    0.9). This thread unshares its fd table, cwd and umask (unshare(2) with
    CLONE_FILES | CLONE_FS) and keeps only the fds the spawn needs, so a spawn
    costs the same however many instances run. The loop thread passes it the
    pipes' write ends over a socket pair (SCM_RIGHTS) as soon as it has made them,
    ahead of the request that takes them, and the requests on a queue, and goes
    on; the thread waits on the queue, not the socket: data on a socket
    wakes its reader with the "sync" hint, which lets the scheduler run the reader
    on the sender's CPU, behind the loop thread (which holds the GIL too), while
    the other CPU may be idle. The thread puts each
    outcome (a pid or the exception) on `results`, in order, and when the first of
    a run of outcomes is waiting there it says so on the socket pair (the loop's
    own wake-up fd is a number in the daemon's table, not in this one): the loop
    watches `fileno()`, and calls `woken()` when it is readable.

    Children of any thread are the daemon's children (reaped by its loop); the
    thread blocks every signal, so signals reach the loop thread, and gives each
    child an empty signal mask.
    """

    def __init__(self, launcher: Launcher, keep: tuple[int, ...]) -> None:
        self._launcher = launcher  # this thread's alone
        self._spawn = launcher.spawn
        self.flying = 0  # requests submitted whose outcome the loop has not taken
        self._keep = keep  # fds of the daemon's table the spawns use: /dev/null, its cwd
        self._told = False  # the loop was told of outcomes it has not looked at yet
        self._requests: queue.SimpleQueue[Request | None] = queue.SimpleQueue()  # None: stop
        self.results: queue.SimpleQueue[Started | BaseException] = queue.SimpleQueue()
        self._ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._theirs = theirs.detach()  # a number, valid in either table
        self._ready = threading.Event()
        self._gate = threading.Lock()  # see submit
        self.error: str | None = None  # why the thread could not take its own table
        self._thread = threading.Thread(target=self._run, name="herdsman-spawn", daemon=True)
        self._thread.start()

    def started(self) -> bool:
        """Wait until the thread has its own table (False: it could not, and is gone)."""
        self._ready.wait()
        os.close(self._theirs)  # the thread has its own copy now (or failed, and is gone)
        return self.error is None

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id

    def fileno(self) -> int:
        """Readable when outcomes are waiting on `results` (see `woken`)."""
        return self._ours.fileno()

    def woken(self) -> None:
        """The loop is about to look at `results`: what comes after is told anew."""
        with contextlib.suppress(BlockingIOError):
            while self._ours.recv(64, socket.MSG_DONTWAIT):
                pass
        # Only then: reset first, a word the thread sent while these reads let go of
        # the GIL was read here too, with `_told` left set by it, and no outcome was
        # ever told again (16 spawns of a wave taken in slices never landed). An
        # outcome the thread put before it saw the flag still set is on `results`,
        # where the loop looks next.
        self._told = False

    def send(self, out: int, err: int) -> None:
        """Copy these two fds to the thread, for the next request that comes
        without (the caller closes its own). (What socket.send_fds sends, without
        its Python frame and the array it makes: once per spawn.)"""
        self._ours.sendmsg(_BYTE, [(_SOL_SOCKET, _SCM_RIGHTS, _TWO_FDS.pack(out, err))])

    def submit(self, request: Request, fds: tuple[int, int] | None, *, wait: bool) -> None:
        """Have the thread spawn `request` with these two fds (copied: the caller
        closes its own), or with None the two sent ahead (`send`); its outcome comes
        on `results`. `wait`: until the thread has spawned it (see below)."""
        if fds is not None:
            self.send(*fds)  # first: the thread takes them at once
        gate = self._gate
        gated = wait and gate.acquire(blocking=False)
        self._requests.put(request)
        self.flying += 1
        # Python hands its GIL to a thread that waits for it only when the holder
        # blocks, or after the switch interval: the loop, which goes on with Python
        # (the exit's bookkeeping), held a respawn up that long (0.1 to 0.3 ms).
        # Here it blocks until posix_spawn has returned (the child is past its exec),
        # 0.2 ms or so: let go as soon as the thread had the request, it woke to take
        # the GIL back, and on a busy machine ran its bookkeeping on the CPU of the
        # vforked child, which waited 0.1-0.4 ms before its exec (perf sched). Not
        # in a wave: the loop prepares the next spawn meanwhile.
        if gated and gate.acquire(timeout=GATE_TIMEOUT):
            gate.release()

    def result(self) -> Started | BaseException:
        """The next outcome, waiting for it."""
        self.flying -= 1
        while True:
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                if not self._thread.is_alive():
                    return SpawnError("the spawning thread of herdsman is gone")

    def take(self) -> Started | BaseException | None:
        """The next outcome if it is in."""
        if self.results.empty():  # asked once per spawn of a wave: no exception
            return None
        self.flying -= 1
        return self.results.get_nowait()  # the loop thread is its only reader

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(5.0)
        self._ours.close()
        self._launcher.close()

    def _run(self) -> None:
        # Signals go to the loop thread: the wake-up fd their handler writes is a
        # number in the daemon's table, not in this one.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            if _libc.unshare(CLONE_FILES | CLONE_FS) != 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except Exception as error:  # no libc unshare, or refused
            self.error = f"unshare: {error}"
            self._ready.set()
            return
        mailbox = _Mailbox(self._theirs)
        gate = self._gate
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
        # The next spawn's fds, taken once the last spawn is out (the loop sends
        # them as soon as it has made them): the GIL is then taken once less
        # between a request and its posix_spawn.
        fds: tuple[int, int] | OSError | None = None
        result: Started | BaseException
        try:
            while (request := self._requests.get()) is not None:
                if fds is None:  # sent before the request was queued: here already
                    fds = mailbox.fds() or OSError(errno.EPIPE, os.strerror(errno.EPIPE))
                if isinstance(fds, OSError):
                    result = fds
                else:
                    out, err = fds
                    try:
                        result = self._spawn(request, out, err)
                    except BaseException as error:
                        result = error
                    finally:
                        _close(out)
                        _close(err)
                if self._requests.empty():  # none follows at once (see Launcher)
                    self._launcher.leave()
                # The outcome first: the loop, let go by the gate, takes it in at once.
                self.results.put(result)
                if gate.locked():  # the loop waits for it (see submit)
                    gate.release()
                if not self._told:
                    self._told = True
                    mailbox.tell()
                fds = mailbox.fds()
        finally:
            _plibc.close(mailbox.fd)


def _pipes() -> tuple[int, int, int, int]:
    """A spawn's two pipes: (stdout's read end, its write end, stderr's read end, its
    write end); SpawnError (`retry`) if they cannot be made."""
    out = _pipe()
    try:
        err = _pipe()
    except SpawnError:
        os.close(out[0])
        os.close(out[1])
        raise
    for fd in (out[0], err[0]):
        # The daemon's ends never block (the child's do). Their size is the kernel's
        # default until the pump sees one busy (see pump.NEW_PIPE). (os.set_blocking
        # takes half the time of fcntl.fcntl's F_SETFL, for one more quick call to
        # the kernel: fcntl parses its arguments from a format string.)
        os.set_blocking(fd, False)
    return (*out, *err)


def _pipe() -> tuple[int, int]:
    try:
        return os.pipe2(os.O_CLOEXEC)
    except OSError as err:
        # EMFILE/ENFILE, or ENOMEM: all are shortages that may pass.
        if err.errno in _OUT_OF_FDS:
            raise SpawnError(TOO_MANY_OPEN_FILES, retry=True) from None
        raise SpawnError(f"cannot create output pipes: {err.strerror}", retry=True) from None


_in_flight = operator.attrgetter("flying")
K = TypeVar("K")
# (pid, stdout read fd, stderr read fd, its start time if known: see Started), or
# why the spawn failed.
Outcome = tuple[int, int, int, int | None] | SpawnError


class Launcher:
    """One thread's posix_spawn. What glibc is handed or writes (the attributes, the
    file actions, the pid) is this launcher's own, so spawning threads share no
    buffer; where programs are found (`resolved`, a dict: each get, set or pop is
    one step under the GIL) and the fds of /dev/null and the daemon's cwd (the
    same numbers in every thread's table) they share.

    A spawn enters its instance's cwd and leaves the thread there: the caller
    calls `leave()` once no spawn follows at once (a spawning thread, when no
    request is queued; the loop thread, after each spawn, as its cwd is the
    daemon's). The spawns of a wave, one after the other in a service's cwd,
    enter it once rather than each with a chdir (a path walk) and an fchdir
    back, two calls through ctypes that hold the GIL."""

    def __init__(
        self,
        devnull: int,
        home: int,
        resolved: dict[tuple[str, str | None], bytes],
        attributes: ctypes.Array[ctypes.c_char],
    ):
        self._devnull, self._home = devnull, home
        # (program, PATH) -> its path, encoded: a PATH search in the vforked child
        # costs a failed exec per directory, about a third of a spawn.
        self._resolved = resolved
        # A copy (plain data: flags and signal sets), made in 1 us where making them
        # again takes 0.1 ms.
        self._attributes = type(attributes).from_buffer_copy(attributes)
        self._pid = ctypes.c_int()  # where posix_spawn writes the pid (one spawn at a time)
        self._at = ctypes.byref(self._pid)
        self._cwd: bytes | None = None  # the cwd the last spawn left us in (None: home)
        # What the child's fds 0, 1 and 2 become, for the fds the pipes had in the
        # last spawn (see _file_actions).
        self._actions: tuple[tuple[int, int], ctypes.Array[ctypes.c_char]] | None = None

    def close(self) -> None:
        if self._actions is not None:
            _plibc.posix_spawn_file_actions_destroy(self._actions[1])
            self._actions = None

    def spawn(self, request: Request, out: int, err: int) -> Started:
        inst = request.inst
        program = inst.argv[0]
        executable = self._executable(program, request.path)
        if executable is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        cwd = request.cwd
        if cwd != self._cwd:
            if self._cwd is not None and not cwd.startswith(b"/"):
                self.leave()  # a relative cwd is the daemon's cwd's
            if _chdir(cwd) != 0:
                code = ctypes.get_errno()
                self.leave()  # wherever the failed chdir left us
                raise OSError(code, os.strerror(code), str(inst.cwd))
            self._cwd = cwd
        old_umask = os.umask(inst.umask) if inst.umask is not None else None
        try:
            actions = self._file_actions(out, err)
            # The child is made within the call: its start time is known without
            # reading /proc (see start_time_between), which state.json needs.
            before = boot_clock()
            code = _posix_spawn(
                self._at,
                executable,
                actions,
                self._attributes,
                request.argv,
                request.envp,
            )
            after = boot_clock()
            if code != 0:
                self._resolved.pop((program, request.path), None)  # moved or removed since
                raise OSError(code, os.strerror(code), os.fsdecode(executable))
            return self._pid.value, start_time_between(before, after)
        finally:
            if old_umask is not None:
                os.umask(old_umask)

    def leave(self) -> None:
        """Back to the daemon's cwd, out of the one the last spawn entered."""
        if self._cwd is not None:
            _fchdir(self._home)
            self._cwd = None

    def _executable(self, program: str, search_path: str | None) -> bytes | None:
        key = (program, search_path)
        found = self._resolved.get(key)
        if found is None:
            self.leave()  # a relative directory of PATH is the daemon's cwd's
            path = program if "/" in program else which(program, search_path or os.defpath)
            if path is None:
                return None
            found = self._resolved[key] = os.fsencode(path)
        return found

    def _file_actions(self, out: int, err: int) -> ctypes.Array[ctypes.c_char]:
        """/dev/null, `out` and `err` as the child's fds 0, 1 and 2. Made again only
        when the pipes come under other numbers: in the spawning thread's own table
        they come under the same two every time (the lowest free ones), and making
        them took a tenth of a spawn (six calls through ctypes)."""
        if self._actions is not None:
            if self._actions[0] == (out, err):
                return self._actions[1]
            _plibc.posix_spawn_file_actions_destroy(self._actions[1])
            self._actions = None
        actions = ctypes.create_string_buffer(_ACTIONS_SIZE)
        _check(_plibc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
        try:
            for fd, target in ((self._devnull, 0), (out, 1), (err, 2)):
                _check(_plibc.posix_spawn_file_actions_adddup2(actions, fd, target), "adddup2")
        except OSError:
            _plibc.posix_spawn_file_actions_destroy(actions)
            raise
        self._actions = ((out, err), actions)
        return actions


class Spawner(Generic[K]):
    """Starts processes. Holds /dev/null and the daemon's own cwd open.

    Every child gets `environ`, with its own variables over it. `start(key, inst,
    own)` begins a spawn; `finished()` gives the outcomes of the spawns that
    ended, each with its key, in the order they were started. The spawning
    threads (`leans`, THREADS of them, none where unshare is refused) each make
    their fd readable when outcomes are waiting (see LeanSpawner): the caller
    watches `wake_fds()` and calls `woken()`.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environment = Environment(environ or {})
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        resolved: dict[tuple[str, str | None], bytes] = {}
        attributes = _attributes()
        # Spawns handed to a thread, in the order they were started: (key, what,
        # stdout and stderr read ends, the thread); None as key is `spawn()`'s own.
        self._flying: deque[tuple[K | None, InstancePlan, int, int, LeanSpawner]] = deque()
        self._done: list[tuple[K, Outcome]] = []
        self._own: Outcome | None = None
        # The next spawn's pipes, per thread (None: the loop thread's own, when no
        # thread spawns); their write ends -1 once sent to that thread ahead.
        self._spares: dict[LeanSpawner | None, tuple[int, int, int, int]] = {}
        self._command: Command | None = None  # the last spawn's
        keep = (self._devnull, self._home)
        # Started together, each setting up its table while the others do.
        leans = [
            LeanSpawner(Launcher(self._devnull, self._home, resolved, attributes), keep)
            for _ in range(THREADS)
        ]
        # None where unshare is refused (a seccomp filter): the loop thread spawns,
        # and every child copies its fd table.
        self.leans = [lean for lean in leans if lean.started()]
        # The loop thread's, for the spawns no thread takes.
        self._launcher = Launcher(self._devnull, self._home, resolved, attributes)
        if self.leans:
            sys.setswitchinterval(SWITCH_INTERVAL)
        slots: list[LeanSpawner | None] = [*self.leans] or [None]
        for slot in slots:
            self._make_spare(slot)

    @property
    def pending(self) -> int:
        """Spawns whose outcome `finished()` has not given yet (in flight, or in
        and waiting: `spawn()` takes in every outcome before its own)."""
        return len(self._flying) + len(self._done)

    def wake_fds(self) -> list[int]:
        """Readable when outcomes are waiting (see `woken`)."""
        return [lean.fileno() for lean in self.leans]

    def woken(self) -> None:
        """The caller is about to take outcomes in (`finished`): what comes after
        is told anew."""
        for lean in self.leans:
            lean.woken()

    def close(self) -> None:
        """Stop the threads and close what is held; again, nothing more."""
        if self._devnull < 0:
            return
        for lean in self.leans:
            lean.close()
        self.leans = []
        os.close(self._devnull)
        self._devnull = -1
        os.close(self._home)
        for spare in self._spares.values():
            for fd in spare:
                if fd >= 0:
                    os.close(fd)
        self._spares.clear()
        self._launcher.close()

    def start(
        self, key: K, inst: InstancePlan, own: Mapping[str, str], *, alone: bool = False
    ) -> None:
        """Begin spawning `inst` with its own variables `own`; its outcome comes
        from `finished()` with `key`. `alone`: no other spawn follows at once (a
        restart), and an idle spawning thread takes it before anything else runs."""
        self._start(key, inst, own, alone)

    def finished(self, *, keep: int | None = None) -> list[tuple[K, Outcome]]:
        """The outcomes that are in, in order; with `keep`, first wait until no
        more than `keep` spawns are still in flight."""
        self._collect(keep)
        done, self._done = self._done, []
        return done

    def spawn(self, inst: InstancePlan, own: Mapping[str, str]) -> tuple[int, int, int]:
        """Start the process and wait for it: (pid, stdout read fd, stderr read fd),
        both non-blocking; SpawnError if it cannot start. (The outcomes of other
        spawns that come in meanwhile wait for `finished()`.)"""
        self._start(None, inst, own)
        self._collect(0)
        outcome, self._own = self._own, None
        if isinstance(outcome, SpawnError):
            raise outcome
        assert outcome is not None
        return outcome[:3]

    def _start(
        self, key: K | None, inst: InstancePlan, own: Mapping[str, str], alone: bool = False
    ) -> None:
        request: Request | None = None  # None: a switch of user or group (Popen)
        if inst.user is None and inst.group is None:
            command = self._command
            try:
                if command is None or not command.serves(inst):
                    # A wave spawns a service's replicas one after the other.
                    command = self._command = Command(inst)
                request = Request(inst, self._environment, own, command)
            except ValueError as error:  # a string no file name can hold
                self._land(key, self._outcome(error, inst, -1, -1))
                return
        # The thread with the fewest spawns in flight (an idle one for a restart).
        lean = min(self.leans, key=_in_flight) if request is not None and self.leans else None
        # Spare pipes are made for a thread (their write ends sent ahead to it), or
        # for the loop thread when no thread spawns; Popen's go nowhere else.
        spares = lean is not None or not self.leans
        spare = self._spares.pop(lean, None) if spares else None
        out_r, out_w, err_r, err_w = spare or _pipes()
        try:
            if request is None:
                result: Started | BaseException = self._popen(
                    inst, {**self._environment.base, **own}, out_w, err_w
                )
            elif lean is not None:
                fds = (out_w, err_w) if out_w >= 0 else None
                lean.submit(request, fds, wait=alone and not self._flying)
                self._flying.append((key, inst, out_r, err_r, lean))
                return
            else:
                try:
                    result = self._launcher.spawn(request, out_w, err_w)
                finally:
                    self._launcher.leave()  # this thread's cwd is the daemon's
        except (OSError, ValueError) as error:  # ValueError: a string no file name can hold
            result = error
        finally:
            for fd in (out_w, err_w):
                if fd >= 0:
                    _close(fd)  # with the GIL held (see _stat_inode): ours, open
            if spares:
                self._make_spare(lean)
        self._land(key, self._outcome(result, inst, out_r, err_r))

    def _make_spare(self, lean: LeanSpawner | None) -> None:
        """The next spawn's pipes, made while the thread spawns this one, their write
        ends sent to it at once: after an exit, its respawn is handed over without
        making any pipe or sending any fd (six system calls on the loop thread, and
        a recvmsg on the spawning thread, a fifth of the way from an exit to the
        spawn)."""
        try:
            out_r, out_w, err_r, err_w = _pipes()
        except SpawnError:
            return  # the spawn that needs them makes them, or says why it cannot
        if lean is not None:
            try:
                lean.send(out_w, err_w)
            except OSError:
                pass  # sent with the request that takes them, then
            else:
                _close(out_w)  # with the GIL held (see _stat_inode)
                _close(err_w)
                out_w = err_w = -1
        self._spares[lean] = (out_r, out_w, err_r, err_w)

    def _collect(self, keep: int | None) -> None:
        flying = self._flying
        while flying:
            lean = flying[0][4]  # in order: the oldest spawn's outcome first
            if keep is not None and len(flying) > keep:
                result = lean.result()
            elif (taken := lean.take()) is None:  # not yet
                return
            else:
                result = taken
            key, inst, out_r, err_r, _lean = flying.popleft()
            self._land(key, self._outcome(result, inst, out_r, err_r))

    def _land(self, key: K | None, outcome: Outcome) -> None:
        if key is None:
            self._own = outcome
        else:
            self._done.append((key, outcome))

    @staticmethod
    def _outcome(
        result: Started | BaseException, inst: InstancePlan, out: int, err: int
    ) -> Outcome:
        if isinstance(result, tuple):
            pid, started = result
            return pid, out, err, started
        for fd in (out, err):
            if fd >= 0:  # -1: failed before it had pipes
                os.close(fd)
        if isinstance(result, SpawnError):
            return result
        if isinstance(result, OSError):
            return SpawnError(_explain(result, inst), retry=result.errno in _SHORTAGES)
        if isinstance(result, ValueError):
            return SpawnError(f"cannot start {inst.argv[0]}: {result}")
        raise result

    def _popen(self, inst: InstancePlan, env: Mapping[str, str], out: int, err: int) -> Started:
        before = boot_clock()
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
        return pid, start_time_between(before, boot_clock())
