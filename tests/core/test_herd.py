"""The herd's rules (`core.herd`), one by one, with plain values: no process, no
real second. The driver plays the runtime (tests/core/herd_driver.py)."""

from __future__ import annotations

import copy
import signal
from dataclasses import replace

import pytest

from herdsman.core import lifecycle as lc
from herdsman.core.herd import (
    IGNORED,
    STATES,
    TABLE,
    CheckResult,
    FilesChanged,
    HealBudget,
    MemorySample,
    NewPlan,
    Notified,
    StartCheck,
    StartRequest,
    StopCheck,
    StopRequest,
    ToInstance,
    WatchdogExpired,
)
from herdsman.core.lifecycle import Policy
from herdsman.core.plan import CheckPlan
from herdsman.core.states import State
from tests.core.herd_driver import Driver, plan, service

MiB = 2**20
HEALTH = CheckPlan("exec", argv=("true",), failure_threshold=2, success_threshold=2)
TCP = CheckPlan("tcp", "127.0.0.1:1", ("127.0.0.1", 1))
NOTIFY = CheckPlan("notify", watchdog=5.0)


# --- dependencies and waves ---------------------------------------------------------


def test_a_dependent_waits_until_its_condition_holds_then_spawns() -> None:
    d = Driver.of(service("db", ready=TCP), service("web", depends_on={"db": "ready"}))
    d.start()
    assert d.spawns == ["db"]
    assert d.state("web") == "waiting"
    assert d.inst("web").message == "waiting for db (ready)"
    assert d.checks == {("db", "ready"): d.inst("db").pid}
    d.send(CheckResult("db", d.inst("db").pid or 0, "ready", "connection refused"))
    assert d.spawns == ["db"]
    d.send(CheckResult("db", d.inst("db").pid or 0, "ready", None))
    assert d.spawns == ["db", "web"]
    assert d.state("db") == "running"
    assert d.state("web") == "running"
    assert ("db", "ready") not in d.checks  # a readiness probe stops once it passed


def test_start_services_starts_the_closure_in_waves() -> None:
    d = Driver.of(
        service("web", depends_on={"db": "started"}),
        service("db"),
        service("other", autostart=False),
    )
    d.start(("web",))
    assert d.spawns == ["db", "web"]
    assert d.state("other") == "stopped"


def test_a_manual_start_brings_up_what_is_down_of_its_dependencies() -> None:
    d = Driver.of(service("db"), service("web", depends_on={"db": "started"}))
    d.send(StartRequest(("web",)))
    assert d.spawns == ["db", "web"]


def test_a_start_without_dependencies_waits_for_them() -> None:
    d = Driver.of(service("db"), service("web", depends_on={"db": "started"}))
    d.send(StartRequest(("web",), dependencies=False))
    assert d.state("web") == "waiting"


def test_a_blocked_instance_is_reported_with_why() -> None:
    d = Driver.of(
        service("db", policy=Policy(restart="never", start_seconds=0)),
        service("web", depends_on={"db": "started"}),
    )
    d.start(("db",))
    d.exit("db", 1)
    d.send(StartRequest(("web",), dependencies=False))
    assert d.state("web") == "waiting"
    assert d.herd.blocked() == {"web": "depends on db, which exited with code 1"}
    assert d.herd.blocked(["db"]) == {}


def test_stop_waves_are_the_start_waves_reversed() -> None:
    d = Driver.of(
        service("db"),
        service("cache"),
        service("web", replicas=2, depends_on={"db": "started", "cache": "started"}),
        service("edge", depends_on={"web": "started"}),
    )
    assert d.herd.stop_waves() == [["edge"], ["web.0", "web.1"], ["db", "cache"]]
    assert d.herd.stop_waves(["db", "edge"]) == [["edge"], ["db"]]


def test_a_kill_request_sends_sigkill_at_once() -> None:
    d = Driver.of(service("db"))
    d.start()
    d.send(StopRequest(("db",), kill=True))
    assert d.signals == [("db", signal.SIGTERM), ("db", signal.SIGKILL)]


# --- the spawn queue ------------------------------------------------------------------


