"""Every transition of the instance lifecycle, driven with plain values.

Each test plays the runtime by hand: it feeds events with an explicit `now` (and
`rand` where jitter matters) and asserts the exact state, actions and message.
"""

from __future__ import annotations

import copy
import math
import signal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herdsman.core.lifecycle import (
    RETRY_MIN,
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

SPAWN = [CancelTimer(), Spawn()]


def make(**policy: Any) -> Instance:
    return Instance("web", Policy(**policy))


def spawned(inst: Instance, pid: int, now: float) -> list[object]:
    """Start `inst` (it must ask for a spawn) and report the process as spawned."""
    assert on_event(inst, Start(), now) == SPAWN
    return list(on_event(inst, Spawned(pid), now))


def running(inst: Instance, pid: int = 100, now: float = 0.0) -> Instance:
    spawned(inst, pid, now)
    if inst.policy.start_seconds > 0:
        assert on_event(inst, StartSecondsPassed(pid), now + inst.policy.start_seconds) == []
    assert inst.state is State.RUNNING
    return inst


def respawn(inst: Instance, actions: list[object], pid: int, now: float) -> None:
    """Carry out a backoff timer (if armed) and the spawn it leads to."""
    if actions != SPAWN:
        [timer] = actions
        assert isinstance(timer, SetTimer)
        assert on_event(inst, timer.event, timer.at) == SPAWN
        now = timer.at
    on_event(inst, Spawned(pid), now)


def crash(inst: Instance, now: float, code: int = 1, rand: float = 0.5) -> list[object]:
    assert inst.pid is not None
    return list(on_event(inst, Exited(inst.pid, code, None), now, rand))


def backoff_of(actions: list[object], now: float) -> float:
    [timer] = actions
    assert isinstance(timer, SetTimer)
    assert timer.event == BackoffElapsed()
    return timer.at - now


def assert_ignored(inst: Instance, ev: Event, now: float = 50.0) -> None:
    before = copy.deepcopy(inst)
    assert on_event(inst, ev, now) == []
    assert inst == before


# --- starting ---------------------------------------------------------------------


def test_start_asks_for_a_spawn_and_stays_starting_without_pid() -> None:
    inst = make()
    assert on_event(inst, Start(), 0.0) == SPAWN
    assert (inst.state, inst.pid, inst.ready, inst.message) == (State.STARTING, None, False, "")


def test_spawned_arms_the_start_seconds_timer_for_that_pid() -> None:
    inst = make(start_seconds=1.5)
    assert spawned(inst, 100, 10.0) == [SetTimer(11.5, StartSecondsPassed(100))]
    assert (inst.state, inst.pid, inst.ready, inst.spawned_at) == (State.STARTING, 100, False, 10.0)


def test_start_seconds_passed_makes_it_running_and_ready() -> None:
    inst = make(start_seconds=1.5)
    spawned(inst, 100, 10.0)
    assert on_event(inst, StartSecondsPassed(100), 11.5) == []
    assert (inst.state, inst.pid, inst.ready) == (State.RUNNING, 100, True)


def test_start_seconds_zero_is_running_at_once_without_a_timer() -> None:
    inst = make(start_seconds=0)
    assert spawned(inst, 100, 10.0) == []
    assert (inst.state, inst.pid, inst.ready) == (State.RUNNING, 100, True)


@pytest.mark.parametrize("state", [State.STOPPED, State.EXITED, State.FAILED])
def test_start_from_a_resting_state_spawns_and_clears_the_exit(state: State) -> None:
    inst = Instance("web", Policy(), state=state, exit_code=3, message="exited with code 3")
    assert on_event(inst, Start(), 0.0) == SPAWN
    assert (inst.state, inst.exit_code, inst.exit_signal) == (State.STARTING, None, None)
    assert inst.message == ""


@pytest.mark.parametrize("manual", [False, True])
def test_start_while_running_changes_nothing(manual: bool) -> None:
    inst = running(make())
    assert on_event(inst, Start(manual=manual), 5.0) == []
    assert (inst.state, inst.pid) == (State.RUNNING, 100)


def test_start_while_starting_with_a_process_does_not_spawn_again() -> None:
    inst = make()
    spawned(inst, 100, 0.0)
    assert on_event(inst, Start(manual=True), 0.5) == []
    assert (inst.state, inst.pid) == (State.STARTING, 100)


# --- dependencies -----------------------------------------------------------------


def test_start_with_unmet_dependencies_waits_without_spawning() -> None:
    inst = make()
    assert on_event(inst, Start(waiting_for=("db (ready)", "cache (started)")), 0.0) == []
    assert (inst.state, inst.pid) == (State.STARTING, None)
    assert inst.waiting
    assert inst.message == "waiting for db (ready), cache (started)"


def test_dependencies_met_spawns_a_waiting_instance() -> None:
    inst = make()
    on_event(inst, Start(waiting_for=("db (ready)",)), 0.0)
    assert on_event(inst, DependenciesMet(), 2.0) == SPAWN
    assert (inst.state, inst.message) == (State.STARTING, "")


def test_a_new_start_refreshes_what_it_waits_for() -> None:
    inst = make()
    on_event(inst, Start(waiting_for=("db (ready)", "cache (started)")), 0.0)
    assert on_event(inst, Start(waiting_for=("db (ready)",)), 1.0) == []
    assert inst.message == "waiting for db (ready)"
    assert on_event(inst, Start(), 2.0) == SPAWN


@pytest.mark.parametrize("setup", ["stopped", "running", "restarting"])
def test_dependencies_met_is_ignored_unless_waiting(setup: str) -> None:
    inst = make()
    if setup != "stopped":
        running(inst)
    if setup == "restarting":
        crash(inst, 5.0)
        assert inst.state is State.RESTARTING
    assert_ignored(inst, DependenciesMet())


# --- exits ------------------------------------------------------------------------

EXITS = [
    # restart mode, code, signal, restarts?
    ("always", 0, None, True),
    ("always", 3, None, True),
    ("always", None, signal.SIGSEGV, True),
    ("on-failure", 0, None, False),
    ("on-failure", 3, None, True),
    ("on-failure", None, signal.SIGSEGV, True),
    ("never", 0, None, False),
    ("never", 3, None, False),
    ("never", None, signal.SIGSEGV, False),
]
HOW = {0: "exited with code 0", 3: "exited with code 3", None: "killed by SIGSEGV"}


@pytest.mark.parametrize(("mode", "code", "sig", "restarts"), EXITS)
def test_exit_of_a_running_instance_follows_the_restart_mode(
    mode: str, code: int | None, sig: int | None, restarts: bool
) -> None:
    inst = running(make(restart=mode, backoff_initial=0.25, backoff_jitter=0.0))
    actions = on_event(inst, Exited(100, code, sig), 50.0)
    assert (inst.pid, inst.ready, inst.exit_code, inst.exit_signal) == (None, False, code, sig)
    how = HOW[code]
    if restarts:
        assert actions == [SetTimer(50.25, BackoffElapsed())]
        assert inst.state is State.RESTARTING
        assert inst.message == f"{how}; restarting in 250ms"
        assert inst.restarts == 1
    else:
        assert actions == [CancelTimer()]
        assert inst.state is State.EXITED
        assert inst.message == how
        assert inst.restarts == 0


def test_exit_while_starting_replaces_the_start_seconds_timer_with_the_backoff() -> None:
    inst = make(backoff_initial=0.5, backoff_jitter=0.0)
    spawned(inst, 100, 0.0)
    assert on_event(inst, Exited(100, 2, None), 0.25) == [SetTimer(0.75, BackoffElapsed())]
    assert (inst.state, inst.message) == (
        State.RESTARTING,
        "exited with code 2; restarting in 500ms",
    )


def test_backoff_elapsed_spawns_again_and_the_new_pid_counts() -> None:
    inst = running(make(backoff_initial=0.5, backoff_jitter=0.0))
    crash(inst, 10.0)
    assert on_event(inst, BackoffElapsed(), 10.5) == SPAWN
    # the message keeps saying how the last run ended, until the next one ends
    assert (inst.state, inst.message) == (State.STARTING, "exited with code 1")
    assert on_event(inst, Spawned(101), 10.5) == [SetTimer(11.5, StartSecondsPassed(101))]
    assert (inst.pid, inst.exit_code, inst.message) == (101, 1, "exited with code 1")


# --- backoff ----------------------------------------------------------------------


def quick_crashes(inst: Instance, count: int) -> list[tuple[float, str]]:
    """Crash `count` times, each 0.5 s after its spawn; return (delay, message) pairs."""
    spawned(inst, 100, 0.0)
    now, seen = 0.0, []
    for pid in range(101, 101 + count):
        now += 0.5
        actions = crash(inst, now)
        delay = backoff_of(actions, now)
        seen.append((delay, inst.message))
        respawn(inst, actions, pid, now)
        now += delay
    return seen


def test_backoff_doubles_on_quick_crashes_and_is_capped_at_max() -> None:
    inst = make(backoff_initial=0.25, backoff_max=3.0, backoff_jitter=0.0, burst=100)
    delays = [delay for delay, _ in quick_crashes(inst, 7)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert inst.restarts == 7


def test_backoff_message_states_the_delay() -> None:
    inst = make(backoff_initial=0.25, backoff_max=3.0, backoff_jitter=0.0)
    assert [message for _, message in quick_crashes(inst, 4)] == [
        "exited with code 1; restarting in 250ms",
        "exited with code 1; restarting in 500ms",
        "exited with code 1; restarting in 1s",
        "exited with code 1; restarting in 2s",
    ]


def test_backoff_factor_is_used() -> None:
    inst = make(backoff_initial=0.5, backoff_max=100.0, backoff_factor=3.0, backoff_jitter=0.0)
    assert [delay for delay, _ in quick_crashes(inst, 3)] == [0.5, 1.5, 4.5]


def test_backoff_resets_once_the_process_stayed_up_past_start_seconds() -> None:
    inst = make(backoff_initial=0.25, backoff_jitter=0.0, start_seconds=1.0)
    spawned(inst, 100, 0.0)
    actions = crash(inst, 0.5)
    assert backoff_of(actions, 0.5) == 0.25
    respawn(inst, actions, 101, 0.5)
    actions = crash(inst, 1.0)
    assert backoff_of(actions, 1.0) == 0.5
    respawn(inst, actions, 102, 1.0)  # spawned at 1.5
    on_event(inst, StartSecondsPassed(102), 2.5)
    assert inst.state is State.RUNNING
    actions = crash(inst, 10.0)
    assert backoff_of(actions, 10.0) == 0.25


def test_backoff_initial_zero_spawns_at_once_without_a_timer() -> None:
    inst = running(make(backoff_initial=0.0))
    assert crash(inst, 5.0, code=4) == SPAWN
    assert (inst.state, inst.pid, inst.restarts) == (State.STARTING, None, 1)
    assert inst.message == "exited with code 4"


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (2, 0.5, 4.0),  # base = 1 * 2**2
        (2, 0.0, 3.6),  # -10 %
        (2, 0.75, 4.2),  # +5 %
        (0, 0.0, 1.0),  # 0.9 would be below initial
        (0, 0.75, 1.05),
        (4, 0.5, 10.0),  # 16 capped at max
        (4, 0.0, 9.0),  # the base is capped at max, then jittered
        (3, 0.9, 8.64),
        (10_000, 0.9, 10.0),  # a long crash loop must not overflow
    ],
)
def test_backoff_delay_with_jitter(attempt: int, rand: float, expected: float) -> None:
    policy = Policy(backoff_initial=1.0, backoff_max=10.0, backoff_factor=2.0, backoff_jitter=0.1)
    assert policy.backoff_delay(attempt, rand) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("factor", [2.0, 1e3, 1e5, 1e12])
