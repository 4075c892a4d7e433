"""The documents the daemon answers with (runtime/documents.py) and the OpenAPI
document (api/openapi.py) say the same: each TypedDict has its schema's properties,
the same required keys and the same JSON types. The fakes the tests answer with in
place of a daemon are valid documents too, so a test cannot pass against a shape
the daemon never sends."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NotRequired, Union, get_args, get_origin, get_type_hints, is_typeddict

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from herdsman.api.openapi import DOCUMENT, INSTANCE_KEYS
from herdsman.core.states import State
from herdsman.runtime import documents
from tests.api import harness
from tests.cli import fake
from tests.cli import test_top_model as top
from tests.runtime.harness import until
from tests.runtime.test_daemon import WEB, running

SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
TYPED = {
    "Instance": documents.InstanceDocument,
    "Daemon": documents.DaemonDocument,
    "Status": documents.StatusDocument,
    "StatusColumns": documents.StatusColumns,
    "ActionResult": documents.ResultDocument,
    "Event": documents.EventDocument,
    "LogLine": documents.LogDocument,
}
NAMES = {typed: name for name, typed in TYPED.items()}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}
JSON_TYPES[type(None)] = "null"
JSON_TYPES[Any] = "any"


def typed_json(annotation: Any) -> set[str]:
    """The JSON types (or `$ref` names) a Python annotation allows."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return set().union(*(typed_json(arg) for arg in get_args(annotation)))
    if is_typeddict(annotation):
        return {NAMES[annotation]}
    if origin is list:
        return {f"array of {'/'.join(sorted(typed_json(get_args(annotation)[0])))}"}
    if origin is dict:
        return {f"object of {'/'.join(sorted(typed_json(get_args(annotation)[1])))}"}
    return {JSON_TYPES[annotation]}


def schema_json(schema: Mapping[str, Any]) -> set[str]:
    """The JSON types (or `$ref` names) a schema allows."""
    if "$ref" in schema:
        return {schema["$ref"].rsplit("/", 1)[1]}
    if not schema:
        return {"any"}
    kinds = schema["type"]
    found = set()
    for kind in [kinds] if isinstance(kinds, str) else kinds:
        if kind == "array":
            kind += f" of {'/'.join(sorted(schema_json(schema['items'])))}"
        elif kind == "object":
            kind += f" of {'/'.join(sorted(schema_json(schema['additionalProperties'])))}"
        found.add(kind)
    return found


def required(typed: Any) -> list[str]:
    """The keys a TypedDict requires (its module's postponed annotations hide
    NotRequired from `__required_keys__` on Python 3.11)."""
    hints = get_type_hints(typed, include_extras=True)
    return [key for key, hint in hints.items() if get_origin(hint) is not NotRequired]


@pytest.mark.parametrize("name", sorted(TYPED))
def test_each_document_has_its_schemas_keys_required_keys_and_types(name: str) -> None:
    typed, schema = TYPED[name], SCHEMAS[name]
    hints = get_type_hints(typed)
    assert sorted(hints) == sorted(schema["properties"])
    assert sorted(required(typed)) == sorted(schema["required"])
    for key, annotation in hints.items():
        assert typed_json(annotation) == schema_json(schema["properties"][key]), key


def test_columns_are_the_keys_of_an_instance() -> None:
    keys = set(get_type_hints(documents.InstanceDocument))
    assert set(documents.COLUMNS) == keys
    assert set(INSTANCE_KEYS) == keys


def test_every_state_and_no_other_is_in_the_schema() -> None:
    assert SCHEMAS["Instance"]["properties"]["state"]["enum"] == [s.value for s in State]
    assert SCHEMAS["Event"]["properties"]["previous"]["enum"] == [s.value for s in State]


def test_an_event_is_an_instance_but_its_name_and_samples() -> None:
    instance, event = (
        get_type_hints(documents.InstanceDocument),
        get_type_hints(documents.EventDocument),
    )
    kept = {k: v for k, v in instance.items() if k != "name" and k not in documents.SAMPLED}
    assert {k: v for k, v in event.items() if k not in ("time", "instance", "previous")} == kept


# --- the fakes -------------------------------------------------------------------


def validate(document: Any, name: str) -> None:
    """`document` is a valid `name` of the OpenAPI document, and has no key the
    daemon's TypedDict does not know (the schemas allow more, for later versions)."""
    registry: Registry[Any] = Registry().with_resource(
        "urn:herdsman", Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"urn:herdsman#/components/schemas/{name}"}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(document)
    for key, value in document.items():
        assert key in get_type_hints(TYPED[name]), f"{name} has no {key!r}"
        nested = {"daemon": "Daemon", "services": "Instance", "instances": "Instance"}
        if key in nested:
            for item in value if isinstance(value, list) else [value]:
                validate(item, nested[key])


