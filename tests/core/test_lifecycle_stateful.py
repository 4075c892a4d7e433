"""The lifecycle under random event orders, with hypothesis playing the runtime.

The machine below keeps what the runtime would keep: a clock, the instance's single
timer, and fake processes that exit by themselves or when signalled. It feeds the
lifecycle's own actions back as events (a Spawn is answered by Spawned at once, as the
runtime does) and checks the lifecycle's promises after every step.
"""

from __future__ import annotations

import copy
import random
import signal
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from herdsman.core.lifecycle import (
    Action,
    BackoffElapsed,
    CancelTimer,
    DependenciesMet,
    Event,
    Exited,
    Instance,
    Policy,
    Ready,
    SetTimer,
    SignalGroup,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StartSecondsPassed,
    Stop,
    StopTimeout,
    describe_exit,
    format_seconds,
    on_event,
)
from herdsman.core.states import State

EPSILON = 1e-9  # float slack for `at - now` where the lifecycle computed `at = now + delay`


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    initial = draw(st.sampled_from([0.0, 0.05, 0.25]))
    return Policy(
        restart=draw(st.sampled_from(["always", "on-failure", "never"])),
        backoff_initial=initial,
        backoff_max=initial + draw(st.sampled_from([0.0, 0.1, 1.0])),
        backoff_factor=draw(st.sampled_from([1.0, 1.5, 2.0, 4.0])),
        backoff_jitter=draw(st.sampled_from([0.0, 0.5, 1.0])),
        burst=draw(st.sampled_from([1, 2, 4])),
        interval=draw(st.sampled_from([0.5, 2.0, 10.0])),
        start_seconds=draw(st.sampled_from([0.0, 0.2, 1.0])),
        stop_signal=draw(st.sampled_from([signal.SIGTERM, signal.SIGINT])),
        stop_timeout=draw(st.sampled_from([0.0, 0.5, 3.0])),
        needs_ready=draw(st.booleans()),
    )


@dataclass
class Ending:
    """When and how a fake process will exit."""

    at: float
    code: int | None
    signal: int | None


EXIT_STATUSES = st.sampled_from(
    [(0, None), (1, None), (3, None), (None, signal.SIGSEGV), (None, signal.SIGTERM)]
)
# How a process answers the stop signal: never, or after a delay with some status.
STOP_ANSWERS = st.none() | st.tuples(st.sampled_from([0.0, 0.1, 0.4, 2.0, 5.0]), EXIT_STATUSES)
DELAYS = st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.3, 0.5, 0.7, 1.0, 1.7, 3.0, 10.0])
REASONS = st.sampled_from(["", "unhealthy after 3 failed checks", "memory above 512MiB"])


