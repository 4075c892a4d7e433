"""Spawning from a thread with a file descriptor table of its own (spawn.LeanSpawner)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import resource
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from herdsman.core.plan import InstancePlan
from herdsman.runtime import procfs, pump, spawn
from herdsman.runtime.pump import NEW_PIPE
from herdsman.runtime.spawn import Spawner, SpawnError
from tests.conftest import alive, wait_for


def plan(tmp: Path, *argv: str, umask: int | None = None) -> InstancePlan:
    return InstancePlan("w", "w", 0, tuple(argv), {}, tmp, umask=umask)


@contextlib.contextmanager
def spawner() -> Iterator[Spawner]:
    sp = Spawner()
    try:
        yield sp
    finally:
        sp.close()


@contextlib.contextmanager
def child(sp: Spawner, inst: InstancePlan) -> Iterator[tuple[int, int, int]]:
    pid, out, err = sp.spawn(inst, {"PATH": os.environ.get("PATH", os.defpath)})
    try:
        yield pid, out, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(out)
        os.close(err)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, True)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_spawns_from_a_table_that_holds_none_of_the_daemons_fds(tmp: Path) -> None:
    # What a daemon with a few hundred instances holds: every spawn would copy it.
    held = [fd for _ in range(300) for fd in os.pipe2(os.O_CLOEXEC)]
    try:
        with spawner() as sp:
            assert len(sp.leans) == spawn.THREADS, sp
            sockets = set()
            for lean in sp.leans:
                table = f"/proc/self/task/{lean.native_id}/fd"
                in_table = os.listdir(table)
                assert len(in_table) == 6, in_table  # 0-2, /dev/null, the cwd, its socket
                sockets |= {os.readlink(f"{table}/{fd}") for fd in in_table} - {os.devnull}
            # Each its own end of its own pair (and the daemon's cwd).
            assert len(sockets) == len(sp.leans) + 1, sockets
            tid = sp.leans[0].native_id
            in_thread = os.listdir(f"/proc/self/task/{tid}/fd")
            with child(sp, plan(tmp, "sh", "-c", "echo out; echo err >&2")) as (_, out, err):
                assert read_all(out) == b"out\n"
                assert read_all(err) == b"err\n"
                # The pipes' write ends went back out of the thread's table, which
                # may hold the next spawn's, sent ahead.
                pipes = {os.fstat(out).st_ino, os.fstat(err).st_ino}
                table = f"/proc/self/task/{tid}/fd"
                left = {os.stat(f"{table}/{fd}").st_ino for fd in os.listdir(table)}
                assert not pipes & left
                assert len(left) <= len(in_thread) + 2
    finally:
        for fd in held:
            os.close(fd)


def test_the_child_starts_with_no_signal_blocked_in_its_own_cwd_and_umask(tmp: Path) -> None:
    workdir = tmp / "work"
    workdir.mkdir()
    with spawner() as sp:
        inst = plan(workdir, "sh", "-c", "umask; pwd; exec sleep 60", umask=0o027)
        with child(sp, inst) as (pid, out, _err):
            os.set_blocking(out, True)
            text = b""
            while text.count(b"\n") < 2:
                text += os.read(out, 4096)
            assert text.split() == [b"0027", str(workdir).encode()]
            # The spawning thread blocks every signal; its children must not.
            assert alive(pid)
            assert int(status_field(pid, "SigBlk"), 16) == 0


def test_the_daemons_cwd_and_umask_stay_as_they_were(tmp: Path) -> None:
    before, mask = os.getcwd(), os.umask(0o022)
    os.umask(mask)
    with spawner() as sp, child(sp, plan(tmp, "true", umask=0o077)):
        assert os.getcwd() == before
        current = os.umask(mask)
        os.umask(current)
        assert current == mask


def test_a_spawn_error_is_raised_in_the_caller_and_leaks_no_fd(tmp: Path) -> None:
    with spawner() as sp:
        assert sp.leans
        table = f"/proc/self/task/{sp.leans[0].native_id}/fd"
        mine = len(os.listdir("/proc/self/fd"))
        theirs = len(os.listdir(table))
        with pytest.raises(SpawnError, match="does not exist"):
            sp.spawn(plan(tmp, str(tmp / "missing")), {})
        with pytest.raises(SpawnError, match="working directory"):
            sp.spawn(plan(tmp / "nowhere", "true"), {})
        assert len(os.listdir("/proc/self/fd")) == mine
        # The thread may hold the next spawn's two write ends, sent ahead.
        assert len(os.listdir(table)) in (theirs, theirs + 2)


def test_without_unshare_it_spawns_from_the_loop_thread(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CLONE_THREAD: refused in a process with threads, as a seccomp filter would refuse.
    monkeypatch.setattr(spawn, "CLONE_FILES", 0x10000)
    with spawner() as sp:
        assert not sp.leans
        with child(sp, plan(tmp, "sh", "-c", "echo fine")) as (_pid, out, _err):
            assert read_all(out) == b"fine\n"


def test_closing_ends_every_thread() -> None:
    sp = Spawner()
    assert sp.leans
    tids = [lean.native_id for lean in sp.leans]
    sp.close()
    # The OS threads go a moment after Python's join returns.
    wait_for(lambda: not any(Path(f"/proc/self/task/{tid}").exists() for tid in tids), 5.0)


def test_a_spawn_goes_out_on_a_free_thread_but_lands_in_the_order_started(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two threads, a spawn that takes its time on one does not hold the next
    back (a restart beside a wave): it goes out at once on the other. Its outcome
    comes after the first's all the same, in the order they were started (the
    supervisor counts a wave's spawns landed by that order)."""
    monkeypatch.setattr(spawn, "THREADS", 2)
    release = threading.Event()
    original = spawn.Launcher.spawn

    def held(self: spawn.Launcher, request: spawn.Request, out: int, err: int) -> spawn.Started:
        started = original(self, request, out, err)
        if request.inst.name == "slow":
            release.wait(30.0)
        return started

    monkeypatch.setattr(spawn.Launcher, "spawn", held)
    outcomes = []
    try:
        with spawner() as sp:
            if len(sp.leans) < 2:
                pytest.skip("no spawning thread here (unshare refused)")
            sp.start("slow", replace(plan(tmp, "true"), name="slow"), {})
            sp.start("quick", plan(tmp, "true"), {}, alone=True)
            quick = sp.leans[1]
            wait_for(lambda: not quick.results.empty(), 10.0)  # spawned, while slow is held
            assert sp.finished() == []  # not before slow's
            release.set()
            outcomes = sp.finished(keep=0)
    finally:
        release.set()
        for _key, outcome in outcomes:
            assert not isinstance(outcome, SpawnError)
            pid, out, err, _started = outcome
            os.waitpid(pid, 0)
            os.close(out)
            os.close(err)
    assert [key for key, _ in outcomes] == ["slow", "quick"]