def test_backoff_delay_does_not_overflow_in_a_long_crash_loop(factor: float) -> None:
    policy = Policy(backoff_initial=0.1, backoff_max=30.0, backoff_factor=factor)
    assert [policy.backoff_delay(attempt, 0.5) for attempt in (61, 62, 64, 10_000)] == [30.0] * 4


def test_a_long_crash_loop_with_a_steep_factor_keeps_restarting() -> None:
    inst = make(backoff_initial=0.1, backoff_max=30.0, backoff_factor=1e5, backoff_jitter=0.0)
    spawned(inst, 100, 0.0)
    now, delays = 0.5, []
    for pid in range(101, 201):  # 30 s apart: never more than 2 exits within 60 s
        actions = crash(inst, now)
        delays.append(backoff_of(actions, now))
        respawn(inst, actions, pid, now)
        now += delays[-1] + 0.5
    assert delays == pytest.approx([0.1] + [30.0] * 99)
    assert (inst.state, inst.restarts) == (State.STARTING, 100)


def test_backoff_delay_is_zero_without_initial() -> None:
    assert Policy(backoff_initial=0.0).backoff_delay(5, 0.9) == 0.0


def test_the_jitter_sample_reaches_the_delay() -> None:
    inst = running(make(backoff_initial=2.0, backoff_jitter=0.5))
    actions = crash(inst, 10.0, rand=0.0)
    assert actions == [SetTimer(12.0, BackoffElapsed())]  # 1.0 is clamped up to initial
    respawn(inst, actions, 101, 10.0)
    actions = crash(inst, 12.5, rand=0.75)  # attempt 1: base 4.0, +25 %
    assert actions == [SetTimer(17.5, BackoffElapsed())]
    assert inst.message == "exited with code 1; restarting in 5s"


