"""A stand-in for the daemon's control socket: canned JSON answers over HTTP/1.1.

Tests register an answer per (method, path); each request is recorded. A `Stream`
answer is sent chunked, line by line, from an iterable that may block, which is
how `logs -f` is fed. One thread per connection, so a stream never holds up others.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    raw_path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class Stream:
    lines: Iterable[dict[str, Any]]


Answer = Reply | Stream | Callable[[Request], "Reply | Stream"]


def error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


@dataclass
class Feed:
    """Lines handed to a `Stream` answer one at a time; `end()` closes the stream."""

    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    def put(self, entry: dict[str, Any]) -> None:
        self._queue.put(entry)

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (entry := self._queue.get()) is not None:
            yield entry


class FakeDaemon:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[tuple[str, str], Answer] = {}
        self.requests: list[Request] = []
        self.connected = threading.Event()  # set at the first accepted connection
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def answer(self, method: str, path: str, answer: Answer) -> None:
        self.answers[(method, path)] = answer

    def start(self) -> FakeDaemon:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Stop listening (the socket file goes) and drop every connection."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.raw_path for r in self.requests if method is None or r.method == method]

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connected.set()
            with self._lock:
                self._conns.add(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                request = self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                answer = self.answers.get((request.method, request.path))
                if isinstance(answer, Reply) and "columns" in request.query:
                    answer = as_columns(answer, request.query["columns"][0].split(","))
                if answer is None:
                    answer = error(404, f"no fake answer for {request.method} {request.path}")
                if callable(answer):
                    answer = answer(request)
                if isinstance(answer, Reply):
                    self._send_reply(conn, answer)
                else:
                    self._send_stream(conn, answer)
        except OSError:
            pass  # the client went away, or stop() cut the connection
        finally:
            with self._lock:
                self._conns.discard(conn)

    @staticmethod
    def _read_request(reader: Any) -> Request | None:
        line = reader.readline()
        if not line:
            return None
        method, target, _ = line.decode().split(" ", 2)
        length = 0
        while (header := reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = header.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        raw = reader.read(length) if length else b""
        parts = urlsplit(target)
        return Request(
            method=method,
            path=unquote(parts.path),
            raw_path=target,
            query=parse_qs(parts.query),
            body=json.loads(raw) if raw else None,
        )

    @staticmethod
    def _send_reply(conn: socket.socket, reply: Reply) -> None:
        data = json.dumps(reply.body).encode()
        head = (
            f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + data)

    @staticmethod
    def _send_stream(conn: socket.socket, stream: Stream) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for entry in stream.lines:
            data = json.dumps(entry).encode() + b"\n"
            conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        conn.sendall(b"0\r\n\r\n")


def as_columns(reply: Reply, keys: list[str]) -> Reply:
    """A status answer as the daemon gives it for `?columns=` (an answer given as a
    function is sent as it is: that is how a fake plays a daemon older than that)."""
    if reply.status != 200 or "services" not in reply.body:
        return reply
    services = reply.body["services"]
    columns = {key: [i.get(key) for i in services] for key in keys}
    return Reply(200, {"daemon": reply.body["daemon"], "columns": columns})


def instance(name: str, state: str = "running", **fields: Any) -> dict[str, Any]:
    """An instance object as the API gives it, running unless told otherwise."""
    service, _, replica = name.partition(".")
    running = state in ("running", "starting", "stopping")
    doc: dict[str, Any] = {
        "name": name,
        "service": service,
        "replica": int(replica or 0),
        "state": state,
        "pid": 1000 + len(name) if running else None,
        "ready": running,
        "health": None,
        "restarts": 0,
        "exit_code": None,
        "exit_signal": None,
        "uptime": 12.5 if running else None,
        "cpu_percent": 0.3 if running else None,
        "rss_bytes": 13_002_342 if running else None,
        "processes": 1 if running else None,
        "open_fds": 4 if running else None,
        "message": None,
    }
    doc.update(fields)
    return doc


def status(*instances: dict[str, Any], shutting_down: bool = False) -> dict[str, Any]:
    return {
        "daemon": {
            "pid": os.getpid(),
            "version": "0.1.0",
            "config": "/tmp/x/herdsman.toml",
            "started_at": "2026-11-23T10:00:00.000000Z",
            "shutting_down": shutting_down,
        },
        "services": list(instances),
    }


def log_line(instance: str, line: str, second: int = 0, stream: str = "out") -> dict[str, Any]:
    return {
        "time": f"2026-11-23T10:00:{second:02d}.000000Z",
        "instance": instance,
        "stream": stream,
        "line": line,
    }


def serve_until_shutdown(path: Path, linger: float) -> None:
    """A fake daemon in its own process: answers status, and on POST /v1/shutdown
    waits `linger` seconds (stopping its services), then stops listening and exits."""
    fake = FakeDaemon(path)
    done = threading.Event()

    def shutdown(request: Request) -> Reply:
        threading.Timer(linger, done.set).start()
        return Reply(202, {"shutting_down": True})

    fake.answer("GET", "/v1/status", Reply(200, status(instance("web.0"))))
    fake.answer("POST", "/v1/shutdown", shutdown)
    fake.start()
    done.wait()
    fake.stop()


if __name__ == "__main__":
    import sys

    serve_until_shutdown(Path(sys.argv[1]), float(sys.argv[2]))
