"""The lifecycle of one instance, as a pure state machine.

Theory of operation: the runtime owns processes, pipes and timers; this module owns
every decision. The runtime feeds an `Event` (a process was spawned or exited, a
timer fired, a user asked for a stop) to `on_event()` together with the current
time and a uniform random sample; `on_event()` updates the `Instance` and returns
the `Action`s to carry out (spawn, signal the process group, arm or cancel the
instance's single timer). An instance has at most one timer; its meaning follows
from the state it was armed in (start_seconds in `starting`, backoff in
`restarting`, stop_timeout in `stopping`), and a timer event that no longer fits
the state is ignored, so a late timer can never do harm.

Nothing here reads a clock, touches a process or does I/O.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

# Policy lives with the plan (the validating helper builds plans without this
# module); it is imported here by name too, where a plan pickled by an older image
# looks for it.
from herdsman.core.plan import Policy
from herdsman.core.signals import signal_name
from herdsman.core.states import State

# A start that failed for want of a resource is retried by the backoff, but never
# sooner than this: at once it would fail again, and with `initial = 0` it would spin.
RETRY_MIN = 1.0


# --- events -----------------------------------------------------------------------

# Events and actions are values compared by their fields, never hashed nor changed
# once made; they are not `frozen`: its generated __setattr__, __delattr__ and
# __hash__ doubled what each class costs to import (every `up` pays it before its
# first spawn), and its __init__ made each one 4x slower to build.


@dataclass(slots=True)
class Start:
    """Someone wants the instance running; `waiting_for` lists unmet dependencies."""

    waiting_for: tuple[str, ...] = ()
    manual: bool = False  # a user's request: resets the start limit and backoff


@dataclass(slots=True)
class DependenciesMet:
    """Every dependency of the instance now holds: a waiting start may spawn."""


@dataclass(slots=True)
class Spawned:
    """The instance's process `pid` has started."""

    pid: int


@dataclass(slots=True)
class SpawnFailed:
    """The process could not be started. `retry`: for want of a resource herdsman
    itself lacks (file descriptors), not because of the config: try again later."""

    reason: str
    retry: bool = False


@dataclass(slots=True)
class StartSecondsPassed:
    """Process `pid` has stayed up for `start_seconds`: it counts as started."""

    pid: int


@dataclass(slots=True)
class Ready:
    """Process `pid` passed its readiness check."""

    pid: int


@dataclass(slots=True)
class Exited:
    """Process `pid` has ended, with an exit `code` or killed by a `signal`."""

    pid: int
    code: int | None  # None when killed by a signal, or unknown (adopted)
    signal: int | None
    said: str = ""  # the last line it wrote on stderr (bounded), for the reason


@dataclass(slots=True)
class BackoffElapsed:
    """The wait before the next spawn is over."""


@dataclass(slots=True)
class Stop:
    """Stop the instance; with `restart`, start it again once it has stopped."""

    restart: bool = False
    reason: str = ""  # set when herdsman itself decided (health, memory): counts as a restart
    # A restart herdsman decided on because of the instance itself (health, memory,
    # watchdog) counts toward the start limit, as a crash does; one that follows
    # another service (restart_with) does not.
    limited: bool = True


@dataclass(slots=True)
class StopTimeout:
    """Process `pid` outlived its `stop_timeout`: it gets SIGKILL."""

    pid: int


Event = (
    Start
    | DependenciesMet
    | Spawned
    | SpawnFailed
    | StartSecondsPassed
    | Ready
    | Exited
    | BackoffElapsed
    | Stop
    | StopTimeout
)

# --- actions ----------------------------------------------------------------------


@dataclass(slots=True)
class Spawn:
    """Start the instance's process."""


@dataclass(slots=True)
class SignalGroup:
    """Send `signal` to the instance's process group."""

    signal: int


@dataclass(slots=True)
class SetTimer:
    """Feed `event` at `at`, in place of the instance's pending timer."""

    at: float
    event: Event


@dataclass(slots=True)
class CancelTimer:
    """Cancel the instance's pending timer."""


Action = Spawn | SignalGroup | SetTimer | CancelTimer


# --- the instance -----------------------------------------------------------------


@dataclass(slots=True)
class Instance:
    """One instance's lifecycle: its state, and what its restarts have used up."""

    name: str
    policy: Policy
    state: State = State.STOPPED
    pid: int | None = None
    ready: bool = False
    restarts: int = 0
    attempt: int = 0  # consecutive quick failures: the backoff exponent
    restart_times: list[float] = field(default_factory=list)
    spawned_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    exit_said: str = ""  # the last stderr line of a process that exited with an error
    message: str = ""
    spawn_error: str = ""  # why the last start failed and is being retried
    start_passed: bool = False
    restart_after_stop: bool = False
    automatic_restart: bool = False
    limited_restart: bool = False  # the automatic restart counts toward the start limit
    killed: bool = False

    @property
    def live(self) -> bool:
        """Whether a main process exists (or may still exist) for this instance."""
        return self.pid is not None

    @property
    def waiting(self) -> bool:
        return self.state is State.STARTING and self.pid is None