def queued_herd(replicas: int = 6) -> Driver:
    d = Driver.of(service("db"), service("web", replicas=replicas, depends_on={"db": "started"}))
    d.room = False  # the runtime has no room until the test gives some
    return d


def test_a_start_queues_its_spawns_and_room_takes_them_in_order() -> None:
    d = queued_herd()
    d.start()
    assert d.spawns == []
    assert list(d.herd.queued) == ["db"]  # web waits for it, as before
    assert d.state("db") == "queued"
    assert d.inst("db").state is State.STARTING  # what status shows
    assert d.take(1) == ["db"]
    assert list(d.herd.queued) == [f"web.{i}" for i in range(6)]
    assert all(d.state(f"web.{i}") == "queued" for i in range(6))
    assert d.take(2) == ["web.0", "web.1"]
    assert d.take(10) == ["web.2", "web.3", "web.4", "web.5"]
    assert d.take(3) == []
    assert d.spawns == ["db", *(f"web.{i}" for i in range(6))]  # each once


def test_a_stop_drops_queued_instances_that_never_spawn() -> None:
    d = queued_herd()
    d.start()
    d.take(1)  # db: then web's spawns are decided
    d.take(2)  # web.0, web.1
    d.changes.clear()
    d.send(StopRequest(("web.2", "web.4")))
    assert [(n, old, new) for n, old, new, _ in d.changes] == [
        ("web.2", State.STARTING, State.STOPPED),
        ("web.4", State.STARTING, State.STOPPED),
    ]
    assert d.inst("web.2").message == "stopped"
    assert d.signals == []  # nothing to signal: they had no process
    assert list(d.herd.queued) == ["web.3", "web.5"]
    assert d.take(10) == ["web.3", "web.5"]
    assert "web.2" not in d.spawns
    assert "web.4" not in d.spawns


def test_stopping_everything_in_waves_empties_the_queue() -> None:
    d = queued_herd()
    d.start()
    d.take(1)  # db
    d.take(1)  # web.0
    for wave in d.herd.stop_waves():
        d.send(StopRequest(tuple(wave)))
    assert not d.herd.queued
    assert d.signals == [("web.0", signal.SIGTERM), ("db", signal.SIGTERM)]
    assert d.take(10) == []


def test_a_start_of_a_queued_instance_keeps_its_place_and_waits_for_its_spawn() -> None:
    d = queued_herd(replicas=3)
    d.start()
    d.take(1)
    d.send(StartRequest(("web.2", "web.0")))  # a user's: db runs, nothing to add
    assert list(d.herd.queued) == ["web.0", "web.1", "web.2"]
    assert d.inst("web.0").message == ""  # not waiting for anything
    d.send(StopRequest(("db",)))
    d.exit("db", None, signal.SIGTERM)
    d.send(StartRequest(("web.1",), dependencies=False))
    assert d.state("web.1") == "queued"
    assert d.inst("web.1").message == ""  # not "waiting for db": it is on its way
    # Decided while db ran: they still spawn (the queue only holds a decision up).
    assert d.take(3) == ["web.0", "web.1", "web.2"]
    assert d.spawns.count("web.0") == 1


def test_a_manual_start_of_a_queued_restart_resets_its_start_limit_once_spawned() -> None:
    policy = Policy(start_seconds=0.0, backoff_initial=0.0, burst=3, interval=60.0)
    d = Driver.of(service("app", policy=policy))
    d.start()
    d.room = False
    d.exit("app", 1)  # respawn at once: queued
    assert d.state("app") == "queued"
    assert len(d.inst("app").restart_times) == 1
    d.send(StartRequest(("app",)))
    assert d.take(1) == ["app"]
    assert d.inst("app").restart_times == []  # as a start right after a spawn does


def test_queued_instances_are_not_blocked() -> None:
    d = queued_herd(replicas=2)
    d.start()
    d.take(1)
    d.send(StopRequest(("db",)))
    d.exit("db", None, signal.SIGTERM)
    assert d.herd.blocked() == {}  # decided before db stopped: they will spawn
    d.take(2)
    d.send(StopRequest(("web.0", "web.1")))
    d.exit("web.0", None, signal.SIGTERM)
    d.exit("web.1", None, signal.SIGTERM)
    d.send(StartRequest(("web.0",), dependencies=False))
    assert d.herd.blocked() == {"web.0": "depends on db, which is stopped"}


