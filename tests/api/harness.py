"""Test kit for the control API: an in-memory controller, a server on its own loop thread,
and blocking stdlib HTTP clients for its Unix socket and TCP port.

The server runs in a background event loop so tests can talk to it with plain
`http.client` (the CLI has its own few lines of HTTP; these tests want a client
that is not the server's own twin); state changes are pushed into the loop with
`ServerThread.call_soon`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import http.client
import json
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from herdsman.api.controller import ControlError
from herdsman.api.server import ApiServer

T = TypeVar("T")


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection to a Unix socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


TOKEN = "s3cret-token"
METRICS = b"# TYPE herdsman_instances gauge\nherdsman_instances 4\n"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_instance(name: str) -> dict[str, Any]:
    service, _, replica = name.partition(".")
    return {
        "name": name,
        "service": service,
        "replica": int(replica or 0),
        "state": "running",
        "pid": 1000 + len(name),
        "ready": True,
        "health": None,
        "restarts": 0,
        "exit_code": None,
        "exit_signal": None,
        "uptime": 12.5,
        "cpu_percent": 0.5,
        "rss_bytes": 1 << 20,
        "message": None,
    }


class Subscription:
    """A follower registered when created and dropped by `aclose()`, iterated or not."""

    def __init__(self, registry: list[Subscription], instance: str | None = None) -> None:
        self.instance = instance
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._registry = registry
        registry.append(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        return await self.queue.get()

    async def aclose(self) -> None:
        with contextlib.suppress(ValueError):
            self._registry.remove(self)


class FakeController:
    """What the daemon would answer, for four instances: web.0, web.1, db, worker.

    `follow_logs` subscribes eagerly (the recommended shape); `events` is an
    `async def` generator that subscribes at its first iteration (the other shape the
    runtime may use), so the server is exercised with both.
    """

    def __init__(self) -> None:
        self.instances_ = {n: make_instance(n) for n in ("web.0", "web.1", "db", "worker")}
        self.lines: list[dict[str, Any]] = []
        self.log_followers: list[Subscription] = []
        self.event_followers: list[asyncio.Queue[dict[str, Any]]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.on_shutdown: Callable[[], None] | None = None
        self.gate: asyncio.Event | None = None  # when set up, start() waits on it
        for i in range(150):
            self.append_log("web.0" if i % 2 else "db", f"line {i}")

    def _match(self, pattern: str) -> list[dict[str, Any]]:
        if pattern == "boom":  # a controller bug, for the 500 path
            raise RuntimeError("the fake controller broke")
        if pattern == "locked":
            raise ControlError(409, "herdsman is shutting down")
        found = [
            inst
            for inst in self.instances_.values()
            if fnmatch.fnmatchcase(inst["name"], pattern) or inst["service"] == pattern
        ]
        if not found:
            raise ControlError(404, f"no instance or service matches {pattern!r}")
        return found

    def status(self) -> dict[str, Any]:
        daemon = {"pid": 4242, "version": "0.1.0", "config": "/etc/herdsman.toml"}
        daemon["started_at"] = "2026-11-23T10:00:00.123456Z"
        return {"daemon": daemon, "services": self.instances()}

    def columns(self, keys: list[str]) -> dict[str, Any]:
        status = self.status()
        columns = {key: [i.get(key) for i in status["services"]] for key in keys}
        return {"daemon": status["daemon"], "columns": columns}

    def instances(self) -> list[dict[str, Any]]:
        return list(self.instances_.values())

    def instance(self, name: str) -> dict[str, Any]:
        if name == "boom":
            raise RuntimeError("the fake controller broke")
        try:
            return self.instances_[name]
        except KeyError:
            raise ControlError(404, f"no instance named {name!r}") from None

    async def _act(self, verb: str, pattern: str, wait: bool, state: str) -> dict[str, Any]:
        matched = self._match(pattern)
        self.calls.append((verb, pattern, wait))
        if self.gate is not None:
            await self.gate.wait()
        for inst in matched:
            inst["state"] = state
        return {"instances": matched, "failed": []}

    async def start(self, pattern: str, wait: bool, timeout: float | None) -> dict[str, Any]:  # noqa: ASYNC109 -- the Controller's contract
        return await self._act("start", pattern, wait, "running")

    async def stop(self, pattern: str, wait: bool, timeout: float | None) -> dict[str, Any]:  # noqa: ASYNC109 -- the Controller's contract
        return await self._act("stop", pattern, wait, "stopped")

    async def restart(self, pattern: str, wait: bool, timeout: float | None) -> dict[str, Any]:  # noqa: ASYNC109 -- the Controller's contract
        return await self._act("restart", pattern, wait, "running")

    def signal(self, pattern: str, sig: str | int) -> dict[str, Any]:
        if isinstance(sig, str):
            name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
            if name not in signal.Signals.__members__:
                raise ControlError(400, f"unknown signal {sig!r}")
        matched = self._match(pattern)
        self.calls.append(("signal", pattern, sig))
        return {"instances": matched, "failed": []}

    def logs(self, instance: str | None, n: int) -> list[dict[str, Any]]:
        names = None if instance is None else {i["name"] for i in self._match(instance)}
        chosen = [e for e in self.lines if names is None or e["instance"] in names]
        return chosen[len(chosen) - n :] if n else []

    def follow_logs(self, instance: str | None) -> AsyncIterator[dict[str, Any]]:
        if instance is not None:
            self._match(instance)
        return Subscription(self.log_followers, instance)

    def append_log(self, instance: str, line: str, stream: str = "out") -> None:
        entry = {"time": "2026-11-23T10:00:00.123456Z", "instance": instance}
        entry |= {"stream": stream, "line": line}
        self.lines.append(entry)
        for sub in self.log_followers:
            if sub.instance in (None, instance):
                sub.queue.put_nowait(entry)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.event_followers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.event_followers.remove(queue)

    def emit(self, event: dict[str, Any]) -> None:
        for queue in self.event_followers:
            queue.put_nowait(event)

    async def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        if self.on_shutdown is not None:
            self.on_shutdown()

    async def reload(self) -> dict[str, Any]:
        self.calls.append(("reload",))
        return {
            "added": [],
            "removed": [],
            "changed": [],
            "unchanged": ["web.0"],
            "not_applied": [],
        }

    async def reexec(self) -> dict[str, Any]:
        self.calls.append(("reexec",))
        return {"pid": 4100, "reexecs": 1}

    async def begin_reexec(self) -> None:
        self.calls.append(("begin_reexec",))

    def metrics(self) -> tuple[bytes, str]:
        return METRICS, METRICS_TYPE


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(
            self.format(r) + (r.exc_text or "") for r in self.records if r.levelno >= level
        )


class ServerThread:
    """An ApiServer on an event loop in a background thread."""

    def __init__(self, controller: Any, unix_path: Path, **options: Any) -> None:
        self.controller = controller
        self.handler = ListHandler()
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.log = logging.getLogger(f"herdsman.api.test.{id(self)}")
        self.log.setLevel(logging.DEBUG)
        self.log.propagate = False
        self.log.addHandler(self.handler)
        self.unix_path = unix_path
        self.server = ApiServer(controller, unix_path=unix_path, log=self.log, **options)
        self.loop = asyncio.new_event_loop()
        self._clients: list[socket.socket | http.client.HTTPConnection] = []  # closed by stop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Awaitable[T], timeout: float = 10.0) -> T:
        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def start(self) -> ServerThread:
        self.run(self.server.start())
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        self.log.removeHandler(self.handler)
        for client in self._clients:
            client.close()

    @property
    def tcp_port(self) -> int:
        address = self.server.tcp_address
        assert address is not None
        return address[1]

    def unix(self, timeout: float = 5.0) -> UnixHTTPConnection:
        conn = UnixHTTPConnection(self.unix_path, timeout)
        self._clients.append(conn)
        return conn

    def tcp(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.tcp_port, timeout=timeout)
        self._clients.append(conn)
        return conn

    def raw(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._clients.append(sock)
        sock.settimeout(timeout)
        sock.connect(str(self.unix_path))
        return sock


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.headers
        return json.loads(self.body)

    @property
    def error(self) -> str:
        body = self.json
        assert set(body) == {"error"}, body
        assert isinstance(body["error"], str), body
        return str(body["error"])


def ask(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on `conn` (kept open for the next one); `body` is JSON unless bytes."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    conn.request(method, path, data, headers or {})
    return Answer(conn.getresponse())


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@contextlib.contextmanager
def running(controller: Any, unix_path: Path, **options: Any) -> Iterator[ServerThread]:
    server = ServerThread(controller, unix_path, **options).start()
    try:
        yield server
    finally:
        server.stop()