def describe_exit(code: int | None, sig: int | None, said: str = "") -> str:
    """`exited with code 1`, with what it said last on stderr when it failed:
    `exited with code 1: OSError: [Errno 98] Address already in use`."""
    if sig is not None:
        return f"killed by {signal_name(sig)}"
    if code is None:  # an adopted process: not our child, so its status is not ours
        return "exited (its exit status is unknown: it was adopted after a daemon restart)"
    if code != 0 and said:
        return f"exited with code {code}: {said}"
    return f"exited with code {code}"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:g}s"


def on_event(inst: Instance, ev: Event, now: float, rand: float = 0.5) -> list[Action]:
    """Apply `ev` to `inst` at time `now`; return what the runtime must do.

    `rand` is a uniform sample in [0, 1) used for backoff jitter.
    """
    match ev:
        case Start():
            return _start(inst, ev, now)
        case DependenciesMet():
            if inst.waiting:
                inst.message = ""
                return _spawn(inst)
            return []
        case Spawned(pid=pid):
            return _spawned(inst, pid, now)
        case SpawnFailed(reason=reason, retry=retry):
            return _spawn_failed(inst, reason, retry, now, rand)
        case StartSecondsPassed(pid=pid):
            if inst.state is State.STARTING and inst.pid == pid:
                inst.start_passed = True
                inst.attempt = 0  # it stayed up: the next crash starts the backoff afresh
                _maybe_running(inst)
            return []
        case Ready(pid=pid):
            if inst.pid == pid and inst.state in (State.STARTING, State.RUNNING):
                inst.ready = True
                _maybe_running(inst)
            return []
        case Exited():
            return _exited(inst, ev, now, rand)
        case BackoffElapsed():
            if inst.state is State.RESTARTING:
                inst.message = inst.spawn_error or describe_exit(
                    inst.exit_code, inst.exit_signal, inst.exit_said
                )
                return _spawn(inst)
            return []
        case Stop():
            return _stop(inst, ev, now)
        case StopTimeout(pid=pid):
            if inst.state is State.STOPPING and inst.pid == pid:
                inst.killed = True
                return [SignalGroup(signal.SIGKILL)]
            return []
    raise AssertionError(f"unhandled event {ev!r}")  # pragma: no cover


def _start(inst: Instance, ev: Start, now: float) -> list[Action]:
    if ev.manual:
        inst.restart_times.clear()
        inst.attempt = 0
    if inst.state is State.STOPPING:
        inst.restart_after_stop = True
        return []
    if inst.state in (State.STOPPED, State.EXITED, State.FAILED) or inst.waiting:
        inst.state = State.STARTING
        inst.exit_code = inst.exit_signal = None
        inst.exit_said = inst.message = ""
        if ev.waiting_for:
            inst.message = "waiting for " + ", ".join(ev.waiting_for)
            return []
        return _spawn(inst)
    if inst.state is State.RESTARTING and ev.manual:
        inst.message = ""
        return _spawn(inst)
    return []


def _spawn(inst: Instance) -> list[Action]:
    inst.state = State.STARTING
    return [CancelTimer(), Spawn()]


def _spawn_failed(
    inst: Instance, reason: str, retry: bool, now: float, rand: float
) -> list[Action]:
    inst.pid = None
    if not retry:
        inst.state, inst.message, inst.spawn_error = State.FAILED, reason, ""
        inst.restart_after_stop = False
        return [CancelTimer()]
    # Not the instance's fault: it does not count toward the start limit, and it
    # is tried again until it starts or someone stops it.
    delay = max(RETRY_MIN, inst.policy.backoff_delay(inst.attempt, rand))
    inst.attempt += 1
    inst.state, inst.spawn_error = State.RESTARTING, reason
    inst.message = f"{reason}; retrying in {format_seconds(round(delay, 2))}"
    return [SetTimer(now + delay, BackoffElapsed())]


def _spawned(inst: Instance, pid: int, now: float) -> list[Action]:
    if inst.spawn_error:
        inst.message = ""  # why the last attempt could not start: it has now
    inst.pid, inst.spawned_at, inst.spawn_error = pid, now, ""
    # exit_code, exit_signal and message keep telling how the last run ended.
    inst.ready = inst.start_passed = inst.killed = False
    if inst.policy.start_seconds <= 0:
        inst.start_passed = True
        inst.attempt = 0
        _maybe_running(inst)
        return []
    return [SetTimer(now + inst.policy.start_seconds, StartSecondsPassed(pid))]