@given(
    initial=st.floats(0.001, 10.0),
    spread=st.floats(1.0, 100.0),
    factor=st.floats(1.0, 10.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(0, 2_000),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_delay_stays_within_initial_max_and_the_jitter_band(
    initial: float, spread: float, factor: float, jitter: float, attempt: int, rand: float
) -> None:
    policy = Policy(
        backoff_initial=initial,
        backoff_max=initial * spread,
        backoff_factor=factor,
        backoff_jitter=jitter,
    )
    delay = policy.backoff_delay(attempt, rand)
    assert policy.backoff_initial <= delay <= policy.backoff_max
    past_max = attempt * math.log(factor) > math.log(policy.backoff_max / initial) + 1e-9
    base = policy.backoff_max if past_max else min(policy.backoff_max, initial * factor**attempt)
    low = max(policy.backoff_initial, base * (1 - jitter))
    high = min(policy.backoff_max, base * (1 + jitter))
    assert low * (1 - 1e-9) <= delay <= high * (1 + 1e-9)


# --- start limit ------------------------------------------------------------------


def crash_loop(inst: Instance, times: list[float]) -> list[object]:
    """Crash at each time (respawning in between); return the last exit's actions."""
    actions: list[object] = []
    for i, now in enumerate(times):
        if i:
            respawn(inst, actions, 200 + i, now - 0.01)
        actions = crash(inst, now)
    return actions


def test_exactly_burst_restarts_within_the_interval_are_allowed() -> None:
    inst = running(make(burst=3, interval=60.0, backoff_initial=0.0))
    assert crash_loop(inst, [10.0, 11.0, 12.0]) == SPAWN
    assert (inst.state, inst.restarts) == (State.STARTING, 3)


def test_one_restart_more_than_burst_within_the_interval_fails() -> None:
    inst = running(make(burst=3, interval=60.0, backoff_initial=0.0))
    assert crash_loop(inst, [10.0, 11.0, 12.0, 13.0]) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.restarts) == (State.FAILED, None, 3)
    assert inst.message == (
        "exited with code 1; gave up after more than 3 restarts within 60s (start_limit)"
    )


def test_start_limit_with_backoff_timers_fails_the_same_way() -> None:
    inst = running(make(burst=2, interval=10.0, backoff_initial=0.25, backoff_jitter=0.0))
    assert crash_loop(inst, [1.0, 2.0, 3.0]) == [CancelTimer()]
    assert inst.state is State.FAILED
    assert inst.message.endswith("gave up after more than 2 restarts within 10s (start_limit)")


def test_burst_zero_fails_on_the_first_exit() -> None:
    inst = running(make(burst=0, interval=1.5))
    assert crash(inst, 5.0, code=2) == [CancelTimer()]
    assert inst.state is State.FAILED
    assert inst.message == (
        "exited with code 2; gave up after more than 0 restarts within 1.5s (start_limit)"
    )


def test_restarts_outside_the_interval_do_not_count() -> None:
    inst = running(make(burst=2, interval=10.0, backoff_initial=0.0))
    crash_loop(inst, [1.0, 5.0, 11.5])  # 1.0 has left the window at 11.5
    assert (inst.state, inst.restarts) == (State.STARTING, 3)
    respawn(inst, SPAWN, 300, 11.6)
    assert crash(inst, 14.0) == [CancelTimer()]  # 5.0, 11.5 and 14.0: three within 10s
    assert inst.state is State.FAILED


def test_a_manual_start_after_failing_resets_the_start_limit() -> None:
    inst = running(make(burst=1, interval=60.0, backoff_initial=0.0))
    crash_loop(inst, [1.0, 2.0])
    assert inst.state is State.FAILED
    assert on_event(inst, Start(manual=True), 3.0) == SPAWN
    on_event(inst, Spawned(300), 3.0)
    assert crash(inst, 4.0) == SPAWN  # one restart is allowed again
    on_event(inst, Spawned(301), 4.0)
    assert crash(inst, 5.0) == [CancelTimer()]
    assert inst.state is State.FAILED


def test_a_manual_start_during_backoff_spawns_at_once_and_resets_the_backoff() -> None:
    inst = make(backoff_initial=0.25, backoff_jitter=0.0, burst=100)
    spawned(inst, 100, 0.0)
    actions = crash_loop(inst, [0.1, 0.5, 1.0])
    assert backoff_of(actions, 1.0) == 1.0
    assert on_event(inst, Start(manual=True), 1.1) == SPAWN
    assert inst.state is State.STARTING
    on_event(inst, Spawned(400), 1.1)
    assert backoff_of(crash(inst, 1.2), 1.2) == 0.25


def test_an_automatic_start_during_backoff_waits_for_the_timer() -> None:
    inst = running(make())
    crash(inst, 5.0)
    assert_ignored(inst, Start())
    assert inst.state is State.RESTARTING


# --- stopping ---------------------------------------------------------------------


def test_stop_of_a_running_instance_sends_the_stop_signal_and_arms_the_timeout() -> None:
    inst = running(make(stop_timeout=10.0))
    assert on_event(inst, Stop(), 20.0) == [
        SignalGroup(signal.SIGTERM),
        SetTimer(30.0, StopTimeout(100)),
    ]
    assert (inst.state, inst.pid) == (State.STOPPING, 100)


def test_stop_of_a_starting_instance_replaces_its_start_seconds_timer() -> None:
    inst = make(stop_signal=signal.SIGINT, stop_timeout=2.0)
    spawned(inst, 100, 0.0)
    assert on_event(inst, Stop(), 0.5) == [
        SignalGroup(signal.SIGINT),
        SetTimer(2.5, StopTimeout(100)),
    ]
    assert inst.state is State.STOPPING
    assert_ignored(inst, StartSecondsPassed(100), 1.0)


@pytest.mark.parametrize(
    ("code", "sig", "message"),
    [
        (None, signal.SIGTERM, "stopped by SIGTERM"),  # the stop signal did it
        (None, signal.SIGKILL, "stopped (killed by SIGKILL)"),  # something else did
        (0, None, "stopped (exited with code 0)"),
        (1, None, "stopped (exited with code 1)"),
    ],
)
def test_exit_while_stopping_is_stopped(code: int | None, sig: int | None, message: str) -> None:
    inst = running(make(restart="always"))
    on_event(inst, Stop(), 20.0)
    assert on_event(inst, Exited(100, code, sig), 21.0) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.ready, inst.restarts) == (State.STOPPED, None, False, 0)
    assert (inst.exit_code, inst.exit_signal, inst.message) == (code, sig, message)


