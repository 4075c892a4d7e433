"""The runner: one event queue in front of the herd, and the executors of its actions.

Every source (the reaper, timers, probes, the notify socket, the memory sampler, API
requests, the file watcher) `submit`s an event; the runner feeds them one at a time
to `core.herd` and carries out the actions it returns: spawning, signalling process
groups, arming timers, starting and stopping checks, and publishing each change on
the change feed (`ChangeFeed`). Results (Spawned, SpawnFailed) go back on the queue,
never by a call back into the herd. Everything runs on the one event-loop thread,
but the spawns themselves: the spawning thread runs them while the loop goes on
(see spawn.py), and their outcomes come back on the queue as they land.

A wave of spawns (the first one of `up`, a `start` of many replicas, a reload that
adds many) waits in the herd's queue, and the runner takes it a slice of the loop's
time at a time (SLICE), so a status request, a signal or the watchdog is served
between two slices rather than after the last spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import re
import signal
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from herdsman.core import herd as hd
from herdsman.core.lifecycle import (
    Event,
    Exited,
    Instance,
    Spawned,
    SpawnFailed,
)
from herdsman.core.plan import InstancePlan, Plan
from herdsman.core.signals import signal_name
from herdsman.core.states import State
from herdsman.runtime.escapes import Escapes
from herdsman.runtime.leftovers import STATE_DIR_VARIABLE
from herdsman.runtime.procfs import process_start_time
from herdsman.runtime.pump import NEW_PIPE, Batches, LineSink, LogPump, hold, hung_up
from herdsman.runtime.reaper import Reaper
from herdsman.runtime.records import InstanceRecord, timer_event, timer_record
from herdsman.runtime.signals import Signals
from herdsman.runtime.spawn import (
    IN_FLIGHT,
    Outcome,
    Spawner,
    SpawnError,
    close_inherited_fds,
    fd_inode,
    own_environment,
)
from herdsman.runtime.systemd import without_manager_variables


@dataclass(eq=False, slots=True)
class Managed:
    """One instance: its pure lifecycle plus the runtime resources it holds.

    Slots, and nothing held that a spawn can build (its environment): thousands
    of these live as long as the daemon.
    """

    core: Instance
    plan: InstancePlan  # the herd's, refreshed by a reload
    timer: asyncio.TimerHandle | None = None
    timer_due: tuple[float, Event] | None = None  # what `timer` will feed, and when
    # May outlive a process (EOF comes later). A list: a set costs 216 bytes empty.
    pumps: list[LogPump] = field(default_factory=list)
    pipes: list[tuple[str, int]] = field(default_factory=list)  # (stream, inode) of the process
    start_time: tuple[int, int | None] = (0, None)  # (pid, its start time), read once
    foreign: bool = False  # adopted after a crash: not our child, watched by pidfd
    last_err: bytes = b""  # the last line its process wrote on stderr: why it exited
    spawning: bool = False  # handed to the spawning thread, its outcome not in yet

    @property
    def live(self) -> bool:
        """Whether it has a process, or may have one the moment its spawn lands."""
        return self.spawning or self.core.live

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def service(self) -> str:
        return self.plan.service


# (instance, the state it left, the state it entered, the event): `old is new` when
# only its process or its readiness changed.
Subscriber = Callable[[Managed, State, State, Event], None]


class ChangeFeed:
    """The change feed: every change of an instance, once, in order, to every subscriber.

    The runner publishes `(managed, old, new, event)` once per change the herd
    reports, after the actions of the events that caused it have been carried out
    (so a spawn's change shows its process). Everything that watches the herd
    subscribes, in one place (daemon.py): state.json, hooks, the daemon's log lines
    and its status to systemd, `/v1/events`, the console of `up`. A subscriber runs
    on the loop's thread and must not wait: what takes time (a hook) it queues.
    """

    __slots__ = ("_subscribers",)

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, managed: Managed, old: State, new: State, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber(managed, old, new, event)


# How long the runner takes spawns from the herd's queue before it lets the loop
# serve the rest (a status request, a signal, the watchdog): the wave goes on in the
# next turn. Short enough for a status during a wave of thousands to be answered
# within a few slices; long enough that the turns in between cost nothing
# measurable (a turn of the loop is tens of microseconds).
SLICE = 0.010
# Spawns taken from the herd's queue at a time, between two looks at the clock: a
# spawn is 0.1 ms or so of the loop's time, and a take per spawn (an event through
# the herd) was a few percent of it.
ROOM = 8
# A start wave's first instances are started (and their spawns handed to the
# spawning threads) before the herd takes the start of the rest: that costs the
# loop some 35,000 instructions an instance, and the changes it makes 9,000 more
# (88M at 2,000 instances, 20 ms or so), which came before the first spawn and now
# come while the threads spawn these. As many as may be in flight without the loop
# waiting for one to land (see _spawn).
FIRST = IN_FLIGHT

# The last stderr line of a process that fails joins its exit in the message.
LAST_WORDS_MAX = 200
LAST_WORDS_SCAN = 4096  # bytes at the end of a batch searched for its last line
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


class SpawnJournal(Protocol):
    """Told of every spawn as it lands (see statefile.StateWriter), and of the start
    waves: held while one goes out, released once none does."""

    def spawned(self, name: str, pid: int, pipes: list[int], at: float) -> None: ...

    def flush(self) -> None:
        """Write what `spawned` was told: before any change of those spawns is
        published, and by the end of the run that took them in."""

    def hold(self) -> None: ...

    def release(self) -> None: ...


def new_spawner(environ: dict[str, str] | None = None) -> Spawner[Managed]:
    """The spawner of a supervisor's children (its threads started): each child gets
    `environ` (default: this process's) without the variables of herdsman's own
    manager. Made by `up` while its plan is on its way, it takes the 3M
    instructions of its making, and the wait for its threads to be running, off
    the way from the plan to the first spawn."""
    base_env = dict(os.environ if environ is None else environ)
    without_manager_variables(base_env)
    return Spawner(base_env)


class Checks(Protocol):
    """Runs readiness probes and health checks (see probes.Prober)."""

    def start(self, managed: Managed, role: hd.Role, pid: int) -> None: ...

    def stop(self, name: str, role: hd.Role | None) -> None: ...


class Supervisor:
    def __init__(
        self,
        plan: Plan,
        *,
        sink: LineSink,
        environ: dict[str, str] | None = None,
        spawner: Spawner[Managed] | None = None,
    ) -> None:
        """`spawner`: one made ahead (see new_spawner), else one is made here."""
        self._loop = asyncio.get_running_loop()
        self._sink = sink
        self.changes = ChangeFeed()  # every change, to whoever subscribes
        self._reaper = Reaper(self._loop)
        self.signals = Signals()  # the process's signal handling, SIGCHLD and the daemon's
        self.escapes = Escapes(
            self._loop,
            lambda: self.plan.state_dir,
            self._main_of,
            self._known_pids,
            lambda: self._spawner.pending > 0,
        )
        self._reaper.on_orphan = self.escapes.orphan_reaped
        # Every spawned pid is known before an exit is collected: one collected
        # first would pass for an orphan's, and its instance would wait forever.
        self._reaper.before_reap = self._take_in_landed
        self._reaper.likely_exited = self._hung_up
        # Bound once, each held for every instance (the reaper's watch of its process,
        # its pumps): a bound method made per spawn is 64 bytes each.
        self._on_exit = self._exited
        self._err_sink = self._err_lines
        self._on_pump_closed = self._pump_closed
        self._random = random.Random()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._waiters_check_scheduled = False
        self._queue: deque[hd.Event] = deque()
        self._changes: deque[tuple[Managed, State, State, Event]] = deque()  # to publish
        # Instance -> its changes that wait for its spawn to land (see _run).
        self._held: dict[str, list[tuple[Managed, State, State, Event]]] = {}
        self._running = False
        # The herd's queue has the loop again in a later turn (see _run).
        self._next_slice: asyncio.Handle | None = None
        self._taking = True  # False once this image hands over or closes
        self._waves: list[_Wave] = []  # see start_services
        self._collecting = False  # the cyclic collector was on as the first of them began
        self._taken = 0  # spawns taken from the herd's queue, ever
        self.herd = hd.Herd(plan)  # the one owner of the plan
        self.instances: dict[str, Managed] = {}
        self.by_service: dict[str, list[Managed]] = {}
        self._gone: dict[str, Managed] = {}  # removed by the reload being applied
        self._timers: dict[str, asyncio.TimerHandle] = {}  # watchdogs, by instance
        self._spawner = spawner if spawner is not None else new_spawner(environ)
        self.journal: SpawnJournal | None = None
        self._unjournalled = False  # the journal was told of spawns and not flushed
        self.batches: Batches | None = None  # told where each read of a pipe begins and ends
        self.checks: Checks | None = None
        self._release_readers: Callable[[], None] | None = None  # see pump.hold
        self.say: Callable[[hd.Say], None] | None = None  # for the daemon's log
        self._sync()

    @property
    def plan(self) -> Plan:
        return self.herd.plan

    def _sync(self) -> None:
        """Managed instances for the herd's (after a new plan: new ones in, removed
        ones kept in `_gone` until the herd says to forget them)."""
        self._state_dir = str(self.plan.state_dir)  # each spawn's environment has it
        old = self.instances
        self.instances, self.by_service = {}, {}
        herd = self.herd
        for name, members in herd.by_service.items():
            managed_members = []
            for core in members:
                managed = old.pop(core.name, None)
                if managed is None:
                    managed = Managed(core, herd.plans[core.name])
                else:
                    managed.plan = herd.plans[core.name]
                managed_members.append(managed)
                self.instances[core.name] = managed
            self.by_service[name] = managed_members
        self._gone.update(old)

    def replace_plan(self, plan: Plan, start: tuple[str, ...] = ()) -> list[Managed]:
        """Take `plan` as the new truth (a reload), then start `start`. Instances that
        stay keep their process and lifecycle with the new settings in place; those
        that go must have been stopped and are returned, their pumps closed."""
        self.submit(hd.NewPlan(plan, start))
        gone, self._gone = list(self._gone.values()), {}
        return gone

    # --- lifecycle of the supervisor itself ------------------------------------

    def open(self) -> None:
        close_inherited_fds()
        self._release_readers = hold(self._loop)
        self.signals.open(self._loop)
        self._reaper.start(self.signals)
        for fd in self._spawner.wake_fds():
            self._loop.add_reader(fd, self._woken)

    def close(self) -> None:
        self.settle()
        self._stop_taking()
        for name in list(self._timers):
            self._cancel(name)
        for managed in self.instances.values():
            self._cancel_timer(managed)
            for pump in list(managed.pumps):
                pump.close()
        self._reaper.close()
        self.signals.close()
        for fd in self._spawner.wake_fds():
            self._loop.remove_reader(fd)
        self._spawner.close()
        if self._release_readers is not None:
            self._release_readers()
            self._release_readers = None

    # --- requests -----------------------------------------------------------

    def start_services(
        self,
        services: Iterable[str] | None = None,
        *,
        manual: bool = False,
        then: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        """Start the named services (default: every autostart one) and their
        dependencies, in start waves. Returns once the first slice of spawns is out;
        the wave goes on while the loop serves the rest. Once it is out (each of its
        instances spawned, or dropped by a stop, and each spawn landed; what their
        exits respawn is not the wave's), `then` is called, at once, and the answer
        is done."""
        # Without the cyclic collector meanwhile: the wave makes objects that live
        # as long as their instance (pumps, reader handles, records), not garbage,
        # and each full collection walks them all again while it holds the GIL
        # (65 ms each, five times while 8,000 start), which the spawning thread
        # needs after every spawn. It runs again when the wave is out, and no
        # other is: of waves that overlap, the first to begin keeps what it found,
        # and the last to be out turns it back on.
        if not self._waves:
            self._collecting = gc.isenabled()
        gc.disable()
        if self.journal is not None:
            self.journal.hold()  # its first slice goes out in the submit
        order = tuple(self.herd.start_order(services))
        # Started in order either way: the rest's spawns queue behind the first's.
        for names in (order[:FIRST], order[FIRST:]):
            if names:
                self.submit(hd.StartRequest(names, manual, dependencies=False))
        queued = self.herd.queued
        # The queue is in order: the wave is out of it once its last is (or the
        # one before it, when it queued nothing).
        wave = _Wave(self._loop.create_future(), then, next(reversed(queued), None))
        self._waves.append(wave)
        self._check_waves()
        return wave.out

    def start(self, managed: Managed, *, manual: bool = False) -> None:
        """Start one instance once its dependencies are met (they are not started)."""
        self.submit(hd.StartRequest((managed.name,), manual, dependencies=False))

    def stop(self, managed: Managed) -> None:
        self.submit(hd.StopRequest((managed.name,)))

    def kill(self, managed: Managed) -> None:
        """Stop at once: SIGKILL to the whole process group."""
        self.submit(hd.StopRequest((managed.name,), kill=True))

    async def stop_all(self, timeout: float) -> bool:  # noqa: ASYNC109 -- a grace period: SIGKILL after it
        """Stop everything, dependents first; SIGKILL what is left after `timeout`.

        Returns False when something had to be killed.
        """
        deadline = self._loop.time() + timeout
        if self.herd.queued:
            # What was to be spawned never is (it has no process to stop in order).
            self.submit(hd.StopRequest(tuple(self.herd.queued)))
        for wave in self.herd.stop_waves():
            members = [self.instances[name] for name in wave]
            self.submit(hd.StopRequest(tuple(wave)))
            if not await self.wait_stopped(members, deadline - self._loop.time()):
                self.kill_all()
                await self.wait_until(lambda: not self.any_live(), 10.0)
                return False
        return True

    async def wait_stopped(self, members: list[Managed], timeout: float | None) -> bool:  # noqa: ASYNC109 -- as wait_until
        """Wait until none of `members` has a process; False on timeout."""
        return await self.wait_until(_NoneLive(members), timeout)

    async def run_command(
        self,
        inst: InstancePlan,
        argv: tuple[str, ...],
        timeout: float,  # noqa: ASYNC109 -- it kills the command's group when time is up
    ) -> tuple[int | None, str]:
        """Run a short command (a probe) as `inst` would run: its env, cwd, user.

        Returns (exit code or None when killed/timed out/unspawnable, one-line reason
        or the last line it wrote). A command that outlives `timeout` has its whole
        process group killed.
        """
        probe = replace(inst, argv=argv)
        env = own_environment(inst)
        try:
            pid, out, err = self._spawner.spawn(probe, env)
        except SpawnError as error:
            return None, str(error)
        finally:
            self._landed()  # the instances' outcomes that came in before the probe's
        lines: list[bytes] = []

        def keep(_name: str, _stream: str, chunk: bytes, _ts: float) -> None:
            lines.extend(chunk.rsplit(b"\n", 5)[-5:])
            del lines[:-5]

        pumps = [LogPump(self._loop, fd, inst.name, "probe", keep) for fd in (out, err)]
        exited: asyncio.Future[tuple[int | None, int | None]] = self._loop.create_future()
        self._reaper.watch(pid, _probe_exited, exited)
        try:
            code, sig = await asyncio.wait_for(asyncio.shield(exited), timeout)
        except TimeoutError:
            kill_group(pid)
            await exited
            return None, f"timed out after {timeout:g}s"
        except asyncio.CancelledError:
            kill_group(pid)  # the probe is no longer wanted (its instance went away)
            raise
        finally:
            for pump in pumps:
                pump.drain()
                pump.close()
        last = lines[-1].decode("utf-8", "replace").strip() if lines else ""
        if sig is not None:
            return None, f"killed by {signal_name(sig)}"
        return code, last

    def signal_group(self, managed: Managed, sig: int) -> None:
        """Send `sig` to the instance's whole process group, if it has a process."""
        pid = managed.core.pid
        if pid is not None:
            # Already gone? Then its exit status is on its way.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def kill_all(self) -> None:
        self.submit(hd.StopRequest(tuple(self.instances), kill=True))

    def any_live(self) -> bool:
        return any(m.live for m in self.instances.values())

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:  # noqa: ASYNC109 -- False on timeout is the answer (the API's timed_out)
        """Wait until `predicate()` holds after some state change; False on timeout."""
        if predicate():
            return True
        future: asyncio.Future[None] = self._loop.create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    # --- the event queue and the executors -------------------------------------------

    def submit(self, event: hd.Event, *, publish: bool = True) -> None:
        """Put `event` on the queue; run the queue unless it is running already (an
        event submitted while actions execute waits its turn: no recursion). Without
        `publish`, the changes wait for the next run that publishes."""
        self._queue.append(event)
        self._run(publish=publish)

    def _run(self, *, publish: bool = True) -> None:
        """Carry out the queue's events; with `publish`, publish the changes; then
        give the herd room for its queued spawns, ROOM at a time (the changes of
        those that landed meanwhile, their log lines and journal entries, are out
        before the next), while this turn's slice lasts."""
        if self._running:
            return
        self._running = True
        queue, changes, held = self._queue, self._changes, self._held
        herd, loop, rand = self.herd, self._loop, self._random.random
        feed = self.changes.publish
        queued = herd.queued
        until = 0.0  # when this run's slice ends, once it takes a spawn
        own = False  # the last event was an instance's own (an exit, a backoff's end)
        published = False
        try:
            while True:
                while queue:
                    event = queue.popleft()
                    actions = herd.on_event(event, loop.time(), rand())
                    if isinstance(event, hd.NewPlan):
                        self._sync()  # new instances exist before their spawns
                    if not isinstance(event, hd.SpawnRoom):
                        own = isinstance(event, hd.ToInstance)
                    # What an instance's own event spawns, with nothing queued after
                    # it, is spawned alone, and soon is its latency; a request may
                    # spawn thousands.
                    alone = own and not queued
                    for action in actions:
                        if type(action) is hd.Changed:  # most of them: without a call
                            instance = self.instances[action.name]
                            changes.append((instance, action.old, action.new, action.event))
                        else:
                            self._execute(action, alone)
                if changes and publish:
                    # Changes go out in order once the queue is empty: a spawn's
                    # change shows its process, as subscribers read the instance when
                    # told, so one whose spawn is queued or out waits for it to land.
                    change = changes.popleft()
                    managed = change[0]
                    name = managed.core.name
                    if managed.spawning or name in queued:
                        held.setdefault(name, []).append(change)
                        continue
                    if self._unjournalled:  # the spawns that landed first, in one write
                        self._flush_journal()
                    if held and (earlier := held.pop(name, None)):  # stopped while queued
                        for before in earlier:
                            feed(*before)
                    feed(*change)
                    published = True
                    continue
                # A run takes spawns until the queue is empty or its slice is over,
                # and then leaves the rest to a run in a later turn of the loop:
                # the queue is not empty only while that one is scheduled.
                if not queued or not self._taking or self._next_slice is not None:
                    break
                now = loop.time()
                if not until:
                    until = now + SLICE
                elif now >= until:
                    self._next_slice = loop.call_soon(self._slice)
                    break
                queue.append(hd.SpawnRoom(ROOM))
        finally:
            self._running = False
            if self._unjournalled:
                self._flush_journal()
            if published and self._waiters and not self._waiters_check_scheduled:
                # Once per loop turn, not per change: a batch of exits (one SIGCHLD
                # wake-up) would otherwise re-evaluate every predicate per instance.
                self._waiters_check_scheduled = True
                self._loop.call_soon(self._check_waiters)
        if not held:
            held.clear()  # what a wave held leaves its table behind (a dict keeps it)
        if self._waves:
            self._check_waves()

    def _flush_journal(self) -> None:
        assert self.journal is not None
        self._unjournalled = False
        self.journal.flush()

    def _check_waves(self) -> None:
        """Say of each wave that is out that it is (see start_services)."""
        queued = self.herd.queued
        landed = self._taken - self._spawner.pending  # outcomes land in order
        for wave in list(self._waves):
            if wave.taken is None:
                if wave.last is not None and wave.last in queued:
                    continue
                wave.taken = self._taken  # its spawns are these, and some before
            if landed >= wave.taken:
                self._waves.remove(wave)
                if not self._waves and self._collecting:
                    gc.enable()
                if wave.then is not None:
                    wave.then()
                if not wave.out.done():
                    wave.out.set_result(None)
                if not self._waves and self.journal is not None:
                    self.journal.release()

    def _slice(self) -> None:
        """The herd's queue has the loop again, after everything else due by now."""
        self._next_slice = None
        self._run()

    def _stop_taking(self) -> None:
        """This image spawns no more: what is still queued in the herd is in the
        records (starting, without a process) for the next image to start."""
        self._taking = False
        if self._next_slice is not None:
            self._next_slice.cancel()
            self._next_slice = None

    def _execute(self, action: hd.Action, alone: bool) -> None:
        # The most frequent first: a class pattern that does not match costs a
        # failed isinstance, and every spawn comes with the cancel of a timer (most
        # often none is pending).
        match action:  # (Changed: see _run)
            case hd.Spawn(name=name):
                self._taken += 1
                self._spawn(self.instances[name], alone)
            case hd.CancelTimer(name=name, kind="lifecycle"):
                managed = self.instances.get(name) or self._gone.get(name)
                if managed is not None:
                    self._cancel_timer(managed)
            case hd.CancelTimer(name=name):
                self._cancel(name)
            case hd.SignalGroup(name=name, signal=sig):
                self.signal_group(self.instances[name], sig)
            case hd.SetTimer(name=name, kind="lifecycle", at=at, event=hd.ToInstance(event=ev)):
                self._set_timer(self.instances[name], at, ev)
            case hd.SetTimer(name=name, at=at, event=event):
                self._cancel(name)
                self._timers[name] = self._loop.call_at(at, self._fired, name, event)
            case hd.StartCheck(name=name, role=role, pid=pid):
                if self.checks is not None:
                    self.checks.start(self.instances[name], role, pid)
            case hd.StopCheck(name=name, role=role):
                if self.checks is not None:
                    self.checks.stop(name, role)
            case hd.Say():
                if self.say is not None:
                    self.say(action)
            case hd.Forget(name=name):
                gone = self._gone.get(name)
                if gone is not None:
                    self._cancel_timer(gone)
                    for pump in list(gone.pumps):
                        pump.close()

    def _fired(self, name: str, event: hd.Event) -> None:
        self._timers.pop(name, None)
        self.submit(event)

    def _cancel(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _set_timer(self, managed: Managed, at: float, event: Event) -> None:
        self._cancel_timer(managed)
        managed.timer = self._loop.call_at(at, self._timer_fired, managed, event)
        managed.timer_due = (at, event)

    def _timer_fired(self, managed: Managed, event: Event) -> None:
        managed.timer = managed.timer_due = None
        self.submit(hd.ToInstance(managed.name, event))

    def _cancel_timer(self, managed: Managed) -> None:
        if managed.timer is not None:
            managed.timer.cancel()
            managed.timer = managed.timer_due = None

    def _spawn(self, managed: Managed, alone: bool) -> None:
        env = own_environment(managed.plan)
        env[STATE_DIR_VARIABLE] = self._state_dir
        try:
            self._spawner.start(managed, managed.plan, env, alone=alone)
        except SpawnError as error:
            self._spawn_failed(managed, error)
            return
        managed.spawning = True
        # The thread spawns while this loop prepares the next; past a few in
        # flight, wait for the oldest (each outcome is an event, as it lands).
        self._landed(keep=IN_FLIGHT)

    def _woken(self) -> None:
        """The spawning thread says outcomes are waiting."""
        self._spawner.woken()
        self._landed()
        if not self._spawner.pending:
            self.escapes.spawns_landed()

    def _landed(self, keep: int | None = None) -> None:
        """Take in the outcomes of the spawns that ended, in order; then run the
        queue (their events) unless it is running. `keep`: see Spawner.finished."""
        self._take_in(keep)
        self._run()

    def _take_in(self, keep: int | None) -> None:
        for managed, outcome in self._spawner.finished(keep=keep):
            managed.spawning = False
            self._changes.extend(self._held.pop(managed.core.name, ()))
            if isinstance(outcome, SpawnError):
                self._spawn_failed(managed, outcome)
            else:
                self._spawned(managed, outcome)  # the reaper watches its pid from here

    def settle(self) -> None:
        """Wait for every spawn in flight, and take in its outcome (and those of
        the spawns its events start, within this turn's slice): then every spawned
        process is known."""
        while self._spawner.pending:
            self._landed(keep=0)

    def take_in_spawns(self) -> bool:
        """Wait for the spawns in flight and take in every outcome, with the events
        they make (see settle): then each process spawned so far is its instance's
        pid. False, having done nothing, when no spawn was on its way."""
        if not self._spawner.pending:
            return False
        self.settle()
        return True

    def _take_in_landed(self) -> bool:
        """The spawns that have landed, without waiting for the others; whether any
        is still in flight. Before the reaper collects exits (see Reaper.before_reap)
        and the escapes sweep tells ours from escapees: settle() would also wait for
        the spawns in flight, and the spawns their events start; in a crash loop,
        where each exit spawns anew, the loop then waited on the spawning thread
        for every exit in turn, and an API request took a second to be answered."""
        if self._spawner.pending:
            self._take_in(keep=None)
            if self._queue and not self._running:
                self._loop.call_soon(self._run)  # their events, if no exit runs them first
        return self._spawner.pending > 0

    def _hung_up(self) -> list[int]:
        """The processes whose stdout or stderr lost its last writer: most likely
        those a SIGCHLD is about (a process's fds close as it exits, before its parent
        is told), which the reaper then finds without looking at every child."""
        pids = []
        for pump in hung_up(self._loop):
            managed = self.instances.get(pump.instance)
            if managed is not None and (pid := managed.core.pid) is not None:
                pids.append(pid)
        return pids

    def _spawn_failed(self, managed: Managed, error: SpawnError) -> None:
        failed = SpawnFailed(f"cannot start: {error}", retry=error.retry)
        self._queue.append(hd.ToInstance(managed.name, failed))

    def _spawned(self, managed: Managed, outcome: Outcome) -> None:
        assert not isinstance(outcome, SpawnError)
        pid, out, err, started = outcome
        journal = self.journal
        name = managed.core.name
        out_inode, err_inode = fd_inode(out), fd_inode(err)
        managed.pipes = [("out", out_inode), ("err", err_inode)]
        managed.foreign = False
        now = self._loop.time()  # for the journal and both pumps
        if journal is not None:  # written before anything is told of it (see _run)
            # Not its start time: /proc/<pid>/stat of a process that is still in
            # exec waits for the exec to finish, which would serialise every spawn.
            journal.spawned(name, pid, [out_inode, err_inode], now)
            self._unjournalled = True
        if started is not None:  # else read from /proc when first needed (start_time_of)
            managed.start_time = (pid, started)
        managed.last_err = b""
        for fd, stream, sink in ((out, "out", self._sink), (err, "err", self._err_sink)):
            managed.pumps.append(
                LogPump(
                    self._loop,
                    fd,
                    name,
                    stream,
                    sink,
                    self._on_pump_closed,
                    batches=self.batches,
                    capacity=NEW_PIPE,
                    now=now,
                )
            )
        self._reaper.watch(pid, self._on_exit, managed)
        self._queue.append(hd.ToInstance(name, Spawned(pid)))

    # --- handing over to a new image, and adopting ------------------------------

    @staticmethod
    def start_time_of(managed: Managed) -> int | None:
        """When the instance's process started (clock ticks since boot), read once."""
        pid = managed.core.pid
        if pid is None:
            return None
        if managed.start_time[0] != pid:
            managed.start_time = (pid, process_start_time(pid))
        return managed.start_time[1]

    def record(self, managed: Managed) -> InstanceRecord:
        """The instance as a record (see records.py): for state.json and a re-exec."""
        core = managed.core
        record = InstanceRecord.of(core)
        if core.pid is not None:
            record.start_time = self.start_time_of(managed)
            record.pipes = list(managed.pipes)
            record.foreign = managed.foreign
            record.stop_signal = int(core.policy.stop_signal)  # for `down` without a daemon
        if managed.timer_due is not None:
            record.timer = timer_record(*managed.timer_due)
        return record

    def hand_over(self) -> dict[str, list[tuple[str, int, bytes]]]:
        """Stop watching everything, keeping pipes open: per instance (stream, fd, partial).

        Timers are cancelled (their due times are in each record) and the pumps
        stop reading; the pipes' fds become inheritable for the new image.
        """
        self.settle()
        self._stop_taking()
        pumps: dict[str, list[tuple[str, int, bytes]]] = {}
        for name in list(self._timers):  # watchdogs: armed again by the new image
            self._cancel(name)
        for managed in self.instances.values():
            if managed.timer is not None:
                managed.timer.cancel()
                managed.timer = None
            for pump in list(managed.pumps):
                fd, partial = pump.hand_over()
                if fd >= 0:
                    pumps.setdefault(managed.name, []).append((pump.stream, fd, partial))
            managed.pumps.clear()
        return pumps

    def restore(
        self, managed: Managed, record: InstanceRecord, pumps: list[tuple[str, int, bytes]]
    ) -> bool:
        """Take over an instance from a record: its state, its process, its pipes.

        A process that is our child (a re-exec) is reaped as usual; a foreign one
        (adopted after a crash) is watched by pidfd. Returns False when its
        process turned out to be gone (it is then handled as having exited).
        """
        core = managed.core
        record.restore(core)
        name = managed.name
        for stream, fd, partial in pumps:
            os.set_inheritable(fd, False)
            managed.pumps.append(
                LogPump(
                    self._loop,
                    fd,
                    name,
                    stream,
                    self._sink,
                    self._on_pump_closed,
                    partial=partial,
                    batches=self.batches,
                )
            )
        managed.pipes = list(record.pipes)
        if record.timer is not None and (timer := timer_event(record.timer)) is not None:
            self._set_timer(managed, *timer)
        pid = core.pid
        if pid is None:
            return True
        start_time = record.start_time
        managed.start_time = (pid, start_time)
        managed.foreign = record.foreign
        if not managed.foreign:
            self._reaper.watch(pid, self._on_exit, managed)
            return True
        if self._reaper.watch_foreign(pid, self._on_exit, managed):
            if process_start_time(pid) == start_time:
                return True  # the pidfd now pins this very process
            self._reaper.unwatch(pid)
        # Gone, and its pid may be someone else's by now: nothing of it is signalled.
        for pump in list(managed.pumps):
            pump.close()
        self._loop.call_soon(self.submit, hd.ToInstance(name, Exited(pid, None, None)))
        return False

    def _err_lines(self, instance: str, stream: str, lines: bytes, ts: float) -> None:
        """The sink for an instance's stderr: it also keeps the last non-blank line,
        which says why a process that fails exited (one rsplit per batch read)."""
        managed = self.instances.get(instance) or self._gone.get(instance)
        if managed is not None:
            for line in reversed(lines[-LAST_WORDS_SCAN:].rsplit(b"\n", 8)):
                if line.strip():
                    managed.last_err = line
                    break
        self._sink(instance, stream, lines, ts)

    def _pump_closed(self, pump: LogPump) -> None:
        """A pump saw its pipe's end: it leaves its instance's pumps."""
        for managed in (self.instances.get(pump.instance), self._gone.get(pump.instance)):
            if managed is not None and pump in managed.pumps:
                managed.pumps.remove(pump)
                return

    def _main_of(self, name: str) -> tuple[int, int | None] | None:
        managed = self.instances.get(name)
        if managed is not None and managed.spawning:
            # Its new process may be this one, its spawn not landed yet: keep all of
            # its processes until the next look (see _known_pids).
            return 0, 0
        if managed is None or managed.core.pid is None:
            return None
        return managed.core.pid, self.start_time_of(managed)

    def _known_pids(self) -> Container[int]:
        """Our processes whose exit the reaper waits for: every instance's main
        process (and the probes', no escapees either), without building a set of
        thousands per look at the daemon's children."""
        # Without waiting for the spawning thread: a process whose spawn has not
        # landed is kept by _main_of, and looked at again once it has.
        if self._take_in_landed():
            self.escapes.soon()
        return self._reaper.watched()

    def _exited(self, managed: Managed, pid: int, code: int | None, sig: int | None) -> None:
        # No collection on the way to the respawn: the allocations of an exit and its
        # respawn reach gen0's threshold every 30 or so, and the collection (0.09-0.13
        # ms) then held that respawn up. It runs once the respawn is handed over.
        collecting = gc.isenabled()
        gc.disable()
        try:
            pumps = list(managed.pumps)  # the process's: a respawn's come with its take-in
            for pump in pumps:
                if pump.stream == "err":
                    # Its last line says why the process ended. Its end, usually there
                    # by now, is left to the drain below: closing a pump (the epoll's and
                    # the pipe's system calls, the callbacks) took 0.06-0.13 ms of the way
                    # from an exit to its respawn when its end and SIGCHLD came together.
                    pump.drain(close=False)
            said = last_words(managed.last_err)
            managed.last_err = b""
            # The herd's answer first, its respawn handed to the spawning thread: what
            # follows does not decide it (0.05 ms of the way from an exit to a respawn).
            event = hd.ToInstance(managed.name, Exited(pid, code, sig, said))
            self.submit(event, publish=False)
        finally:
            if collecting:
                gc.enable()
        kill_group(pid)  # the main process is gone: whatever is left of its group goes too
        # And what left the group: ours once its parents are gone (an adopted
        # instance's went to another reaper).
        self.escapes.soon(everywhere=managed.foreign)
        for pump in pumps:
            pump.drain()  # its last lines come before the change that says it ended
        self._run()

    def unpublished(self) -> Iterator[tuple[Managed, State, State, Event]]:
        """The changes made and not yet published: those of instances whose spawn is
        out (their instances already show them: a snapshot taken now has them)."""
        for held in self._held.values():
            yield from held
        yield from self._changes

    def _check_waiters(self) -> None:
        self._waiters_check_scheduled = False
        for predicate, future in list(self._waiters):
            if not future.done() and predicate():
                future.set_result(None)


@dataclass(eq=False, slots=True)
class _Wave:
    """A start_services' wave: `out` done once it is."""

    out: asyncio.Future[None]
    then: Callable[[], None] | None
    last: str | None  # the last instance it queued (or was queued before it)
    taken: int | None = None  # how many spawns were taken once `last` was


def last_words(line: bytes) -> str:
    """A line of output as one short, printable reason (bounded, control characters
    and colour codes dropped)."""
    if not line:
        return ""  # what most exits say, on the way to their respawn: no regex for it
    text = _CONTROL.sub("", line.decode("utf-8", "replace")).strip()
    return text if len(text) <= LAST_WORDS_MAX else text[: LAST_WORDS_MAX - 1] + "…"


def _probe_exited(
    exited: asyncio.Future[tuple[int | None, int | None]],
    pid: int,
    code: int | None,
    sig: int | None,
) -> None:
    kill_group(pid)  # what the probe left behind
    if not exited.done():
        exited.set_result((code, sig))


def kill_group(pgid: int) -> None:
    """SIGKILL to a whole process group; one that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _NoneLive:
    """Whether none of `members` has a process, asked after every loop turn with
    changes: while some stop, only the last one still seen live is looked at (a
    wave of thousands stops in hundreds of turns); once it seems none is, one
    pass over all confirms it (a stopped one may have started again)."""

    __slots__ = ("_left", "_members")

    def __init__(self, members: list[Managed]) -> None:
        self._members = members
        self._left = list(members)

    def __call__(self) -> bool:
        left = self._left
        while left and not left[-1].live:
            left.pop()
        if left:
            return False
        self._left = [m for m in self._members if m.live]
        return not self._left