def test_a_reload_that_removes_queued_instances_drops_them() -> None:
    d = queued_herd(replicas=4)
    d.start()
    d.take(1)  # db
    d.take(1)  # web.0
    new = plan(service("db"), service("web", replicas=2, depends_on={"db": "started"}))
    steps = d.herd.reload_steps(new)
    for wave in steps.stop_waves:
        d.send(StopRequest(wave))
    d.send(NewPlan(new, steps.start))
    assert d.forgotten == ["web.2", "web.3"]
    assert list(d.herd.queued) == ["web.1"]
    assert d.take(10) == ["web.1"]


# --- restart_with -------------------------------------------------------------------


def restart_with_herd() -> Driver:
    d = Driver.of(
        service("db", replicas=2),
        service("web", depends_on={"db": "started"}, restart_with=("db",)),
        service("other", depends_on={"db": "started"}),
    )
    d.start()
    assert d.spawns == ["db.0", "db.1", "web", "other"]
    return d


def test_restart_with_restarts_the_dependent_once_what_it_follows_runs_again() -> None:
    d = restart_with_herd()
    d.exit("db.0", 1)
    d.advance(1.0)  # backoff
    assert d.state("db.0") == "running"
    assert d.signals == [("web", signal.SIGTERM)]
    assert d.inst("web").message == "restarted with db"
    d.exit("web", None, signal.SIGTERM)
    assert d.state("web") == "running"
    assert d.inst("web").restarts == 1
    d.advance(100.0)
    assert d.signals == [("web", signal.SIGTERM)]  # once per restart of db


def test_restart_with_waits_for_every_replica() -> None:
    d = restart_with_herd()
    d.exit("db.0", 1)
    d.exit("db.1", 1)
    d.advance(0.11)  # both back (the same backoff)
    assert d.signals == [("web", signal.SIGTERM)]


def test_restart_with_does_not_count_toward_the_start_limit() -> None:
    d = Driver.of(
        service("db"),
        service(
            "web",
            depends_on={"db": "started"},
            restart_with=("db",),
            policy=Policy(burst=0, start_seconds=0),
        ),
    )
    d.start()
    for _ in range(3):
        d.exit("db", 1)
        d.advance(60.0)
        d.exit("web", None, signal.SIGTERM)
    assert d.state("web") == "running"
    assert d.inst("web").restarts == 3


# --- the memory verdict -------------------------------------------------------------


def test_two_samples_in_a_row_over_the_limit_restart() -> None:
    d = Driver.of(service("hog", memory_limit=40 * MiB))
    d.start()
    pid = d.inst("hog").pid or 0
    assert d.herd.memory_watched() == [("hog", pid, 40 * MiB)]
    d.send(MemorySample("hog", pid, 80 * MiB))
    d.send(MemorySample("hog", pid, 20 * MiB))  # a spike: forgotten
    d.send(MemorySample("hog", pid, 80 * MiB))
    assert d.signals == []
    d.send(MemorySample("hog", pid, 81 * MiB))
    assert d.signals == [("hog", signal.SIGTERM)]
    assert d.inst("hog").message == "memory limit exceeded (81 MiB > 40 MiB)"
    assert d.said == ["hog: memory limit exceeded (81 MiB > 40 MiB); restarting"]


def test_the_memory_limit_counts_toward_the_start_limit() -> None:
    d = Driver.of(service("hog", memory_limit=MiB, policy=Policy(burst=0, start_seconds=0)))
    d.start()
    pid = d.inst("hog").pid or 0
    d.send(MemorySample("hog", pid, 2 * MiB))
    d.send(MemorySample("hog", pid, 2 * MiB))
    d.exit("hog", None, signal.SIGTERM)
    assert d.state("hog") == "failed"