def test_stop_timeout_kills_the_group_and_the_exit_says_killed() -> None:
    inst = running(make(stop_timeout=10.0))
    on_event(inst, Stop(), 20.0)
    assert on_event(inst, StopTimeout(100), 30.0) == [SignalGroup(signal.SIGKILL)]
    assert inst.state is State.STOPPING
    assert on_event(inst, Exited(100, None, signal.SIGKILL), 30.01) == [CancelTimer()]
    assert (inst.state, inst.exit_signal) == (State.STOPPED, signal.SIGKILL)
    assert inst.message == "killed with SIGKILL after stop_timeout (10s)"


def test_stop_timeout_zero_kills_at_once() -> None:
    inst = running(make(stop_timeout=0.0))
    assert on_event(inst, Stop(), 20.0) == [CancelTimer(), SignalGroup(signal.SIGKILL)]
    on_event(inst, Exited(100, None, signal.SIGKILL), 20.0)
    assert inst.state is State.STOPPED
    assert inst.message.startswith("killed with SIGKILL")


def test_a_second_stop_while_stopping_sends_nothing_more() -> None:
    inst = running(make())
    on_event(inst, Stop(), 20.0)
    assert on_event(inst, Stop(), 21.0) == []
    assert inst.state is State.STOPPING


def test_stop_while_waiting_for_dependencies_stops_and_cancels_the_timer() -> None:
    inst = make()
    on_event(inst, Start(waiting_for=("db (ready)",)), 0.0)
    assert on_event(inst, Stop(), 1.0) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.message) == (State.STOPPED, None, "stopped")
    assert_ignored(inst, DependenciesMet())