def test_own_variables_replace_the_daemons_once_and_the_rest_is_kept(tmp: Path) -> None:
    # The daemon's environment is encoded once, for every child: what an instance
    # sets itself replaces it (never a second entry, which getenv might find first).
    daemon_env = {"PATH": os.environ.get("PATH", os.defpath), "KEPT": "daemon", "SET": "daemon"}
    sp = Spawner(daemon_env)
    try:
        for value in ("first", "second"):  # the second spawn copies the same template
            pid, out, err = sp.spawn(plan(tmp, "env"), {"SET": value, "NEW": value})
            try:
                lines = read_all(out).decode().splitlines()
            finally:
                os.waitpid(pid, 0)
                os.close(out)
                os.close(err)
            assert sorted(line for line in lines if not line.startswith("PATH=")) == [
                "KEPT=daemon",
                f"NEW={value}",
                f"SET={value}",
            ]
    finally:
        sp.close()


def test_fd_inode_is_fstats_and_says_why_it_cannot_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        assert spawn.fd_inode is not procfs.fd_inode  # libc's, on this machine
        for fd in (r, w):
            assert spawn.fd_inode(fd) == os.fstat(fd).st_ino
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(OSError, match=os.strerror(errno.EBADF)) as error:
        spawn.fd_inode(r)
    assert error.value.errno == errno.EBADF
    # Without libc's fstat, or where st_ino is elsewhere: os.fstat's.
    monkeypatch.setattr(spawn, "_plibc", object())
    assert spawn._stat_inode() is procfs.fd_inode
    monkeypatch.undo()

    class Elsewhere:
        st_ino = 0

    class OsSaysElsewhere:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def fstat(self, _fd: int) -> type[Elsewhere]:
            return Elsewhere

    monkeypatch.setattr(spawn, "os", OsSaysElsewhere())
    assert spawn._stat_inode() is procfs.fd_inode