def test_a_memory_limit_reloaded_applies_to_the_running_process() -> None:
    d = Driver.of(service("hog"))
    d.start()
    pid = d.inst("hog").pid or 0
    assert d.herd.memory_watched() == []
    d.send(NewPlan(plan(service("hog", memory_limit=MiB))))
    assert d.herd.memory_watched() == [("hog", pid, MiB)]
    d.send(MemorySample("hog", pid, 2 * MiB))
    d.send(NewPlan(plan(service("hog"))))  # removed again: no verdict
    d.send(MemorySample("hog", pid, 2 * MiB))
    assert d.signals == []
    assert d.inst("hog").pid == pid


def test_a_sample_of_an_older_process_says_nothing() -> None:
    d = Driver.of(service("hog", memory_limit=MiB))
    d.start()
    d.send(MemorySample("hog", 1, 2 * MiB))
    d.send(MemorySample("hog", 1, 2 * MiB))
    assert d.signals == []


# --- health thresholds --------------------------------------------------------------


def test_health_thresholds_decide_healthy_and_the_restart() -> None:
    d = Driver.of(service("api", health=HEALTH))
    assert d.herd.health == {"api": "unknown"}
    d.start()
    pid = d.inst("api").pid or 0
    assert d.checks == {("api", "health"): pid}
    d.send(CheckResult("api", pid, "health", None))
    assert d.herd.health["api"] == "unknown"  # success_threshold = 2
    d.send(CheckResult("api", pid, "health", None))
    assert d.herd.health["api"] == "healthy"
    d.send(CheckResult("api", pid, "health", "exit code 1"))
    assert d.signals == []
    assert d.said == ["api: health check failed (1/2): exit code 1"]
    d.send(CheckResult("api", pid, "health", "exit code 1"))
    assert d.herd.health["api"] == "unhealthy"
    assert d.signals == [("api", signal.SIGTERM)]
    assert d.inst("api").message == "health check failed: exit code 1"
    assert ("api", "health") not in d.checks
    d.exit("api", None, signal.SIGTERM)
    assert d.herd.health["api"] == "unknown"  # a new process: checked afresh
    assert d.checks == {("api", "health"): d.inst("api").pid}


def test_failed_health_checks_count_toward_the_start_limit() -> None:
    d = Driver.of(service("api", health=HEALTH, policy=Policy(burst=1, start_seconds=0)))
    d.start()
    for _ in range(2):
        pid = d.inst("api").pid or 0
        d.send(CheckResult("api", pid, "health", "down"))
        d.send(CheckResult("api", pid, "health", "down"))
        d.exit("api", None, signal.SIGTERM)
    assert d.state("api") == "failed"
    assert d.inst("api").restarts == 1


def test_a_health_check_added_by_reload_starts_for_the_running_process() -> None:
    d = Driver.of(service("api"))
    d.start()
    pid = d.inst("api").pid
    assert d.herd.health == {"api": None}
    d.send(NewPlan(plan(service("api", health=HEALTH))))
    assert d.checks == {("api", "health"): pid}
    assert d.herd.health == {"api": "unknown"}
    stricter = replace(HEALTH, failure_threshold=1)
    d.send(NewPlan(plan(service("api", health=stricter))))
    assert d.checks == {("api", "health"): pid}  # started again with the new settings
    d.send(CheckResult("api", pid or 0, "health", "down"))
    assert d.signals == [("api", signal.SIGTERM)]
    assert d.inst("api").pid == pid


def test_a_readiness_probe_changed_by_reload_restarts_while_not_ready() -> None:
    d = Driver.of(service("api", ready=TCP))
    d.start()
    pid = d.inst("api").pid
    other = CheckPlan("http", "http://127.0.0.1:1/")
    d.send(NewPlan(plan(service("api", ready=other))))
    assert [a for a in d.actions if isinstance(a, StopCheck | StartCheck)] == [
        StopCheck("api", "ready"),
        StartCheck("api", "ready", pid or 0),
    ]


# --- sd_notify and the watchdog -----------------------------------------------------


def test_the_watchdog_restarts_what_stops_pinging() -> None:
    d = Driver.of(service("svc", ready=NOTIFY))
    d.start()
    pid = d.inst("svc").pid or 0
    d.send(Notified("svc", {"READY": "1"}))
    assert d.state("svc") == "running"
    d.advance(4.0)
    d.send(Notified("svc", {"WATCHDOG": "1"}))
    d.advance(4.0)
    assert d.signals == []
    d.advance(1.5)
    assert d.signals == [("svc", signal.SIGTERM)]
    assert d.said == ["svc: watchdog: no WATCHDOG=1 within 5s; restarting"]
    assert d.inst("svc").pid == pid