def fakes() -> Iterator[tuple[str, Any]]:
    controller = harness.FakeController()
    yield "Status", controller.status()
    yield "StatusColumns", controller.columns(list(INSTANCE_KEYS))
    yield from (("Instance", doc) for doc in controller.instances())
    yield from (("LogLine", doc) for doc in controller.lines[:3])
    for state in State:
        yield "Instance", fake.instance("web.0", state.value)
        yield "Instance", top.inst("web", state.value)
        yield "Event", top.event("web", state.value, "running")
    yield "Status", fake.status(fake.instance("web.0"), fake.instance("db", "failed"))
    answer = fake.Reply(200, fake.status(fake.instance("web.0"), fake.instance("db", "failed")))
    yield "StatusColumns", fake.as_columns(answer, ["name", "state", "pid"]).body
    yield "Status", top.status(top.inst("web"))
    yield "LogLine", fake.log_line("web.0", "hello", 3, "err")


FAKES = list(fakes())


@pytest.mark.parametrize(
    ("name", "document"), FAKES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(FAKES)]
)
def test_the_fakes_are_valid_documents(name: str, document: Any) -> None:
    validate(document, name)


def test_the_daemons_documents_are_valid(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            events = daemon.events()
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()))
            await until(lambda: len(daemon.logs(None, 10)) == 3)
            validate(daemon.status(), "Status")
            validate(await daemon.stop("db", wait=True), "ActionResult")
            for line in daemon.logs(None, 10):
                validate(line, "LogLine")
            for _ in range(2):  # db: running -> stopping -> stopped
                validate(await asyncio.wait_for(anext(events), 10), "Event")
            await events.aclose()

    asyncio.run(body())


def test_columns_hold_what_the_documents_hold(tmp: Path) -> None:
    async def body() -> None:
        async with running(tmp, WEB) as daemon:
            await until(lambda: all(d["state"] == "running" for d in daemon.instances()))
            await daemon.stop("db", wait=True)  # one without a process, and how it ended
            documents_ = daemon.instances()
            answer = daemon.columns(list(documents.COLUMNS))
            validate(answer, "StatusColumns")
            columns = answer["columns"]
            for key in documents.COLUMNS:
                values = [d[key] for d in documents_]
                if key == "uptime":  # a moment later
                    assert [v is None for v in columns[key]] == [v is None for v in values]
                    assert all(
                        c - v < 1
                        for c, v in zip(columns[key], values, strict=True)
                        if v is not None
                    )
                else:
                    assert columns[key] == values, key
            assert columns["state"] == ["running", "running", "stopped"]
            assert daemon.columns(["name"])["columns"] == {"name": ["web.0", "web.1", "db"]}

    asyncio.run(body())


@pytest.mark.parametrize(
    "said",
    [
        {},  # only the lifecycles say something: the message column's short way
        {"log_errors": {"a": "log: disk full"}},
        {"problems": {"b": "health plugin stopped"}},
        {"blocked": {"a": "depends on db, which failed"}},
        {"failures": {"b": "health: timed out"}},
        {"notify_statuses": {"a": "warming up", "c": "serving"}},
    ],
)
def test_every_column_holds_what_the_documents_hold(said: dict[str, dict[str, str]]) -> None:
    # On plain values, each source of the message in turn (the daemon test above
    # has none of them).
    from types import SimpleNamespace

    from herdsman.core.lifecycle import Instance
    from herdsman.runtime.monitor import Sample
    from herdsman.runtime.supervisor import Managed

    cores = [
        Instance("a", None, state=State.RUNNING, pid=10, spawned_at=5.0, message="up"),
        Instance("b", None, state=State.EXITED, exit_code=3, message="exited with code 3"),
        Instance("c", None, state=State.RUNNING, pid=12, spawned_at=1.0, exit_signal=9),
    ]
    herd = [
        Managed(core, SimpleNamespace(service=core.name, replica=0, argv=("x", core.name)))
        for core in cores
    ]
    samples = {"a": Sample(1.0, 0.5, 12.5, 4096, 2, 7)}
    sources: dict[str, dict[str, str]] = {
        key: {} for key in ("blocked", "log_errors", "problems", "failures", "notify_statuses")
    }
    parts = documents.Parts(
        now=10.0,
        sample=samples.get,
        health={"a": "healthy"}.get,
        checks=lambda name: {"health": "ok"} if name == "a" else {},
        since={"a": 1_700_000_000.0}.get,
        **{**sources, **said},
    )
    docs = [documents.instance_document(m, parts) for m in herd]
    columns = documents.instance_columns(herd, documents.COLUMNS, parts)
    assert columns == {key: [d[key] for d in docs] for key in documents.COLUMNS}
    assert any(said.values()) == (columns["message"] != ["up", "exited with code 3", ""])