def test_a_spawn_encodes_only_the_own_variables_its_template_does_not_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first spawn of a set of own names makes their template, holding its values;
    the next ones encode only those whose value differs (in any order), and each
    gets its own values whatever the template holds."""
    encoded: list[str] = []
    real_entry = spawn._entry

    def entry(key: str, value: str) -> bytes:
        encoded.append(f"{key}={value}")
        return real_entry(key, value)

    environment = spawn.Environment({"KEPT": "daemon", "SET": "daemon"})
    monkeypatch.setattr(spawn, "_entry", entry)

    def envp(own: dict[str, str]) -> list[str]:
        array, template = environment.envp(own)
        assert template is not array
        return sorted(os.fsdecode(item) for item in array if item is not None)

    first = {"SERVICE": "web", "INSTANCE": "web.0", "SET": "own"}
    assert envp(first) == ["INSTANCE=web.0", "KEPT=daemon", "SERVICE=web", "SET=own"]
    assert sorted(encoded) == ["INSTANCE=web.0", "SERVICE=web", "SET=own"]
    encoded.clear()
    again = {"SET": "own", "INSTANCE": "web.1", "SERVICE": "web"}  # another order
    assert envp(again) == ["INSTANCE=web.1", "KEPT=daemon", "SERVICE=web", "SET=own"]
    assert encoded == ["INSTANCE=web.1"]
    encoded.clear()
    other = {"SERVICE": "api", "INSTANCE": "api.0", "SET": "own"}
    assert envp(other) == ["INSTANCE=api.0", "KEPT=daemon", "SERVICE=api", "SET=own"]
    assert sorted(encoded) == ["INSTANCE=api.0", "SERVICE=api"]
    assert envp(first) == ["INSTANCE=web.0", "KEPT=daemon", "SERVICE=web", "SET=own"]
    assert envp({"NEW": "x"}) == ["KEPT=daemon", "NEW=x", "SET=daemon"]


@pytest.mark.parametrize("lean", [True, False], ids=["thread", "loop thread"])
def test_each_child_writes_to_its_own_pipes_however_the_fds_are_numbered(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, lean: bool
) -> None:
    """The child's fds 0-2 are set up once for the fd numbers the pipes had last
    time: in the loop thread (no thread of its own) the numbers change as the
    previous children's read ends stay open, and so must the setup."""
    if not lean:
        monkeypatch.setattr(spawn, "CLONE_FILES", 0x10000)  # as test_without_unshare_...
    with spawner() as sp, contextlib.ExitStack() as children:
        assert bool(sp.leans) is lean
        ends = []
        for i in range(4):
            inst = plan(tmp, "sh", "-c", f"echo out {i}; echo err {i} >&2")
            _pid, out, err = children.enter_context(child(sp, inst))
            ends.append((out, err))
        assert len({fd for pair in ends for fd in pair}) == 8
        for i, (out, err) in enumerate(ends):
            assert read_all(out) == f"out {i}\n".encode()
            assert read_all(err) == f"err {i}\n".encode()


