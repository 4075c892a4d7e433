"""Every route of the control API and its status codes, over the Unix socket."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import pytest

from herdsman.api.openapi import INSTANCE_KEYS
from tests.api.harness import (
    METRICS,
    METRICS_TYPE,
    FakeController,
    ServerThread,
    ask,
    make_instance,
)
from tests.conftest import wait_for


def test_status_and_instances(api: ServerThread) -> None:
    conn = api.unix()
    status = ask(conn, "GET", "/v1/status")
    assert status.status == 200
    assert status.json["daemon"]["pid"] == 4242
    assert [i["name"] for i in status.json["services"]] == ["web.0", "web.1", "db", "worker"]
    listed = ask(conn, "GET", "/v1/instances")
    assert listed.status == 200
    assert listed.json == status.json["services"]
    one = ask(conn, "GET", "/v1/instances/web.1")
    assert one.status == 200
    assert one.json == make_instance("web.1")


def test_status_in_columns(api: ServerThread) -> None:
    answer = ask(api.unix(), "GET", "/v1/status?columns=name,state,pid")
    assert answer.status == 200
    assert answer.json["daemon"]["pid"] == 4242
    assert answer.json["columns"] == {
        "name": ["web.0", "web.1", "db", "worker"],
        "state": [make_instance(n)["state"] for n in ("web.0", "web.1", "db", "worker")],
        "pid": [make_instance(n)["pid"] for n in ("web.0", "web.1", "db", "worker")],
    }


@pytest.mark.parametrize("columns", ["", "name,nope", "name,,pid", "NAME"])
def test_status_columns_must_be_keys_of_an_instance(api: ServerThread, columns: str) -> None:
    answer = ask(api.unix(), "GET", f"/v1/status?columns={columns}")
    assert answer.status == 400
    assert answer.error.startswith("parameter 'columns' names ")
    keys = ", ".join(INSTANCE_KEYS)
    assert answer.error.endswith(f", which is not a key of an instance ({keys})")


def test_unknown_instance_is_404_with_the_controllers_sentence(api: ServerThread) -> None:
    answer = ask(api.unix(), "GET", "/v1/instances/nope")
    assert answer.status == 404
    assert answer.error == "no instance named 'nope'"


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_actions_pass_pattern_and_wait(api: ServerThread, fake: FakeController, verb: str) -> None:
    conn = api.unix()
    plain = ask(conn, "POST", f"/v1/instances/web/{verb}")
    assert plain.status == 200
    assert [i["name"] for i in plain.json["instances"]] == ["web.0", "web.1"]
    assert plain.json["failed"] == []
    waited = ask(conn, "POST", f"/v1/instances/db/{verb}", {"wait": True})
    assert waited.status == 200
    empty_object = ask(conn, "POST", f"/v1/instances/db/{verb}", {})
    assert empty_object.status == 200
    assert fake.calls == [(verb, "web", False), (verb, "db", True), (verb, "db", False)]


@pytest.mark.parametrize("path", ["/v1/instances/web.*/stop", "/v1/instances/web.%2A/stop"])
def test_patterns_are_percent_decoded(api: ServerThread, fake: FakeController, path: str) -> None:
    answer = ask(api.unix(), "POST", path)
    assert answer.status == 200
    assert fake.calls == [("stop", "web.*", False)]
    assert [i["state"] for i in answer.json["instances"]] == ["stopped", "stopped"]


def test_an_encoded_slash_stays_inside_the_pattern(api: ServerThread, fake: FakeController) -> None:
    answer = ask(api.unix(), "POST", "/v1/instances/a%2Fb/start")
    assert answer.status == 404
    assert answer.error == "no instance or service matches 'a/b'"


def test_action_on_nothing_is_404_and_conflict_is_409(api: ServerThread) -> None:
    conn = api.unix()
    assert ask(conn, "POST", "/v1/instances/nothing*/start").status == 404
    locked = ask(conn, "POST", "/v1/instances/locked/restart")
    assert locked.status == 409
    assert locked.error == "herdsman is shutting down"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[]", "the request body must be a JSON object"),
        (b"null", "the request body must be a JSON object"),
        (b'{"wait": "yes"}', "field 'wait' must be true or false"),
        (b'{"wait": 1}', "field 'wait' must be true or false"),
        (b'{"wiat": true}', "unknown field 'wiat' in the request body"),
        (b'{"wait": tru', "the request body is not valid JSON"),
        (b"\xff\xfe\xfa", "the request body is not valid JSON"),
        (b"[" * 60000, "the request body is not valid JSON"),
    ],
)
def test_bad_action_bodies_are_400_naming_the_problem(
    api: ServerThread, fake: FakeController, body: bytes, error: str
) -> None:
    conn = api.unix()
    answer = ask(conn, "POST", "/v1/instances/web/start", body)
    assert (answer.status, answer.error) == (400, error)
    assert fake.calls == []
    assert ask(conn, "GET", "/v1/status").status == 200  # same connection, still served


SIGNAL_ERROR = (
    "field 'signal' must be a signal name such as HUP or SIGHUP, or a number from 1 to 64"
)


@pytest.mark.parametrize(
    ("sig", "passed"),
    [
        ("HUP", "HUP"),
        ("SIGUSR1", "SIGUSR1"),
        ("term", "term"),
        ("sigRtMin", "sigRtMin"),
        (1, 1),
        (64, 64),
        (15.0, 15),
    ],
)
def test_signal(api: ServerThread, fake: FakeController, sig: object, passed: object) -> None:
    answer = ask(api.unix(), "POST", "/v1/instances/worker/signal", {"signal": sig})
    assert answer.status == 200
    assert [i["name"] for i in answer.json["instances"]] == ["worker"]
    assert fake.calls == [("signal", "worker", passed)]
    assert type(fake.calls[0][2]) is type(passed)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (None, "the request body must be a JSON object"),
        ({}, "field 'signal' is required"),
        ({"signal": ""}, SIGNAL_ERROR),
        ({"signal": True}, SIGNAL_ERROR),
        ({"signal": 0}, SIGNAL_ERROR),
        ({"signal": 65}, SIGNAL_ERROR),
        ({"signal": 1.5}, SIGNAL_ERROR),
        ({"signal": "HUP", "x": 1}, "unknown field 'x' in the request body"),
        ({"signal": "NOPE"}, SIGNAL_ERROR),
        ({"signal": "15"}, SIGNAL_ERROR),
        ({"signal": "HUP\n"}, SIGNAL_ERROR),
    ],
)
def test_bad_signals_are_400(
    api: ServerThread, fake: FakeController, body: object, error: str
) -> None:
    answer = ask(api.unix(), "POST", "/v1/instances/worker/signal", body)
    assert (answer.status, answer.error) == (400, error)
    assert fake.calls == []


def _ndjson(body: bytes) -> list[dict[str, object]]:
    assert body == b"" or body.endswith(b"\n")
    return [json.loads(line) for line in body.splitlines()]


def test_logs(api: ServerThread) -> None:
    conn = api.unix()
    default = ask(conn, "GET", "/v1/logs")
    assert default.status == 200
    assert default.headers["Content-Type"] == "application/x-ndjson"
    lines = _ndjson(default.body)
    assert len(lines) == 100
    assert lines[-1]["line"] == "line 149"
    assert set(lines[0]) == {"time", "instance", "stream", "line"}
    two = _ndjson(ask(conn, "GET", "/v1/logs?n=2&instance=db&follow=0").body)
    assert [e["line"] for e in two] == ["line 146", "line 148"]
    assert ask(conn, "GET", "/v1/logs?n=0").body == b""
    everything = ask(conn, "GET", "/v1/logs?n=100000&instance=&follow=false")
    assert len(_ndjson(everything.body)) == 150


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("n=-1", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=100001", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=abc", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=1.5", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=+5", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=", "parameter 'n' must be an integer from 0 to 100000"),
        ("n=1&n=2", "parameter 'n' is given more than once"),
        ("follow=maybe", "parameter 'follow' must be true, false, 1 or 0"),
        ("follow=", "parameter 'follow' must be true, false, 1 or 0"),
        ("follow=True", "parameter 'follow' must be true, false, 1 or 0"),
        ("instance=%FF", "the query string is not valid percent-encoded UTF-8"),
    ],
)
def test_bad_log_parameters_are_400(api: ServerThread, query: str, error: str) -> None:
    answer = ask(api.unix(), "GET", f"/v1/logs?{query}")
    assert (answer.status, answer.error) == (400, error)


def test_logs_of_an_unknown_instance_are_404_even_when_following(
    api: ServerThread, fake: FakeController
) -> None:
    conn = api.unix()
    assert ask(conn, "GET", "/v1/logs?instance=nope").status == 404
    assert ask(conn, "GET", "/v1/logs?instance=nope&follow=1").status == 404
    assert fake.log_followers == []


def test_logs_follow_streams_the_backlog_then_new_lines(
    api: ServerThread, fake: FakeController
) -> None:
    conn = api.unix()
    conn.request("GET", "/v1/logs?instance=web.0&n=2&follow=true")
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert [json.loads(response.readline())["line"] for _ in range(2)] == ["line 147", "line 149"]
    api.call_soon(fake.append_log, "db", "not followed")
    api.call_soon(fake.append_log, "web.0", "new one", "err")
    assert json.loads(response.readline()) == {
        "time": "2026-11-23T10:00:00.123456Z",
        "instance": "web.0",
        "stream": "err",
        "line": "new one",
    }
    response.close()  # (with Connection: close, the response alone holds the socket)
    wait_for(lambda: not fake.log_followers)  # the subscription ends with the client


def test_events_stream(api: ServerThread, fake: FakeController) -> None:
    conn = api.unix()
    conn.request("GET", "/v1/events")
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    wait_for(lambda: fake.event_followers)
    event = {"time": "2026-11-23T10:00:00Z", "instance": "db", "state": "stopping"}
    api.call_soon(fake.emit, event)
    api.call_soon(fake.emit, event | {"state": "stopped"})
    assert (
        response.readline() == b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n"
    )
    assert response.readline() == b"\n"
    assert json.loads(response.readline().removeprefix(b"data: "))["state"] == "stopped"
    response.close()
    wait_for(lambda: not fake.event_followers)


def test_shutdown_answers_202_before_the_controller_shuts_down(
    api: ServerThread, fake: FakeController
) -> None:
    sock = api.raw()
    received_at_shutdown: list[bytes] = []

    def peek() -> None:  # what the client had already received when shutdown began
        received_at_shutdown.append(sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT))

    fake.on_shutdown = peek
    sock.sendall(b"POST /v1/shutdown HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    wait_for(lambda: received_at_shutdown)
    assert received_at_shutdown[0].startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert received_at_shutdown[0].endswith(b'\r\n\r\n{"shutting_down":true}')
    assert fake.calls == [("shutdown",)]
    sock.close()


def test_metrics_are_the_controllers_bytes(api: ServerThread) -> None:
    answer = ask(api.unix(), "GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == METRICS_TYPE
    assert answer.body == METRICS


def test_openapi_document(api: ServerThread) -> None:
    from herdsman.api.openapi import DOCUMENT

    answer = ask(api.unix(), "GET", "/openapi.json")
    assert answer.status == 200
    assert answer.json == json.loads(json.dumps(DOCUMENT))


def test_every_documented_operation_is_routed(api: ServerThread) -> None:
    from herdsman.api.openapi import DOCUMENT

    conn = api.unix()
    for path, operations in DOCUMENT["paths"].items():
        concrete = path.replace("{name}", "db").replace("{pattern}", "db")
        for method in operations:
            if concrete in ("/v1/events", "/v1/shutdown"):  # streams / ends the daemon
                continue
            body = {"signal": "HUP"} if concrete.endswith("/signal") else None
            answer = ask(conn, method.upper(), concrete, body)
            expected = 202 if concrete == "/v1/reexec" else 200  # answered before the exec
            assert answer.status == expected, (method, path, answer.body)


def test_a_path_that_is_not_utf8_is_400(api: ServerThread) -> None:
    answer = ask(api.unix(), "GET", "/v1/instances/%C3%28")
    assert (answer.status, answer.error) == (400, "the path is not valid percent-encoded UTF-8")


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v2/status", "/v1/status/", "/v1/instances//start", "/v1/instances/db/x"]
)
def test_unknown_paths_are_404_json(api: ServerThread, path: str) -> None:
    answer = ask(api.unix(), "GET", path)
    assert answer.status == 404
    assert answer.error == "no such path in the control API (see /openapi.json)"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/status", "GET"),
        ("DELETE", "/v1/instances/db", "GET"),
        ("GET", "/v1/instances/db/start", "POST"),
        ("PUT", "/v1/shutdown", "POST"),
        ("POST", "/openapi.json", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    api: ServerThread, method: str, path: str, allow: str
) -> None:
    answer = ask(api.unix(), method, path)
    assert answer.status == 405
    assert answer.headers["Allow"] == allow
    assert answer.error == f"{method} is not allowed here; use {allow}"


def test_head_is_405_without_a_body_and_the_connection_goes_on(api: ServerThread) -> None:
    conn = api.unix()
    conn.request("HEAD", "/v1/status")
    response = conn.getresponse()
    assert response.status == 405
    assert response.headers["Allow"] == "GET"
    assert response.read() == b""
    assert ask(conn, "GET", "/v1/status").status == 200


def test_a_controller_fault_is_500_and_logged_with_its_traceback(api: ServerThread) -> None:
    conn = api.unix()
    answer = ask(conn, "GET", "/v1/instances/boom")
    assert answer.status == 500
    assert answer.error == "the daemon failed to handle this request; its log says why"
    errors = api.handler.text(logging.ERROR)
    assert "GET /v1/instances/boom failed" in errors
    assert "RuntimeError: the fake controller broke" in errors
    assert ask(conn, "GET", "/v1/status").status == 200


def test_requests_are_logged_at_debug(api: ServerThread) -> None:
    ask(api.unix(), "GET", "/v1/instances/nope")
    assert "unix GET /v1/instances/nope -> 404" in api.handler.text()


def test_a_waiting_request_does_not_hold_up_others(api: ServerThread, fake: FakeController) -> None:
    fake.gate = asyncio.Event()
    waiting = api.unix()
    waiting.request("POST", "/v1/instances/db/start", b'{"wait": true}')
    wait_for(lambda: fake.calls)
    assert ask(api.unix(), "GET", "/v1/status").status == 200
    api.call_soon(fake.gate.set)
    assert waiting.getresponse().status == 200


def test_reload_answers_what_changed(api: ServerThread, fake: FakeController) -> None:
    reply = ask(api.unix(), "POST", "/v1/reload")
    assert reply.status == 200
    assert reply.json == {
        "added": [],
        "removed": [],
        "changed": [],
        "unchanged": ["web.0"],
        "not_applied": [],
    }
    assert fake.calls == [("reload",)]


def test_reexec_answers_202_then_begins(api: ServerThread, fake: FakeController) -> None:
    answer = ask(api.unix(), "POST", "/v1/reexec")
    assert (answer.status, answer.json) == (202, {"pid": 4100, "reexecs": 1})
    wait_for(lambda: ("begin_reexec",) in fake.calls)
    assert fake.calls == [("reexec",), ("begin_reexec",)]