def test_stop_during_backoff_stops_and_cancels_the_timer() -> None:
    inst = running(make())
    crash(inst, 5.0)
    assert on_event(inst, Stop(), 5.05) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.message) == (State.STOPPED, None, "stopped")
    assert_ignored(inst, BackoffElapsed())


@pytest.mark.parametrize("state", [State.STOPPED, State.EXITED, State.FAILED])
def test_stop_of_a_resting_instance_changes_nothing(state: State) -> None:
    inst = make()
    inst.state = state
    assert_ignored(inst, Stop())


def test_start_while_stopping_spawns_after_the_exit() -> None:
    inst = running(make())
    on_event(inst, Stop(), 20.0)
    assert on_event(inst, Start(), 20.5) == []
    assert inst.state is State.STOPPING
    assert on_event(inst, Exited(100, None, signal.SIGTERM), 21.0) == SPAWN
    assert (inst.state, inst.restarts) == (State.STARTING, 0)
    on_event(inst, Spawned(101), 21.0)
    assert inst.pid == 101


def test_a_stop_after_a_start_while_stopping_wins() -> None:
    inst = running(make())
    on_event(inst, Stop(), 20.0)
    on_event(inst, Start(), 20.5)
    on_event(inst, Stop(), 20.6)
    assert on_event(inst, Exited(100, 0, None), 21.0) == [CancelTimer()]
    assert inst.state is State.STOPPED