def test_the_next_spawns_pipes_wait_ready_and_go_with_the_spawner(tmp: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with spawner() as sp:
        held = set(os.listdir("/proc/self/fd")) - before
        # /dev/null, the daemon's cwd and, per thread, the socket to it and the read
        # ends of its next spawn's pipes (their write ends went ahead to it).
        assert len(held) == 2 + 3 * len(sp.leans)
        with child(sp, plan(tmp, "sh", "-c", "echo fine")) as (_pid, out, err):
            assert {str(out), str(err)} <= held  # the pipes made ahead
            # And the next ones.
            assert len(set(os.listdir("/proc/self/fd")) - before) == len(held) + 2
            assert read_all(out) == b"fine\n"
    assert set(os.listdir("/proc/self/fd")) == before


def test_each_spawn_runs_its_own_command_in_its_own_cwd(tmp: Path) -> None:
    """Replicas share their argv and cwd objects, and the spawner reuses their
    encoding from one spawn to the next: an instance with another command, or the
    same command in another directory, must not run the last one's."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    argv = ("sh", "-c", "pwd; echo $0")
    first = InstancePlan("w.0", "w", 0, argv, {}, tmp / "a")
    same = InstancePlan("w.1", "w", 1, argv, {}, tmp / "a")
    elsewhere = InstancePlan("x.0", "x", 0, argv, {}, tmp / "b")
    other = InstancePlan("y.0", "y", 0, ("sh", "-c", "echo other"), {}, tmp / "a")
    with spawner() as sp, contextlib.ExitStack() as children:
        outputs = []
        for inst in (first, same, elsewhere, other, first):
            _pid, out, _err = children.enter_context(child(sp, inst))
            outputs.append(read_all(out).decode())
    a, b = f"{tmp / 'a'}\nsh\n", f"{tmp / 'b'}\nsh\n"
    assert outputs == [a, a, b, "other\n", a]


def test_a_wave_in_one_cwd_enters_it_once_and_the_thread_goes_back_home(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher stays in the cwd its last spawn entered until told to leave (the
    spawning thread leaves once no request is queued): the replicas of a service,
    spawned one after the other, enter their cwd once."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    entered: list[bytes] = []
    real_chdir = spawn._chdir

    def chdir(path: bytes) -> int:
        entered.append(path)
        return int(real_chdir(path))

    monkeypatch.setattr(spawn, "_chdir", chdir)
    home = os.getcwd()
    after: list[str] = []  # the thread's cwd after each spawn
    seen: dict[str, str] = {}
    errors: list[BaseException] = []

    def spawn_in_a_thread_of_its_own() -> None:
        # As a spawning thread: its cwd its own (CLONE_FS), not the test's.
        assert spawn._libc.unshare(spawn.CLONE_FS) == 0
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        launcher = spawn.Launcher(devnull, here, {}, spawn._attributes())
        environment = spawn.Environment({"PATH": os.environ.get("PATH", os.defpath)})
        pids = []
        try:
            for cwd in ("a", "a", "a", "b"):
                inst = plan(tmp / cwd, "true")
                request = spawn.Request(inst, environment, {}, spawn.Command(inst))
                r, w = os.pipe2(os.O_CLOEXEC)
                try:
                    pids.append(launcher.spawn(request, w, w)[0])
                finally:
                    os.close(r)
                    os.close(w)
                after.append(os.getcwd())
            launcher.leave()
            seen["left"] = os.getcwd()
            inst = plan(tmp / "nowhere", "true")
            request = spawn.Request(inst, environment, {}, spawn.Command(inst))
            with pytest.raises(FileNotFoundError):
                launcher.spawn(request, 1, 2)
            seen["failed"] = os.getcwd()
        except BaseException as error:
            errors.append(error)
        finally:
            for pid in pids:
                os.waitpid(pid, 0)
            launcher.close()
            os.close(devnull)
            os.close(here)

    thread = threading.Thread(target=spawn_in_a_thread_of_its_own)
    thread.start()
    thread.join(30)
    assert not errors, errors
    a, b = os.fsencode(tmp / "a"), os.fsencode(tmp / "b")
    assert entered == [a, b, os.fsencode(tmp / "nowhere")]
    assert after == [str(tmp / "a")] * 3 + [str(tmp / "b")]
    assert seen["left"] == seen["failed"] == home
    assert os.getcwd() == home


def test_the_spawning_threads_wait_in_the_daemons_cwd(tmp: Path) -> None:
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    argv = ("sh", "-c", "pwd")
    with spawner() as sp:
        names = ["a", "a", "b", "a", "b", "b"]
        for i, cwd in enumerate(names):
            sp.start(i, InstancePlan(f"w.{i}", "w", i, argv, {}, tmp / cwd), {})
        outcomes = sp.finished(keep=0)
        try:
            assert [key for key, _ in outcomes] == list(range(len(names)))
            for (_key, outcome), cwd in zip(outcomes, names, strict=True):
                assert not isinstance(outcome, SpawnError), outcome
                _pid, out, _err, _started = outcome
                assert read_all(out) == f"{tmp / cwd}\n".encode()
        finally:
            for _key, outcome in outcomes:
                if not isinstance(outcome, SpawnError):
                    os.waitpid(outcome[0], 0)
                    os.close(outcome[1])
                    os.close(outcome[2])
        for lean in sp.leans:
            assert os.readlink(f"/proc/self/task/{lean.native_id}/cwd") == os.getcwd()


def test_a_restart_holds_the_loop_until_its_child_is_spawned(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spawn started alone (a restart) returns once posix_spawn has: its outcome is
    in, and the loop's bookkeeping after it never ran beside the child's exec (on a
    busy machine, on the child's CPU)."""
    monkeypatch.setattr(spawn, "GATE_TIMEOUT", 30.0)  # no machine is that slow
    with spawner() as sp:
        if not sp.leans:
            pytest.skip("no spawning thread here (unshare refused)")
        sp.start("k", plan(tmp, "sh", "-c", "exit 0"), {}, alone=True)
        ((key, outcome),) = sp.finished()  # without waiting
        assert key == "k"
        assert not isinstance(outcome, SpawnError)
        pid, out, err, _started = outcome
        os.waitpid(pid, 0)
        os.close(out)
        os.close(err)


def test_a_child_ignores_what_the_daemon_ignores_but_sigpipe_and_sigxfsz(tmp: Path) -> None:
    """The child's reset of the daemon's signal handlers sets most signals to their
    default unasked (see spawn._attributes): a signal ignored when the spawner is
    made stays ignored, as exec keeps it; SIGPIPE and SIGXFSZ, which Python
    ignores, are back to their default, and so is a handled signal."""

    def bit(sig: int) -> int:
        return 1 << (sig - 1)

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        with spawner() as sp:
            signal.signal(signal.SIGHUP, lambda *_: None)  # as the daemon's handlers
            with child(sp, plan(tmp, "sleep", "60")) as (pid, _out, _err):
                ignored = int(status_field(pid, "SigIgn"), 16)
                caught = int(status_field(pid, "SigCgt"), 16)
                blocked = int(status_field(pid, "SigBlk"), 16)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert ignored & bit(signal.SIGUSR2)
    assert not ignored & (bit(signal.SIGPIPE) | bit(signal.SIGXFSZ) | bit(signal.SIGHUP))
    assert caught == blocked == 0


def test_a_spawns_pipes_keep_the_kernels_default_size(tmp: Path) -> None:
    """Not resized on the loop thread as each instance starts (two system calls, most
    pipes never hold more than a few lines): their pump grows one it finds busy
    (see pump.NEW_PIPE), and takes NEW_PIPE for their size without asking."""
    with spawner() as sp, child(sp, plan(tmp, "true")) as (_pid, out, err):
        for fd in (out, err):
            assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) <= NEW_PIPE < pump.READ_SIZE