def test_a_watchdog_for_an_older_process_is_ignored() -> None:
    d = Driver.of(service("svc", ready=NOTIFY))
    d.start()
    pid = d.inst("svc").pid or 0
    d.send(Notified("svc", {"READY": "1"}))
    d.exit("svc", 1)
    assert ("svc", "watchdog") not in d.timers  # disarmed with its process
    d.advance(1.0)
    assert d.send(WatchdogExpired("svc", pid)) == []


# --- files changed ----------------------------------------------------------------


def test_changed_files_restart_without_counting_and_start_what_ended() -> None:
    d = Driver.of(
        service("app", replicas=2, policy=Policy(burst=0, restart="never", start_seconds=0))
    )
    d.start()
    d.exit("app.1", 1)
    d.send(FilesChanged("app", ("a.py", "b.py")))
    assert d.signals == [("app.0", signal.SIGTERM)]
    assert d.said == [
        "app.0: restart: a.py and 1 more changed",
        "app.1: restart: a.py and 1 more changed; starting it again",
    ]
    d.exit("app.0", None, signal.SIGTERM)
    assert d.state("app.0") == "running"
    assert d.state("app.1") == "running"


# --- reload -------------------------------------------------------------------------


def test_reload_steps_stop_dependents_first_and_start_in_waves() -> None:
    d = Driver.of(
        service("db"),
        service("web", depends_on={"db": "started"}),
        service("old"),
        service("idle", autostart=False),
    )
    d.start()
    new = plan(
        service("db", argv=("sleep", "601")),
        service("web", depends_on={"db": "started"}, argv=("sleep", "602")),
        service("idle", autostart=False, argv=("x",)),
        service("new"),
        service("lazy", autostart=False),
    )
    steps = d.herd.reload_steps(new)
    assert steps.diff.changed == ("db", "web", "idle")
    assert steps.stop_waves == (("web",), ("db", "old", "idle"))  # stopping idle: no-op
    assert steps.start == ("db", "new", "web")  # idle was not up; lazy is not autostart


def test_new_plan_forgets_removed_instances_and_keeps_the_others_in_place() -> None:
    d = Driver.of(service("db"), service("old"))
    d.start()
    pid = d.inst("db").pid
    d.send(StopRequest(("old",)))
    d.exit("old", None, signal.SIGTERM)
    slower = Policy(start_seconds=0, stop_signal=signal.SIGINT, stop_timeout=1.0)
    d.send(NewPlan(plan(service("db", policy=slower), service("new")), start=("new",)))
    assert d.forgotten == ["old"]
    assert set(d.herd.instances) == {"db", "new"}
    assert d.inst("db").pid == pid
    assert d.spawns[-1] == "new"
    d.send(StopRequest(("db",)))
    assert d.signals[-1] == ("db", signal.SIGINT)
    assert d.timers["db", "lifecycle"][0] == pytest.approx(1.0)
    assert d.send(ToInstance("old", lc.Exited(1, 0, None))) == []  # late: ignored


# --- the heal budget ----------------------------------------------------------------


def test_the_heal_budget() -> None:
    budget = HealBudget(limit=2, window=10.0)
    assert budget.spend(0.0)
    assert budget.spend(1.0)
    assert not budget.spend(2.0)
    assert budget.spend(11.5)  # the first two are out of the window
    assert budget.times == [2.0, 11.5]


# --- the table: every (state, event) pair ---------------------------------------------


def test_the_table_names_every_pair() -> None:
    for event, row in TABLE.items():
        assert tuple(row) == STATES, event


