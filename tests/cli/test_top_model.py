"""What `top` shows, without a screen: snapshots and events merged in the right order,
sorting and filtering."""

from __future__ import annotations

from typing import Any

from herdsman.cli.top.model import Model, cells


def inst(name: str, state: str = "running", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "service": name.split(".")[0],
        "replica": int(name.partition(".")[2] or 0),
        "state": state,
        "pid": fields.pop("pid", 100),
        "ready": True,
        "health": None,
        "restarts": 0,
        "exit_code": None,
        "exit_signal": None,
        "uptime": 5.0,
        "cpu_percent": 1.5,
        "rss_bytes": 2**20,
        "message": "",
        **fields,
    }


def event(name: str, state: str, previous: str, **fields: Any) -> dict[str, Any]:
    doc = inst(name, state, **fields)
    doc.pop("name")
    for key in ("cpu_percent", "rss_bytes"):
        doc.pop(key)
    return {"time": "2026-12-06T10:00:00.000000Z", "instance": name, "previous": previous, **doc}


def status(*instances: dict[str, Any]) -> dict[str, Any]:
    daemon = {"pid": 1, "version": "0.1.0", "config": "/tmp/x/herdsman.toml", "reexecs": 0}
    daemon["started_at"] = "2026-12-06T09:00:00.000000Z"
    return {"daemon": daemon, "services": list(instances)}


def test_an_event_newer_than_a_snapshot_keeps_its_state_and_takes_the_samples() -> None:
    model = Model()
    model.snapshot(status(inst("web"), inst("db")), model.events_seen)
    asked_at = model.events_seen
    model.apply(event("web", "exited", "running", pid=None, exit_code=1, uptime=None))
    # The snapshot was asked for before the event arrived: it may predate the exit.
    model.snapshot(status(inst("web", cpu_percent=9.0), inst("db", cpu_percent=3.0)), asked_at)
    web, db = model.instances["web"], model.instances["db"]
    assert (web["state"], web["pid"], web["exit_code"]) == ("exited", None, 1)
    assert db["cpu_percent"] == 3.0
    # A snapshot asked for after the event is the truth again.
    model.snapshot(status(inst("web", "running", pid=200)), model.events_seen)
    assert model.instances["web"]["pid"] == 200
    assert "db" not in model.instances  # removed by a reload


def test_an_event_for_a_new_process_clears_the_old_ones_samples() -> None:
    model = Model()
    model.snapshot(status(inst("web")), 0)
    model.apply(event("web", "starting", "restarting", pid=101, uptime=0.0))
    web = model.instances["web"]
    assert (web["pid"], web["cpu_percent"], web["rss_bytes"]) == (101, None, None)
    assert cells(web)[:4] == ("web", "starting", "101", "0s")


def test_an_instance_only_an_event_knows_is_kept() -> None:
    model = Model()
    model.snapshot(status(inst("web")), 0)
    model.apply(event("new", "starting", "stopped"))
    model.snapshot(status(inst("web")), 0)
    assert set(model.instances) == {"web", "new"}


def test_sorting_and_filtering() -> None:
    model = Model()
    model.snapshot(
        status(
            inst("web.0", cpu_percent=5.0),
            inst("web.1", "failed", pid=None, cpu_percent=None),
            inst("db", cpu_percent=50.0),
        ),
        0,
    )
    names = lambda: [i["name"] for i in model.rows()]  # noqa: E731
    assert names() == ["web.0", "web.1", "db"]  # the config's order
    model.sort_by("cpu")
    assert names() == ["web.1", "web.0", "db"]  # nothing measured sorts first
    model.sort_by("cpu")
    assert names() == ["db", "web.0", "web.1"]
    model.pattern = "web*"
    assert names() == ["web.0", "web.1"]
    model.pattern = "fail"
    assert names() == ["web.1"]
    model.pattern = ""
    assert [model.cycle_sort() for _ in range(3)] == ["mem", "config order", "name"]
    assert model.counts() == "3 instances: 1 failed, 2 running"