def test_a_spawn_whose_fds_cannot_be_handed_over_fails_alone(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handing the pipes to the thread may fail (ETOOMANYREFS: too many fds in
    flight): those made ahead go with their request instead; if that fails too,
    that spawn fails, and the next one gets its own pipes and command, not the
    failed one's."""
    send = spawn.LeanSpawner.send
    calls = []

    def fail_once(lean: spawn.LeanSpawner, out: int, err: int) -> None:
        calls.append((out, err))
        if len(calls) <= spawn.THREADS + 1:  # ahead (to each thread), then with the request
            raise OSError(errno.ETOOMANYREFS, os.strerror(errno.ETOOMANYREFS))
        send(lean, out, err)

    monkeypatch.setattr(spawn.LeanSpawner, "send", fail_once)
    with spawner() as sp:
        assert sp.leans
        sp.start("first", plan(tmp, "sh", "-c", "echo first"), {})
        sp.start("second", plan(tmp, "sh", "-c", "echo second"), {})
        outcomes = dict(sp.finished(keep=0))
    first, second = outcomes["first"], outcomes["second"]
    assert isinstance(first, SpawnError)
    assert not isinstance(second, SpawnError)
    pid, out, err, _started = second
    try:
        assert read_all(out) == b"second\n"
    finally:
        os.waitpid(pid, 0)
        os.close(out)
        os.close(err)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
def test_a_spawn_as_a_user_leaves_the_pipes_sent_ahead_to_the_threads_next(tmp: Path) -> None:
    """The next spawn's pipes are made, and their write ends sent to the spawning
    thread, ahead; a spawn through Popen (a user to switch to) makes its own, and
    the thread's next spawn writes to the pipes the daemon reads."""
    as_root = replace(plan(tmp, "sh", "-c", "echo popen"), user="root")
    with spawner() as sp:
        for inst, said in ((as_root, b"popen\n"), (plan(tmp, "sh", "-c", "echo lean"), b"lean\n")):
            with child(sp, inst) as (_pid, out, _err):
                assert read_within(out, 10.0) == said


def test_a_spawn_that_cannot_be_encoded_leaves_the_pipes_sent_ahead(tmp: Path) -> None:
    """A request that fails before it reaches the thread (a variable no environment
    can hold) must not leave the pipes sent ahead to the next spawn's mercy."""
    with spawner() as sp:
        with pytest.raises(SpawnError, match="cannot start sh"):
            sp.spawn(plan(tmp, "sh", "-c", "echo never"), {"BAD": "\ud800"})
        with child(sp, plan(tmp, "sh", "-c", "echo next")) as (_pid, out, _err):
            assert read_within(out, 10.0) == b"next\n"


def read_within(fd: int, seconds: float) -> bytes:
    """All the pipe gives until its end, which must come within `seconds`."""
    deadline = time.monotonic() + seconds
    chunks = []
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            if not (chunk := os.read(fd, 65536)):
                return b"".join(chunks)
            chunks.append(chunk)
    raise AssertionError(f"no end of the pipe within {seconds}s, after {b''.join(chunks)!r}")


def test_fds_the_thread_has_no_room_for_are_told_not_taken_for_the_last_ones() -> None:
    """A message whose fds the receiving table has no room for comes without them
    (the kernel installs none): the mailbox says so, and never gives the fds of the
    message before, whose numbers the buffer still holds (closed by then, or
    another spawn's)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    mailbox = spawn._Mailbox(theirs.fileno())
    r, w = os.pipe2(os.O_CLOEXEC)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        socket.send_fds(ours, [b"s"], [r, w])
        first = mailbox.fds()
        assert isinstance(first, tuple)
        for fd in first:
            os.close(fd)
        lowest = os.dup(0)  # the lowest free number: no fd can be installed from it on
        os.close(lowest)
        socket.send_fds(ours, [b"s"], [r, w])
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            second = mailbox.fds()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert isinstance(second, OSError), second
        assert second.errno == errno.EMFILE
    finally:
        for fd in (r, w):
            os.close(fd)
        ours.close()
        theirs.close()


def test_closing_twice_closes_once() -> None:
    spawner: Spawner[str] = Spawner({})
    spawner.close()
    spawner.close()  # `up` closes the one it made ahead, if its daemon did already
    assert not [t for t in threading.enumerate() if t.name == "herdsman-spawn"]


def test_up_starts_its_spawning_threads_while_the_plan_is_on_its_way(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made after the plan, they were 3M instructions and a wait for two threads to
    run between the plan and the first spawn. And closed if no plan comes."""
    from herdsman.cli.commands import EXIT_USAGE
    from herdsman.cli.main import main
    from herdsman.runtime import planner

    seen: list[str] = []

    def no_plan(_helper: planner.Helper) -> None:
        seen.extend(t.name for t in threading.enumerate() if t.name == "herdsman-spawn")
        raise planner.PlanError(["no plan here"])

    monkeypatch.setattr(planner, "request_plan", lambda _config: planner.Helper(-1, -1))
    monkeypatch.setattr(planner, "receive_plan", no_plan)
    try:
        assert main(["-c", str(tmp / "herdsman.toml"), "up"]) == EXIT_USAGE
    finally:
        gc.enable()  # `up` turns it off until its first wave is out
    assert seen == ["herdsman-spawn"] * spawn.THREADS
    assert not [t for t in threading.enumerate() if t.name == "herdsman-spawn"]