def test_a_user_restart_spawns_after_the_exit_without_counting() -> None:
    inst = running(make())
    assert on_event(inst, Stop(restart=True), 20.0) == [
        SignalGroup(signal.SIGTERM),
        SetTimer(30.0, StopTimeout(100)),
    ]
    assert on_event(inst, Exited(100, 0, None), 21.0) == SPAWN
    assert (inst.state, inst.restarts) == (State.STARTING, 0)
    assert inst.message == "stopped (exited with code 0)"


def test_an_automatic_restart_with_a_reason_counts_in_restarts() -> None:
    inst = running(make())
    reason = "unhealthy after 3 failed checks"
    on_event(inst, Stop(restart=True, reason=reason), 20.0)
    assert (inst.state, inst.message) == (State.STOPPING, reason)
    assert on_event(inst, Exited(100, None, signal.SIGTERM), 21.0) == SPAWN
    assert (inst.state, inst.restarts, inst.message) == (State.STARTING, 1, reason)
    on_event(inst, Spawned(101), 21.0)
    on_event(inst, StartSecondsPassed(101), 22.0)
    assert (inst.state, inst.pid, inst.restarts) == (State.RUNNING, 101, 1)
    assert inst.message == reason  # why herdsman restarted it stays visible


def test_automatic_restarts_count_toward_the_start_limit() -> None:
    # An instance that keeps failing its health check is a crash loop too.
    inst = running(make(burst=2, interval=60.0, start_seconds=0))
    reason = "health check failed: connection refused"
    for pid, now in ((100, 10.0), (101, 20.0)):
        on_event(inst, Stop(restart=True, reason=reason), now)
        assert on_event(inst, Exited(pid, None, signal.SIGTERM), now + 1) == SPAWN
        on_event(inst, Spawned(pid + 1), now + 1)
    assert inst.restarts == 2
    on_event(inst, Stop(restart=True, reason=reason), 30.0)
    assert on_event(inst, Exited(102, None, signal.SIGTERM), 31.0) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.restarts) == (State.FAILED, None, 2)
    assert inst.message == (
        f"{reason}; gave up after more than 2 restarts within 60s (start_limit)"
    )
    # A crash and an automatic restart share the one window.
    mixed = running(make(burst=1, interval=60.0, start_seconds=0, backoff_initial=0))
    assert on_event(mixed, Exited(100, 1, None), 5.0) == SPAWN
    on_event(mixed, Spawned(101), 5.0)
    on_event(mixed, Stop(restart=True, reason="memory limit exceeded"), 6.0)
    on_event(mixed, Exited(101, None, signal.SIGTERM), 7.0)
    assert mixed.state is State.FAILED


