"""Schemathesis against the OpenAPI document the server itself serves (over TCP, with
the token): valid and invalid requests to every operation get no 5xx and answers
that conform to the document, and the server still serves afterwards.

The streaming operations are left out (`/v1/events`, `follow=true`): they never end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis

from herdsman.api.openapi import DOCUMENT
from tests.api.harness import TOKEN, FakeController, ServerThread, ask, running

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = {
    "generation": {"mode": "all", "max-examples": 50, "database": "none"},
    "phases": {"stateful": {"enabled": False}},
}


@pytest.fixture(scope="module")
def served() -> Iterator[ServerThread]:
    tmp = Path(tempfile.mkdtemp(prefix="hm", dir="/tmp"))
    try:
        with running(FakeController(), tmp / "api.sock", tcp=("127.0.0.1", 0), token=TOKEN) as s:
            yield s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# Generated from the document in the code; test_the_served_document_is_this_one makes
# sure it is the one served. (schemathesis.pytest.from_fixture, which would load it
# from the server, does not work with pytest 9.)
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict(CONFIG)
).exclude(path="/v1/events")


@schema.parametrize()
def test_the_api_conforms_to_its_document(case: schemathesis.Case, served: ServerThread) -> None:
    follow = (case.query or {}).get("follow")
    if any(
        str(value) in ("true", "1") for value in (follow if isinstance(follow, list) else [follow])
    ):
        case.query["follow"] = "false"  # a stream that never ends
    base_url = f"http://127.0.0.1:{served.tcp_port}"
    case.call_and_validate(base_url=base_url, headers=AUTH, timeout=5)


def test_the_served_document_is_this_one(served: ServerThread) -> None:
    assert ask(served.tcp(), "GET", "/openapi.json", headers=AUTH).json == json.loads(
        json.dumps(DOCUMENT)
    )


def test_the_server_is_healthy_after_the_fuzzing(served: ServerThread) -> None:
    assert ask(served.unix(), "GET", "/v1/status").status == 200
    assert served.handler.text(level=40) == ""  # nothing was logged as an error