class LifecycleRuntime(RuleBasedStateMachine):
    inst: Instance

    @initialize(
        policy=policies(),
        kill_delay=st.sampled_from([0.0, 0.01, 0.3]),
        exits_first=st.booleans(),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(self, policy: Policy, kill_delay: float, exits_first: bool, seed: int) -> None:
        self.inst = Instance("web", policy)
        self.random = random.Random(seed)  # the samples for backoff jitter
        self.policy = policy
        self.kill_delay = kill_delay  # how long a SIGKILLed process takes to be reaped
        self.exits_first = exits_first  # on a tie, is an exit seen before the timer?
        self.now = 0.0
        self.timer: tuple[float, Event] | None = None
        self.live: dict[int, Ending | None] = {}  # pid -> its scheduled exit, if any
        self.dead: list[int] = []
        self.last_pid = 100
        self.next_spawn_fails = False
        self.stop_answer: tuple[float, tuple[int | None, int | None]] | None = None
        # The model's own account of what the lifecycle must honour:
        self.crash_times: list[float] = []  # exits that asked for a restart, since a manual start
        self.restart_after_stop = False
        self.automatic_restart = False
        self.limited_restart = False
        self.stopping_since = 0.0
        self.stopped_by: float | None = None  # a pending stop must have ended by then
        self.killed: int | None = None  # the pid that was sent SIGKILL
        self.feed(Start())

    # --- the runtime's side -----------------------------------------------------

    def feed(self, ev: Event) -> list[Action]:
        inst, policy = self.inst, self.policy
        before = inst.state
        restarts = inst.restarts
        crash = isinstance(ev, Exited) and ev.pid == inst.pid and before is not State.STOPPING
        stop_exit = isinstance(ev, Exited) and ev.pid == inst.pid and before is State.STOPPING
        window = 0
        if stop_exit and self.restart_after_stop and self.limited_restart:
            self.crash_times.append(self.now)  # herdsman's own restart counts like a crash
            window = sum(1 for t in self.crash_times if t > self.now - policy.interval)
        if crash:
            assert isinstance(ev, Exited)
            failed = ev.code != 0 or ev.signal is not None
            wants = policy.restart == "always" or (policy.restart == "on-failure" and failed)
            if wants:
                self.crash_times.append(self.now)
                window = sum(1 for t in self.crash_times if t > self.now - policy.interval)

        actions = on_event(inst, ev, self.now, self.random.random())

        if inst.state is State.FAILED and before is not State.FAILED:
            assert isinstance(ev, SpawnFailed) or window > policy.burst, (
                f"failed after {ev!r} with {window} restarts in the window"
            )
        if inst.state is State.STOPPING and before is not State.STOPPING:
            self.stopping_since = self.now
        assert inst.restarts - restarts in (0, 1)
        if crash:
            self.check_crash(ev, actions, window, restarts)
        if stop_exit:
            self.check_stop_exit(ev, actions, restarts, window)

        for action in actions:
            self.execute(action)
        return actions

    def check_crash(self, ev: Event, actions: list[Action], window: int, restarts: int) -> None:
        inst, policy = self.inst, self.policy
        assert isinstance(ev, Exited)
        assert (inst.pid, inst.exit_code, inst.exit_signal) == (None, ev.code, ev.signal)
        how = describe_exit(ev.code, ev.signal)
        if window == 0:  # the policy does not restart it
            assert (inst.state, inst.message, actions) == (State.EXITED, how, [CancelTimer()])
        elif window > policy.burst:
            assert (inst.state, actions, inst.restarts) == (State.FAILED, [CancelTimer()], restarts)
            assert inst.message.startswith(f"{how}; gave up after more than {policy.burst} ")
        else:
            assert inst.restarts == restarts + 1
            if policy.backoff_initial > 0:
                assert inst.state is State.RESTARTING
                assert inst.message.startswith(f"{how}; restarting in ")
                assert [type(a) for a in actions] == [SetTimer]
            else:
                assert (inst.state, inst.message) == (State.STARTING, how)
                assert actions == [CancelTimer(), Spawn()]

    def check_stop_exit(self, ev: Event, actions: list[Action], restarts: int, window: int) -> None:
        inst = self.inst
        assert isinstance(ev, Exited)
        if self.restart_after_stop and window > self.policy.burst:
            assert (inst.state, actions, inst.restarts) == (State.FAILED, [CancelTimer()], restarts)
            assert inst.message.endswith(
                f"gave up after more than {self.policy.burst} "
                f"restarts within {format_seconds(self.policy.interval)} (start_limit)"
            )
        elif self.restart_after_stop:
            assert (inst.state, actions) == (State.STARTING, [CancelTimer(), Spawn()])
            assert inst.restarts == restarts + self.automatic_restart
        else:
            assert (inst.state, actions) == (State.STOPPED, [CancelTimer()])
            assert inst.restarts == restarts
            if ev.pid == self.killed:
                assert inst.message.startswith("killed with SIGKILL after stop_timeout")
            else:
                if ev.signal is not None and ev.signal == self.policy.stop_signal:
                    assert inst.message == f"stopped by {signal.Signals(ev.signal).name}"
                else:
                    assert inst.message == f"stopped ({describe_exit(ev.code, ev.signal)})"
        self.restart_after_stop = self.automatic_restart = self.limited_restart = False

    def execute(self, action: Action) -> None:
        match action:
            case Spawn():
                assert not self.live, f"Spawn while {sorted(self.live)} still live"
                if self.next_spawn_fails:
                    self.next_spawn_fails = False
                    self.feed(SpawnFailed("cannot start: no such file or directory: 'web'"))
                    assert self.inst.state is State.FAILED
                    return
                self.last_pid += 1
                self.live[self.last_pid] = None
                self.feed(Spawned(self.last_pid))
            case SignalGroup(signal=sig):
                assert self.inst.pid is not None
                assert list(self.live) == [self.inst.pid], "signal to a group with no process"
                if sig == signal.SIGKILL:
                    self.killed = self.inst.pid
                    self.schedule_exit(self.now + self.kill_delay, None, signal.SIGKILL)
                else:
                    assert sig == self.policy.stop_signal
                    if self.stop_answer is not None:
                        delay, (code, by) = self.stop_answer
                        self.schedule_exit(self.now + delay, code, by)
            case SetTimer(at=at, event=event):
                assert at >= self.now
                if isinstance(event, BackoffElapsed):
                    delay = at - self.now
                    assert self.policy.backoff_initial - EPSILON <= delay
                    assert delay <= self.policy.backoff_max + EPSILON
                self.timer = (at, event)
            case CancelTimer():
                self.timer = None

    def schedule_exit(self, at: float, code: int | None, sig: int | None) -> None:
        [pid] = self.live
        ending = self.live[pid]
        if ending is None or at < ending.at:
            self.live[pid] = Ending(at, code, sig)

    def process_exits(self, pid: int, code: int | None, sig: int | None) -> None:
        del self.live[pid]
        self.dead.append(pid)
        self.feed(Exited(pid, code, sig))

    def next_due(self, until: float) -> tuple[float, int, int | None] | None:
        """The next thing to happen by `until`: (time, tie order, pid or None for the timer)."""
        due: list[tuple[float, int, int | None]] = []
        if self.timer is not None and self.timer[0] <= until:
            due.append((self.timer[0], 0 if not self.exits_first else 1, None))
        for pid, ending in self.live.items():
            if ending is not None and ending.at <= until:
                due.append((ending.at, 1 if not self.exits_first else 0, pid))
        return min(due, key=lambda d: (d[0], d[1])) if due else None

    def run_until(self, until: float) -> None:
        while (due := self.next_due(until)) is not None:
            at, _, pid = due
            self.now = at
            if pid is None:
                assert self.timer is not None
                event = self.timer[1]
                self.timer = None
                self.feed(event)
            else:
                ending = self.live[pid]
                assert ending is not None
                self.process_exits(pid, ending.code, ending.signal)
        self.now = until

    def wait_for_stop(self, deadline: float) -> None:
        """Let time pass until a stop must be over; it must be."""
        self.run_until(max(self.now, deadline))
        assert self.inst.state is State.STOPPED, (
            f"still {self.inst.state} at {self.now}, the stop was due by {deadline}"
        )

    # --- rules ------------------------------------------------------------------

    @rule(manual=st.booleans(), wait=st.booleans())
    def start(self, manual: bool, wait: bool) -> None:
        self.stopped_by = None  # a start may bring it back: no longer bound to stop
        if manual:
            self.crash_times.clear()
        if self.inst.state is State.STOPPING:
            self.restart_after_stop = True
        self.feed(Start(waiting_for=("db (ready)",) if wait else (), manual=manual))
        self.run_until(self.now)

    @precondition(lambda self: self.inst.waiting)
    @rule()
    def dependencies_met(self) -> None:
        assert self.feed(DependenciesMet()) == [CancelTimer(), Spawn()]
        self.run_until(self.now)

    @rule(
        restart=st.booleans(),
        reason=REASONS,
        limited=st.booleans(),
        answer=STOP_ANSWERS,
        wait=st.booleans(),
    )
    def stop(
        self,
        restart: bool,
        reason: str,
        limited: bool,
        answer: tuple[float, tuple[int | None, int | None]] | None,
        wait: bool,
    ) -> None:
        """A stop or restart; with `wait`, time passes until it must be done (`stop --wait`)."""
        inst = self.inst
        live, stopping = inst.live, inst.state is State.STOPPING
        if live or stopping:
            self.restart_after_stop, self.automatic_restart = restart, bool(reason)
            self.limited_restart = bool(reason) and limited
        self.stop_answer = answer
        self.feed(Stop(restart=restart, reason=reason, limited=limited))
        if live:
            assert inst.state is State.STOPPING
            if reason and not stopping:
                assert inst.message == reason
        if restart:
            self.stopped_by = None
        elif live:
            self.stopped_by = self.stopping_since + self.policy.stop_timeout + self.kill_delay
        self.run_until(self.now)
        if wait and self.stopped_by is not None:
            self.wait_for_stop(self.stopped_by)

    @rule()
    def kill(self) -> None:
        """What the runtime's kill does: a stop, then the stop timeout at once."""
        if self.inst.live or self.inst.state is State.STOPPING:
            self.restart_after_stop = self.automatic_restart = self.limited_restart = False
        self.stop_answer = None
        self.feed(Stop())
        pid = self.inst.pid
        if self.inst.state is State.STOPPING and pid is not None:
            assert self.feed(StopTimeout(pid)) == [SignalGroup(signal.SIGKILL)]
            killed_by = self.now + self.kill_delay
            self.stopped_by = min(killed_by, self.stopped_by or killed_by)
        self.run_until(self.now)

    @precondition(lambda self: bool(self.live))
    @rule(status=EXIT_STATUSES)
    def process_exits_by_itself(self, status: tuple[int | None, int | None]) -> None:
        [pid] = self.live
        self.process_exits(pid, *status)
        self.run_until(self.now)

    @rule(dt=DELAYS, crash=st.none() | st.tuples(DELAYS, EXIT_STATUSES))
    def time_passes(
        self,
        dt: float,
        crash: tuple[float, tuple[int | None, int | None]] | None,
    ) -> None:
        """The clock moves on; the process may exit by itself on the way."""
        if crash is not None and self.live:
            delay, (code, sig) = crash
            self.schedule_exit(self.now + delay, code, sig)
        until = self.now + dt
        if self.stopped_by is not None and self.stopped_by <= until:
            self.wait_for_stop(self.stopped_by)
        self.run_until(until)

    @precondition(lambda self: self.inst.pid is not None)
    @rule()
    def probe_passes(self) -> None:
        inst = self.inst
        assert inst.pid is not None
        was, ready = inst.state, inst.ready
        assert self.feed(Ready(inst.pid)) == []
        assert inst.ready == (ready or was in (State.STARTING, State.RUNNING))

    @rule()
    def next_spawn_fails_to_exec(self) -> None:
        self.next_spawn_fails = True

    @rule(data=st.data())
    def stale_event(self, data: st.DataObject) -> None:
        """Events that no longer fit: about a process that is gone, or the wrong state."""
        old = data.draw(st.sampled_from([*self.dead, 1]))  # pid 1: never one of ours
        events: list[Event] = [
            Exited(old, 0, None),
            StartSecondsPassed(old),
            StopTimeout(old),
            Ready(old),
        ]
        if self.inst.state is not State.RESTARTING:
            events.append(BackoffElapsed())
        if not self.inst.waiting:
            events.append(DependenciesMet())
        ev = data.draw(st.sampled_from(events))
        before = copy.deepcopy(self.inst)
        assert on_event(self.inst, ev, self.now) == []
        assert self.inst == before

    # --- invariants -------------------------------------------------------------

    @invariant()
    def state_is_one_of_the_seven(self) -> None:
        assert self.inst.state in set(State)
        assert len(State) == 7

    @invariant()
    def pid_is_the_one_live_process(self) -> None:
        if self.inst.pid is None:
            assert not self.live
        else:
            assert list(self.live) == [self.inst.pid]

    @invariant()
    def running_implies_ready(self) -> None:
        if self.inst.state is State.RUNNING:
            assert self.inst.ready

    @invariant()
    def every_state_has_its_way_out(self) -> None:
        inst, timer = self.inst, self.timer
        event = timer[1] if timer else None
        match inst.state:
            case State.STOPPED | State.EXITED | State.FAILED:
                assert timer is None, "a resting instance leaves no timer behind"
                assert inst.pid is None
            case State.RESTARTING:
                assert event == BackoffElapsed()
                assert inst.pid is None
            case State.STARTING if inst.pid is None:
                assert timer is None
                assert inst.message.startswith("waiting for ")
            case State.STARTING:
                assert inst.pid is not None
                assert event == StartSecondsPassed(inst.pid) or (
                    timer is None and self.policy.needs_ready and not inst.ready
                )
            case State.RUNNING:
                assert timer is None
            case State.STOPPING:
                assert inst.pid is not None
                ending = self.live[inst.pid]
                assert event == StopTimeout(inst.pid) or ending is not None, "stuck stopping"


TestLifecycleRuntime = LifecycleRuntime.TestCase
TestLifecycleRuntime.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