def test_restarts_that_follow_another_service_never_exhaust_the_limit() -> None:
    inst = running(make(burst=1, interval=60.0, start_seconds=0))
    for pid in range(100, 110):
        on_event(inst, Stop(restart=True, reason="restarted with db", limited=False), pid)
        assert on_event(inst, Exited(pid, None, signal.SIGTERM), pid + 0.5) == SPAWN
        on_event(inst, Spawned(pid + 1), pid + 0.5)
    assert (inst.state, inst.restarts) == (State.RUNNING, 10)


def test_restart_of_a_resting_instance_spawns_at_once() -> None:
    inst = make()
    inst.state = State.EXITED
    assert on_event(inst, Stop(restart=True), 0.0) == SPAWN
    assert inst.state is State.STARTING


# --- readiness --------------------------------------------------------------------


def test_needs_ready_waits_for_ready_after_start_seconds() -> None:
    inst = make(needs_ready=True, start_seconds=1.0)
    spawned(inst, 100, 0.0)
    assert on_event(inst, StartSecondsPassed(100), 1.0) == []
    assert (inst.state, inst.ready) == (State.STARTING, False)
    assert on_event(inst, Ready(100), 3.0) == []
    assert (inst.state, inst.ready) == (State.RUNNING, True)


def test_needs_ready_waits_for_start_seconds_after_ready() -> None:
    inst = make(needs_ready=True, start_seconds=1.0)
    spawned(inst, 100, 0.0)
    assert on_event(inst, Ready(100), 0.5) == []
    assert (inst.state, inst.ready) == (State.STARTING, True)
    on_event(inst, StartSecondsPassed(100), 1.0)
    assert (inst.state, inst.ready) == (State.RUNNING, True)


def test_needs_ready_with_start_seconds_zero_runs_on_ready() -> None:
    inst = make(needs_ready=True, start_seconds=0.0)
    assert spawned(inst, 100, 0.0) == []
    assert (inst.state, inst.ready) == (State.STARTING, False)
    on_event(inst, Ready(100), 0.2)
    assert (inst.state, inst.ready) == (State.RUNNING, True)


def test_a_respawn_is_not_ready_until_it_says_so_again() -> None:
    inst = make(needs_ready=True, start_seconds=0.0, backoff_initial=0.0)
    spawned(inst, 100, 0.0)
    on_event(inst, Ready(100), 0.2)
    crash(inst, 5.0)
    on_event(inst, Spawned(101), 5.0)
    assert (inst.state, inst.ready) == (State.STARTING, False)
    assert_ignored(inst, Ready(100))  # the old process's probe result
    on_event(inst, Ready(101), 5.5)
    assert inst.state is State.RUNNING


# --- stale events -----------------------------------------------------------------


def test_exited_for_an_old_pid_is_ignored() -> None:
    inst = make(backoff_initial=0.0)
    running(inst)
    crash(inst, 5.0)
    on_event(inst, Spawned(101), 5.0)
    assert_ignored(inst, Exited(100, 1, None))


def test_start_seconds_passed_for_an_old_pid_is_ignored() -> None:
    inst = make(backoff_initial=0.0)
    spawned(inst, 100, 0.0)
    crash(inst, 0.5)
    on_event(inst, Spawned(101), 0.5)
    assert_ignored(inst, StartSecondsPassed(100), 1.0)
    assert inst.state is State.STARTING


def test_stop_timeout_for_an_old_pid_is_ignored() -> None:
    inst = running(make())
    on_event(inst, Stop(restart=True), 20.0)
    on_event(inst, Exited(100, 0, None), 21.0)
    on_event(inst, Spawned(101), 21.0)
    assert_ignored(inst, StopTimeout(100), 30.0)
    on_event(inst, Stop(), 40.0)
    assert_ignored(inst, StopTimeout(100), 45.0)
    assert not inst.killed


@pytest.mark.parametrize("setup", ["stopped", "starting", "running", "stopping", "exited"])
def test_backoff_elapsed_outside_restarting_is_ignored(setup: str) -> None:
    inst = make(restart="never")
    if setup == "starting":
        spawned(inst, 100, 0.0)
    elif setup != "stopped":
        running(inst)
    if setup == "stopping":
        on_event(inst, Stop(), 5.0)
    if setup == "exited":
        crash(inst, 5.0)
    assert inst.state.value == setup
    assert_ignored(inst, BackoffElapsed())


