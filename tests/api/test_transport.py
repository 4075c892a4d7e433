"""The control server's transport: sockets and their modes, the TCP token, keep-alive,
limits, timeouts, malformed input, and closing with connections open."""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.api.listeners import ListenError
from herdsman.api.server import ApiServer
from tests.api.harness import (
    TOKEN,
    FakeController,
    ServerThread,
    ask,
    read_all,
    read_until,
    running,
)
from tests.conftest import wait_for

STATUS = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def serves(server: ServerThread) -> bool:
    """A fresh connection gets a 200 for /v1/status."""
    return ask(server.unix(), "GET", "/v1/status").status == 200


def no_errors_logged(server: ServerThread) -> bool:
    return server.handler.text(logging.ERROR) == ""


# --- the Unix socket --------------------------------------------------------------


def test_socket_is_owner_only_by_default(api: ServerThread) -> None:
    assert stat.S_ISSOCK(os.stat(api.unix_path).st_mode)
    assert mode(api.unix_path) == 0o600


def test_socket_can_be_opened_to_a_group(fake: FakeController, tmp: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp / "g.sock"
    with running(fake, path, socket_mode=0o660, socket_group=group) as server:
        assert mode(path) == 0o660
        assert os.stat(path).st_gid == os.getgid()
        assert serves(server)


def test_an_unknown_group_is_refused_and_leaves_no_socket(fake: FakeController, tmp: Path) -> None:
    server = ServerThread(fake, tmp / "x.sock", socket_group="no-such-group-hm")
    try:
        with pytest.raises(ListenError, match="socket_group 'no-such-group-hm' does not exist"):
            server.start()
        assert not (tmp / "x.sock").exists()
    finally:
        server.stop()


def test_a_stale_socket_is_replaced(fake: FakeController, tmp: Path) -> None:
    path = tmp / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed daemon leaves
    with running(fake, path) as server:
        assert serves(server)


def test_a_socket_in_use_is_not_taken_over(fake: FakeController, tmp: Path) -> None:
    with running(fake, tmp / "busy.sock") as first:
        second = ServerThread(FakeController(), tmp / "busy.sock")
        try:
            with pytest.raises(ListenError, match="another process is serving it"):
                second.start()
        finally:
            second.stop()
        assert serves(first)


def test_a_file_that_is_not_a_socket_is_left_alone(fake: FakeController, tmp: Path) -> None:
    path = tmp / "precious"
    path.write_text("data")
    server = ServerThread(fake, path)
    try:
        with pytest.raises(ListenError, match="it exists and is not a socket"):
            server.start()
    finally:
        server.stop()
    assert path.read_text() == "data"


def test_close_removes_the_socket_but_not_a_successors(fake: FakeController, tmp: Path) -> None:
    path = tmp / "api.sock"
    with running(fake, path) as server:
        pass
    assert not path.exists()
    with running(fake, path) as server:
        os.unlink(path)  # someone else's socket now takes the path
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(path))
        server.run(server.server.close())
        assert path.exists()
        other.close()


def test_tcp_needs_a_token() -> None:
    with pytest.raises(ValueError, match="needs a token"):
        ApiServer(
            FakeController(),
            unix_path=Path("/nonexistent/x.sock"),
            tcp=("127.0.0.1", 0),
            log=logging.getLogger("t"),
        )