def in_state(state: str) -> Driver:
    """A herd with instance `app` (a tcp readiness probe, a health check, a memory
    limit and a watchdog: every rule applies to it) in `state`."""
    check = CheckPlan("notify", watchdog=5.0)
    policy = Policy(start_seconds=1.0, needs_ready=True, burst=0, restart="on-failure")
    d = Driver.of(
        service("db", policy=Policy(start_seconds=0)),
        service(
            "app",
            depends_on={"db": "started"},
            ready=check,
            health=HEALTH,
            memory_limit=MiB,
            policy=policy,
        ),
    )
    if state == "waiting":
        d.send(StartRequest(("app",), dependencies=False))
    elif state == "queued":
        d.send(StartRequest(("db",)))
        d.room = False  # its dependency runs: app's spawn is decided, and waits for room
        d.send(StartRequest(("app",), dependencies=False))
    elif state == "failed":
        d.start()
        d.exit("app", 1)
    elif state != "stopped":
        d.start()
        pid = d.inst("app").pid or 0
        if state in ("running", "stopping"):
            d.send(Notified("app", {"READY": "1"}))
            d.advance(1.0)
            d.send(Notified("app", {"WATCHDOG": "1"}))
        if state == "stopping":
            d.send(StopRequest(("app",)))
        elif state == "restarting":
            d.send(ToInstance("app", lc.Exited(pid, 1, None)))
            d.herd.instances["app"].policy = replace(policy, burst=5)
            d.send(StartRequest(("app",), manual=False))
            d.exit("app", 1)
        elif state == "exited":
            d.exit("app", 0)
    assert d.state("app") == state
    return d


def herd_event(d: Driver, event: str) -> object:
    pid = d.inst("app").pid or 0
    return {
        "ready passed": CheckResult("app", pid, "ready", None),
        "ready failed": CheckResult("app", pid, "ready", "no"),
        "health passed": CheckResult("app", pid, "health", None),
        "health failed": CheckResult("app", pid, "health", "no"),
        "memory over limit": MemorySample("app", pid, 2 * MiB),
        "memory under limit": MemorySample("app", pid, MiB // 2),
        "notify READY=1": Notified("app", {"READY": "1"}),
        "notify WATCHDOG=1": Notified("app", {"WATCHDOG": "1"}),
        "watchdog expired": WatchdogExpired("app", pid),
        "files changed": FilesChanged("app", ("x",)),
        "start": StartRequest(("app",), dependencies=False),
        "stop": StopRequest(("app",)),
    }[event]


def snapshot(d: Driver) -> object:
    herd = d.herd
    return (
        copy.deepcopy(herd.instances["app"]),
        dict(herd.health),
        dict(herd.watchdogs),
        herd._health_counts.get("app"),
        "app" in herd._over_limit,
        copy.deepcopy(herd.queued),
    )


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", list(TABLE))
def test_each_pair_does_what_the_table_says(event: str, state: str) -> None:
    d = in_state(state)
    if event == "ready passed" and state == "starting":
        # The instance reports by notify; a probe's result stands for any active probe.
        d.herd._checks.setdefault("app", set()).add("ready")
    if event == "health failed" and state == "running":
        d.send(CheckResult("app", d.inst("app").pid or 0, "health", "no"))  # 1 of 2
    if event == "memory over limit" and state in ("starting", "running"):
        d.send(MemorySample("app", d.inst("app").pid or 0, 2 * MiB))  # 1 of 2
    if event == "memory under limit" and state in ("starting", "running"):
        d.send(MemorySample("app", d.inst("app").pid or 0, 2 * MiB))  # to be forgotten
    if event == "watchdog expired" and state == "starting":
        d.send(Notified("app", {"WATCHDOG": "1"}))
    before = snapshot(d)
    actions = d.herd.on_event(herd_event(d, event), d.now)  # type: ignore[arg-type]
    if TABLE[event][state] == IGNORED:
        assert actions == [], (event, state)
        assert snapshot(d) == before, (event, state)
    else:
        assert actions or snapshot(d) != before, (event, state)
    assert d.herd.state_of("app") in STATES


def test_a_late_check_of_a_stopped_check_is_ignored() -> None:
    d = Driver.of(service("api", health=HEALTH))
    d.start()
    pid = d.inst("api").pid or 0
    d.send(StopRequest(("api",)))
    assert d.checks == {}  # checks stop once it is being stopped
    assert d.send(CheckResult("api", pid, "health", "down")) == []
    assert d.inst("api").state is State.STOPPING