@pytest.mark.parametrize("state", [State.STOPPED, State.EXITED, State.FAILED])
def test_events_for_no_process_are_ignored_at_rest(state: State) -> None:
    inst = make()
    inst.state = state
    for ev in (Exited(100, 0, None), StartSecondsPassed(100), Ready(100), StopTimeout(100)):
        assert_ignored(inst, ev)


# --- spawn failures ---------------------------------------------------------------


def test_spawn_failed_is_failed_with_the_reason() -> None:
    inst = make()
    on_event(inst, Start(), 0.0)
    reason = "cannot start: no such file or directory: 'redis-server'"
    assert on_event(inst, SpawnFailed(reason), 0.0) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.message, inst.restarts) == (State.FAILED, None, reason, 0)


def test_spawn_failed_on_a_respawn_gives_up_with_the_reason() -> None:
    inst = running(make(backoff_initial=0.5))
    crash(inst, 5.0)
    assert on_event(inst, BackoffElapsed(), 5.5) == SPAWN
    assert on_event(inst, SpawnFailed("cannot start: permission denied"), 5.5) == [CancelTimer()]
    assert (inst.state, inst.pid, inst.restarts) == (State.FAILED, None, 1)
    assert inst.message == "cannot start: permission denied"


def test_a_failed_instance_can_be_started_again() -> None:
    inst = make()
    on_event(inst, Start(), 0.0)
    on_event(inst, SpawnFailed("cannot start: bad cwd"), 0.0)
    assert on_event(inst, Start(manual=True), 5.0) == SPAWN
    assert (inst.state, inst.message) == (State.STARTING, "")


# --- messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "sig", "text"),
    [
        (0, None, "exited with code 0"),
        (3, None, "exited with code 3"),
        (None, signal.SIGKILL, "killed by SIGKILL"),
        (None, signal.SIGTERM, "killed by SIGTERM"),
        (None, 99, "killed by signal 99"),
    ],
)
def test_describe_exit(code: int | None, sig: int | None, text: str) -> None:
    assert describe_exit(code, sig) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.1, "100ms"), (0.25, "250ms"), (1.0, "1s"), (1.5, "1.5s"), (60.0, "60s"), (0.0, "0ms")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_an_instance_being_stopped_is_no_longer_ready() -> None:
    inst = running(make())
    assert inst.ready
    on_event(inst, Stop(), 5.0)
    assert (inst.state, inst.ready) == (State.STOPPING, False)


def test_a_spawn_failed_for_want_of_fds_is_retried_by_the_backoff() -> None:
    inst = make(backoff_initial=2.0, backoff_jitter=0.0, burst=1)
    on_event(inst, Start(), 0.0)
    reason = "cannot start: too many open files"
    for attempt, at in enumerate((0.0, 2.0, 6.0, 14.0)):
        delay = 2.0 * 2**attempt
        assert on_event(inst, SpawnFailed(reason, retry=True), at) == [
            SetTimer(at + delay, BackoffElapsed())
        ]
        assert (inst.state, inst.pid) == (State.RESTARTING, None)
        assert inst.message == f"{reason}; retrying in {delay:g}s"
        # not the instance's fault: no start limit, however often it happens
        assert on_event(inst, BackoffElapsed(), at + delay) == SPAWN
        assert (inst.state, inst.message, inst.restarts) == (State.STARTING, reason, 0)
    assert on_event(inst, Spawned(101), 30.0) == [SetTimer(31.0, StartSecondsPassed(101))]
    assert inst.spawn_error == ""
    # It started: "cannot start" no longer says anything true of it.
    assert (inst.state, inst.message) == (State.STARTING, "")


def test_a_retried_spawn_waits_at_least_a_second_even_without_backoff() -> None:
    inst = make(backoff_initial=0.0)
    on_event(inst, Start(), 5.0)
    actions = on_event(inst, SpawnFailed("cannot start: too many open files", retry=True), 5.0)
    assert actions == [SetTimer(5.0 + RETRY_MIN, BackoffElapsed())]
    assert on_event(inst, Stop(), 5.5) == [CancelTimer()]
    assert inst.state is State.STOPPED