# --- the TCP token ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/status", "/metrics", "/openapi.json", "/nope"])
@pytest.mark.parametrize(
    "authorization", [None, "Bearer guess-123", "Basic guess-123", f"Bearer {TOKEN}x"]
)
def test_tcp_without_the_right_token_is_401(
    api: ServerThread, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    conn = api.tcp()
    conn.connect()
    local_port = conn.sock.getsockname()[1]
    answer = ask(conn, "GET", path, headers=headers)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.error == "this request needs the API token (Authorization: Bearer <token>)"
    warnings = api.handler.text(logging.WARNING)
    assert f"refused a control request from 127.0.0.1:{local_port}" in warnings
    assert "guess-123" not in warnings
    assert TOKEN not in warnings


@pytest.mark.parametrize("path", ["/v1/status", "/metrics", "/openapi.json"])
def test_tcp_with_the_token_is_served(api: ServerThread, path: str) -> None:
    conn = api.tcp()
    for scheme in ("Bearer", "bearer"):
        answer = ask(conn, "GET", path, headers={"Authorization": f"{scheme} {TOKEN}"})
        assert answer.status == 200
    assert api.handler.text(logging.WARNING) == ""


def test_the_unix_socket_needs_no_token(api: ServerThread) -> None:
    assert ask(api.unix(), "GET", "/metrics").status == 200


# --- HTTP on one connection ------------------------------------------------------------


def test_keep_alive_serves_requests_on_one_connection(api: ServerThread) -> None:
    conn = api.unix()
    assert ask(conn, "GET", "/v1/status").status == 200
    first_socket = conn.sock
    assert ask(conn, "POST", "/v1/instances/db/stop", {"wait": True}).status == 200
    assert ask(conn, "GET", "/v1/instances/db").json["state"] == "stopped"
    assert conn.sock is first_socket


def test_pipelined_requests_are_answered_in_order(api: ServerThread) -> None:
    sock = api.raw()
    sock.sendall(
        b"GET /v1/instances/db HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1/instances/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.index(b"HTTP/1.1 404 Not Found\r\n") > data.index(b'"name":"db"')


def test_http_1_0_is_answered_and_closed(api: ServerThread) -> None:
    sock = api.raw()
    sock.sendall(b"GET /v1/instances/db HTTP/1.0\r\n\r\n")
    data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["name"] == "db"


def test_expect_100_continue(api: ServerThread, fake: FakeController) -> None:
    sock = api.raw()
    body = b'{"wait": true}'
    sock.sendall(
        b"POST /v1/instances/db/start HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    assert read_until(sock, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    assert read_until(sock, b"}").startswith(b"HTTP/1.1 200 OK\r\n")
    assert fake.calls == [("start", "db", True)]


# --- malformed and hostile input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS hello
        (b"HELLO\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"X" * 100_000, 431),  # no line end ever: the size cap answers
        (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_get_a_json_4xx_and_the_server_goes_on(
    api: ServerThread, garbage: bytes, status: int
) -> None:
    sock = api.raw()
    sock.sendall(garbage)
    data = read_all(sock)  # answered, then closed
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), data
    assert b"Content-Type: application/json" in head
    assert isinstance(json.loads(body)["error"], str)
    assert serves(api)
    assert no_errors_logged(api)


def test_a_half_request_then_close_disturbs_nothing(api: ServerThread) -> None:
    other = api.unix()
    assert ask(other, "GET", "/v1/status").status == 200
    for partial in (b"GET /v1/sta", b"POST /v1/shutdown HTTP/1.1\r\nContent-Length: 10\r\n\r\n{"):
        sock = api.raw()
        sock.sendall(partial)
        sock.close()
    assert ask(other, "GET", "/v1/status").status == 200  # the open connection is intact
    assert serves(api)
    assert no_errors_logged(api)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_an_oversized_body_is_413(api: ServerThread, fake: FakeController, transport: str) -> None:
    conn = api.unix() if transport == "unix" else api.tcp()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = ask(conn, "POST", "/v1/instances/db/start", b" " * 70000, headers)
    assert answer.status == 413
    assert answer.error == "the request body is over 65536 bytes"
    assert answer.headers["Connection"] == "close"
    assert fake.calls == []
    assert serves(api)


def test_an_oversized_chunked_body_is_413(api: ServerThread, fake: FakeController) -> None:
    sock = api.raw()
    sock.sendall(
        b"POST /v1/instances/db/start HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 30000
    for _ in range(3):
        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert read_until(sock, b"}").startswith(b"HTTP/1.1 413 ")
    assert fake.calls == []
    assert serves(api)


def test_a_slow_request_is_cut_off_with_408(fake: FakeController, tmp: Path) -> None:
    with running(fake, tmp / "s.sock", request_timeout=0.3) as server:
        sock = server.raw(timeout=0.05)
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        data = b""
        while time.monotonic() - started < 5:  # one more header line now and then
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert time.monotonic() - started < 2.5
        assert serves(server)


def test_an_idle_connection_is_closed(fake: FakeController, tmp: Path) -> None:
    with running(fake, tmp / "i.sock", idle_timeout=0.3) as server:
        sock = server.raw()
        sock.sendall(STATUS)
        started = time.monotonic()
        data = read_all(sock)  # the answer, then the server closes the idle connection
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert 0.2 < time.monotonic() - started < 3
        assert read_all(server.raw()) == b""  # never a request: closed without a word


def test_a_follower_that_stops_reading_is_dropped(fake: FakeController, tmp: Path) -> None:
    with running(fake, tmp / "w.sock", write_timeout=0.3) as server:
        sock = server.raw()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /v1/logs?n=0&follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: fake.log_followers)
        for _ in range(100):  # far more than the socket buffers hold
            server.call_soon(fake.append_log, "db", "x" * 10000)
        wait_for(lambda: not fake.log_followers)
        assert "control connection from unix dropped: TimeoutError()" in server.handler.text()
        sock.close()


# --- closing --------------------------------------------------------------------------------


def test_close_ends_streams_cleanly_and_closes_connections(
    api: ServerThread, fake: FakeController
) -> None:
    follower = api.unix()
    follower.request("GET", "/v1/logs?n=1&follow=1")
    stream = follower.getresponse()
    idle = api.raw()
    idle.sendall(STATUS)
    assert read_until(idle, b"}").startswith(b"HTTP/1.1 200 OK")
    api.run(api.server.close())
    assert stream.read().count(b"\n") == 1  # the whole body: a chunked end, no IncompleteRead
    assert read_all(idle) == b""
    assert not api.unix_path.exists()
    assert not fake.log_followers
    with pytest.raises(FileNotFoundError):  # the socket file is gone
        api.raw()
    assert no_errors_logged(api)


class ClosingController(FakeController):
    """Closes the server from inside the shutdown request, as a daemon may."""

    server: ApiServer

    async def shutdown(self) -> None:
        await super().shutdown()
        await self.server.close()


def test_close_from_inside_a_request_does_not_deadlock(tmp: Path) -> None:
    controller = ClosingController()
    with running(controller, tmp / "c.sock") as server:
        controller.server = server.server
        answer = ask(server.unix(), "POST", "/v1/shutdown")
        assert (answer.status, answer.json) == (202, {"shutting_down": True})
        wait_for(lambda: not (tmp / "c.sock").exists())
        assert controller.calls == [("shutdown",)]
        assert no_errors_logged(server)


def test_answering_is_held_while_a_request_comes_in_and_its_answer_goes_out(
    fake: FakeController, tmp: Path
) -> None:
    # What the daemon's background sampling waits for: not an idle keep-alive client.
    held: list[str] = []

    @contextlib.contextmanager
    def answering() -> Iterator[None]:
        held.append("in")
        try:
            yield
        finally:
            held.append("out")

    with running(fake, tmp / "a.sock", answering=answering) as server:
        conn = server.unix()
        assert ask(conn, "GET", "/v1/status").status == 200
        assert ask(conn, "GET", "/v1/status").status == 200  # the same connection
        # From the connection's start until its first request is in, then around each
        # answer; nothing held while the client keeps the connection open.
        wait_for(lambda: len(held) == 6)
        assert held == ["in", "out"] * 3