def _maybe_running(inst: Instance) -> None:
    if inst.state is not State.STARTING or not inst.start_passed:
        return
    if not inst.policy.needs_ready:
        inst.ready = True
    if inst.ready:
        inst.state = State.RUNNING


def _exited(inst: Instance, ev: Exited, now: float, rand: float) -> list[Action]:
    if ev.pid != inst.pid:
        return []
    inst.pid = None
    inst.ready = False
    inst.exit_code, inst.exit_signal, inst.exit_said = ev.code, ev.signal, ev.said
    how = describe_exit(ev.code, ev.signal, ev.said)

    if inst.state is State.STOPPING:
        inst.state = State.STOPPED
        if inst.restart_after_stop and inst.automatic_restart:
            pass  # the message keeps the reason herdsman restarted it for
        elif inst.killed:
            timeout = format_seconds(inst.policy.stop_timeout)
            inst.message = f"killed with SIGKILL after stop_timeout ({timeout})"
        else:
            inst.message = _stopped(inst.policy, ev)
        if inst.restart_after_stop:
            inst.restart_after_stop = False
            if inst.automatic_restart:
                inst.automatic_restart = False
                if inst.limited_restart and _over_start_limit(inst, now):
                    inst.state = State.FAILED
                    inst.message = f"{inst.message}; {_gave_up(inst.policy)}"
                    return [CancelTimer()]
                inst.restarts += 1
            return _spawn(inst)
        return [CancelTimer()]

    failed = ev.signal is not None or ev.code != 0
    policy = inst.policy
    wants_restart = policy.restart == "always" or (policy.restart == "on-failure" and failed)
    if not wants_restart:
        inst.state, inst.message = State.EXITED, how
        return [CancelTimer()]

    if _over_start_limit(inst, now):
        inst.state = State.FAILED
        inst.message = f"{how}; {_gave_up(policy)}"
        return [CancelTimer()]

    inst.restarts += 1
    delay = policy.backoff_delay(inst.attempt, rand)
    inst.attempt += 1
    if delay <= 0:
        actions = _spawn(inst)
        inst.message = how
        return actions
    inst.state = State.RESTARTING
    inst.message = f"{how}; restarting in {format_seconds(delay)}"
    return [SetTimer(now + delay, BackoffElapsed())]


def _stopped(policy: Policy, ev: Exited) -> str:
    if ev.signal is not None and ev.signal == policy.stop_signal:
        return f"stopped by {signal_name(ev.signal)}"  # ended of the signal it was sent
    return f"stopped ({describe_exit(ev.code, ev.signal, ev.said)})"


def _over_start_limit(inst: Instance, now: float) -> bool:
    """Count a restart at `now`; whether that makes more than `burst` within `interval`."""
    window_start = now - inst.policy.interval
    inst.restart_times = [t for t in inst.restart_times if t > window_start]
    inst.restart_times.append(now)
    return len(inst.restart_times) > inst.policy.burst


def _gave_up(policy: Policy) -> str:
    return (
        f"gave up after more than {policy.burst} restarts "
        f"within {format_seconds(policy.interval)} (start_limit)"
    )


def _stop(inst: Instance, ev: Stop, now: float) -> list[Action]:
    if inst.state is State.STOPPING:
        inst.restart_after_stop = ev.restart
        inst.automatic_restart = bool(ev.reason)
        inst.limited_restart = bool(ev.reason) and ev.limited
        return []
    if inst.live:
        inst.state = State.STOPPING
        inst.ready = False  # dependents must not count on what is going away
        inst.restart_after_stop = ev.restart
        inst.automatic_restart = bool(ev.reason)
        inst.limited_restart = bool(ev.reason) and ev.limited
        inst.killed = False
        if ev.reason:
            inst.message = ev.reason
        assert inst.pid is not None
        if inst.policy.stop_timeout <= 0:
            inst.killed = True
            return [CancelTimer(), SignalGroup(signal.SIGKILL)]
        return [
            SignalGroup(inst.policy.stop_signal),
            SetTimer(now + inst.policy.stop_timeout, StopTimeout(inst.pid)),
        ]
    if inst.state in (State.STARTING, State.RESTARTING):
        inst.state, inst.message = State.STOPPED, "stopped"
        if ev.restart:
            return _spawn(inst)
        return [CancelTimer()]
    if ev.restart:
        return _spawn(inst)
    return []
