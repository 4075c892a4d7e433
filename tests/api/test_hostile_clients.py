"""Clients that hold connections, stall, or send bodies without the token cost the
daemon little: a cap on connections per listener, a deadline for a new
connection's first request, and the TCP token checked before any body is read."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from tests.api.harness import TOKEN, FakeController, ask, read_all, running
from tests.conftest import wait_for

STATUS = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_connection_that_sends_nothing_is_closed_at_the_request_deadline(
    fake: FakeController, tmp: Path
) -> None:
    # Keep-alive connections may idle for 30 s; a new one must speak up sooner.
    with running(fake, tmp / "d.sock", request_timeout=0.5, idle_timeout=30) as server:
        sock = server.raw(timeout=10)
        started = time.monotonic()
        assert read_all(sock) == b""
        assert time.monotonic() - started < 5
        # One that did send a request may idle longer, up to idle_timeout.
        kept = server.unix()
        assert ask(kept, "GET", "/v1/status").status == 200
        time.sleep(1.0)  # idle past the request deadline: the point of the test
        assert ask(kept, "GET", "/v1/status").status == 200


def test_tcp_refuses_a_request_without_the_token_before_reading_its_body(
    fake: FakeController, tmp: Path
) -> None:
    with running(fake, tmp / "t.sock", tcp=("127.0.0.1", 0), token=TOKEN) as server:
        sock = socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10)
        try:
            sock.sendall(
                b"POST /v1/shutdown HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer guess\r\nContent-Length: 60000\r\n\r\n"
            )
            started = time.monotonic()
            answer = sock.recv(65536)  # no byte of the body was sent
            assert answer.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
            assert time.monotonic() - started < 5
        finally:
            sock.close()
        assert fake.calls == []
        assert "refused a control request from 127.0.0.1:" in server.handler.text(logging.WARNING)


def test_refused_requests_are_logged_with_a_count_not_one_line_each(
    fake: FakeController, tmp: Path
) -> None:
    with running(fake, tmp / "r.sock", tcp=("127.0.0.1", 0), token=TOKEN) as server:
        for _ in range(60):
            assert ask(server.tcp(), "GET", "/v1/status").status == 401
        warnings = server.handler.text(logging.WARNING)
        assert warnings.count("refused a control request") == 20
        server.run(server.server.close())
        text = server.handler.text(logging.WARNING)
        assert "API client 127.0.0.1: 40 more messages in the last 10s" in text


def test_a_listener_holds_at_most_max_connections(fake: FakeController, tmp: Path) -> None:
    with running(fake, tmp / "m.sock", max_connections=3) as server:
        held = [server.raw(timeout=10) for _ in range(3)]
        for sock in held:  # each is being served, none answered yet
            sock.sendall(b"GET /v1/status HTTP/1.1\r\n")
        turned_away = server.raw(timeout=10)
        answer = read_all(turned_away)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b'"too many connections' in answer
        held.pop().close()

        def served() -> bool:
            # Until the server has seen the close, a new client is still turned away:
            # answered 503 and closed, maybe before the request is sent (EPIPE).
            sock = server.raw(timeout=10)
            try:
                sock.sendall(STATUS)
                return sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            except OSError:
                return False

        wait_for(served, timeout=10, interval=0.1)
        text = server.handler.text(logging.WARNING)
        assert text.count("turning new API clients away") == 1
        assert "API clients were turned away while it held max_connections" in text


def test_a_full_listener_leaves_the_other_one_serving(fake: FakeController, tmp: Path) -> None:
    options = {"tcp": ("127.0.0.1", 0), "token": TOKEN, "max_connections": 5}
    with running(fake, tmp / "o.sock", **options) as server:
        flood = [
            socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10) for _ in range(20)
        ]
        try:
            assert ask(server.unix(), "GET", "/v1/status").status == 200
        finally:
            for sock in flood:
                sock.close()


def test_the_server_keeps_no_connection_count_after_clients_go(
    fake: FakeController, tmp: Path
) -> None:
    with running(fake, tmp / "c.sock", max_connections=2) as server:
        for _ in range(10):
            a, b = server.raw(), server.raw()
            a.close()
            b.close()
        # Had a connection not been counted out, the cap would refuse for good.
        wait_for(lambda: ask(server.unix(), "GET", "/v1/status").status == 200, timeout=10)
