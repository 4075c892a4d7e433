"""The control server: HTTP/1.1 (h11) on the daemon's Unix socket and an optional TCP port.

This module owns connections, framing, keep-alive, size limits, timeouts and the
TCP token check; binding the listening sockets is listeners.py's, what a request
means is `routes.Routes`' business. Every connection
is a task owned by the server, and `close()` cancels and awaits them all.

It accepts connections itself rather than through `asyncio.start_server`, whose
accept loop, out of file descriptors, logs a traceback per attempt (100 per loop
turn) and re-arms itself as often: here a listener that gets EMFILE/ENFILE stops
accepting for ACCEPT_RETRY seconds and says so once per outage. Each listener
holds at most `max_connections` clients (more are answered 503 and closed), so no
client can take the file descriptors the instances need; a client must send its
first request within `request_timeout` of connecting, and on TCP the token is
checked as soon as the request's head is in, before its body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import h11

from herdsman.api.controller import Controller
from herdsman.api.listeners import bind, socket_id, unlink_socket
from herdsman.api.openapi import MAX_BODY
from herdsman.api.routes import HttpError, Reply, Routes, Stream, aclose, error_reply
from herdsman.runtime.throttle import Throttle

READ_SIZE = 64 * 1024
MAX_HEAD = 16 * 1024  # request line and headers; more is answered 431
LINGER_TIMEOUT = 2.0  # after an error answer, how long to discard input before closing
LINGER_BYTES = 1024 * 1024
ACCEPT_BATCH = 32  # connections accepted per loop turn and listener
ACCEPT_RETRY = 1.0  # seconds a listener rests after running out of fds
# Shortages that pass: the process's or the system's fds, socket buffers, memory.
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BUSY_BODY = b'{"error": "too many connections, try again shortly"}'
_TOO_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


@dataclass(eq=False)
class _Listener:
    """One listening socket and what it is going through."""

    sock: socket.socket
    tcp: bool
    name: str  # for the log: the socket's path or host:port
    active: int = 0  # connections being served
    turned_away: int = 0  # since it was last full
    failed_accepts: int = 0  # since the current outage began (0: none)
    resume: asyncio.TimerHandle | None = None


class ApiServer:
    """Serves the control API for one Controller until `close()`.

    Timeouts, all in seconds: `idle_timeout` closes a keep-alive connection with no
    request in progress; `request_timeout` bounds receiving one request from its
    first byte (slowloris); `write_timeout` drops a client that stops reading.
    None of them runs while a streamed response waits for its next line.
    """

    def __init__(
        self,
        controller: Controller,
        *,
        unix_path: Path,
        socket_mode: int = 0o600,
        socket_group: str | None = None,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
        log: logging.Logger,
        max_body: int = MAX_BODY,
        idle_timeout: float = 30.0,
        request_timeout: float = 10.0,
        write_timeout: float = 30.0,
        max_connections: int = 128,
        answering: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
    ) -> None:
        if tcp is not None and not token:
            raise ValueError("a TCP listener needs a token")
        self._routes = Routes(controller)
        self._unix_path = Path(unix_path)
        self._socket_mode = socket_mode
        self._socket_group = socket_group
        self._tcp = tcp
        self._token = token.encode() if token else b""
        self._log = log
        self._max_body = max_body
        self._idle_timeout = idle_timeout
        self._request_timeout = request_timeout
        self._write_timeout = write_timeout
        self._max_connections = max_connections
        self._answering = answering or contextlib.nullcontext
        self._listeners: list[_Listener] = []
        self._refusals: Throttle | None = None  # per client host: refused requests
        self._connections: set[asyncio.Task[None]] = set()
        self._closing = False
        self._socket_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we bound
        self._tcp_address: tuple[str, int] | None = None

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        """The TCP (host, port) actually bound (useful with port 0), or None."""
        return self._tcp_address

    async def start(self, listening: list[int] | None = None) -> None:
        """Serve on `listening`: the fds of listening sockets already bound (Unix
        first, then TCP), by listeners.bind or by a previous image of the daemon
        that handed them over; clients that connected meanwhile wait in their
        backlog and are served. Without them (or none), bind the sockets the
        server was made with first: ListenError if it cannot."""
        if not listening:
            listening = await bind(
                self._unix_path,
                socket_mode=self._socket_mode,
                socket_group=self._socket_group,
                tcp=self._tcp,
            )
        for i, fd in enumerate(listening):
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
            if i == 0:
                # The path it is bound to, whatever the config says now (a reload
                # may have changed `socket`, which applies only at a restart).
                self._unix_path = Path(sock.getsockname())
                self._socket_id = socket_id(self._unix_path)
                self._listen(sock, tcp=False, name=str(self._unix_path))
            else:
                host, port = sock.getsockname()[:2]
                if self._tcp_address is None:  # `localhost` binds two: the first is said
                    self._tcp_address = (host, port)
                self._listen(sock, tcp=True, name=f"{host}:{port}")

    async def hand_over(self) -> list[int]:
        """Close like `close()`, but keep the listening sockets (and the socket file)
        for a new image: their fds, inheritable, Unix first."""
        fds = []
        for listener in self._listeners:
            fd = os.dup(listener.sock.fileno())
            os.set_inheritable(fd, True)
            fds.append(fd)
        self._socket_id = None  # the file stays: the new image serves it
        await self.close()
        return fds

    async def close(self) -> None:
        """Stop accepting, cancel every connection (streams included), remove the socket.

        Safe to await from inside a request (shutdown): that connection is left to
        finish on its own.
        """
        self._closing = True
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if listener.resume is not None:
                listener.resume.cancel()
            else:
                loop.remove_reader(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()
        current = asyncio.current_task()
        others = [task for task in self._connections if task is not current]
        for task in others:
            task.cancel()
        if others:
            await asyncio.wait(others)
        if self._refusals is not None:
            self._refusals.close()
        unlink_socket(self._unix_path, self._socket_id)
        self._socket_id = None

    def _listen(self, sock: socket.socket, *, tcp: bool, name: str) -> None:
        sock.setblocking(False)
        listener = _Listener(sock, tcp, name)
        self._listeners.append(listener)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, listener)

    def _accept(self, listener: _Listener) -> None:
        """Take the waiting connections (a batch: the loop has other work too)."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while waiting
            except OSError as e:
                if e.errno in _RESOURCE_ERRORS:
                    self._pause(listener, e)
                else:
                    self._log.warning("cannot accept on %s: %s", listener.name, e.strerror)
                return
            if listener.failed_accepts:
                self._log.warning(
                    "accepting API connections on %s again (%d attempts failed meanwhile)",
                    listener.name,
                    listener.failed_accepts,
                )
                listener.failed_accepts = 0
            if self._closing:
                conn.close()
            elif listener.active >= self._max_connections:
                self._turn_away(listener, conn)
            else:
                listener.active += 1
                task = asyncio.create_task(self._connection(conn, listener))
                self._connections.add(task)
                task.add_done_callback(self._connections.discard)

    def _pause(self, listener: _Listener, error: OSError) -> None:
        """Out of fds: rest, rather than retry in a tight loop (the socket stays readable)."""
        if not listener.failed_accepts:
            self._log.error(
                "cannot accept API connections on %s: %s; retrying every %gs",
                listener.name,
                error.strerror,
                ACCEPT_RETRY,
            )
        listener.failed_accepts += 1
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.sock.fileno())
        listener.resume = loop.call_later(ACCEPT_RETRY, self._resume, listener)

    def _resume(self, listener: _Listener) -> None:
        listener.resume = None
        asyncio.get_running_loop().add_reader(listener.sock.fileno(), self._accept, listener)

    def _turn_away(self, listener: _Listener, conn: socket.socket) -> None:
        if not listener.turned_away:
            self._log.warning(
                "%s holds max_connections (%d): turning new API clients away",
                listener.name,
                self._max_connections,
            )
        listener.turned_away += 1
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(_TOO_BUSY)
        conn.close()

    def _connection_ended(self, listener: _Listener) -> None:
        listener.active -= 1
        if listener.turned_away and listener.active < self._max_connections:
            self._log.warning(
                "%s: %d API clients were turned away while it held max_connections",
                listener.name,
                listener.turned_away,
            )
            listener.turned_away = 0

    async def _connection(self, sock: socket.socket, listener: _Listener) -> None:
        with contextlib.ExitStack() as answering:
            answering.enter_context(self._answering())  # its first request is on its way
            await self._connected(sock, listener, answering)

    async def _connected(
        self, sock: socket.socket, listener: _Listener, answering: contextlib.ExitStack
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            reader = asyncio.StreamReader(loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
        except BaseException:
            sock.close()
            self._connection_ended(listener)
            raise
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        tcp = listener.tcp
        peer = _peer(writer) if tcp else "unix"
        try:
            await self._serve(reader, writer, tcp, peer, answering)
        except OSError as e:  # the client went away, or stopped reading (TimeoutError)
            self._log.debug("control connection from %s dropped: %r", peer, e)
        except Exception:
            self._log.exception("control connection from %s failed", peer)
        finally:
            writer.close()
            self._connection_ended(listener)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tcp: bool,
        peer: str,
        answering: contextlib.ExitStack,
    ) -> None:
        """Answer requests on one connection, in order, until either side closes.

        The server's `answering` (the sampler's: its background pass waits) is held
        from the connection's start until its first request is in, and while each
        answer is sent; not while a request waits for what it asked (`--wait`), nor
        for the next request, nor while a stream is sent."""
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        first = True
        while not self._closing:
            try:
                received = await self._read_request(conn, reader, writer, first, tcp, peer)
            except h11.RemoteProtocolError as e:
                status = e.error_status_hint
                text = str(e)[:200] or _reason(status).lower()
                reply = error_reply(status, f"malformed HTTP request: {text}")
                await self._reply_and_close(conn, reader, writer, reply)
                return
            except HttpError as e:
                await self._reply_and_close(conn, reader, writer, e.reply())
                return
            answering.close()
            if received is None:
                return
            first = False
            request, body = received
            method = request.method.decode("ascii")
            target = request.target.decode("ascii", "replace")
            answer = await self._dispatch(method, request.target, body)
            if isinstance(answer, Stream):
                self._log.debug("%s %s %s -> 200, streaming", peer, method, target)
                await self._send_stream(conn, reader, writer, answer)
                return
            self._log.debug("%s %s %s -> %d", peer, method, target, answer.status)
            with self._answering():
                await self._send_reply(conn, writer, answer, head=method == "HEAD")
            if answer.after is not None:
                try:
                    await answer.after()
                except Exception:
                    self._log.exception("%s %s: what follows the answer failed", method, target)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _read_request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bool,
        tcp: bool,
        peer: str,
    ) -> tuple[h11.Request, bytes] | None:
        """The next complete request and its body, or None when the client is gone or idle.

        A new connection's first request must come within `request_timeout` (or
        `idle_timeout`, if shorter): only a connection that already served one may
        idle (keep-alive) up to `idle_timeout`. Holding idle connections open costs
        an attacker nothing but the daemon a file descriptor each.
        """
        loop = asyncio.get_running_loop()
        started = bool(conn.trailing_data[0])  # a pipelined request is already buffered
        if started:
            wait = self._request_timeout
        elif first:
            wait = min(self._request_timeout, self._idle_timeout)
        else:
            wait = self._idle_timeout
        deadline = loop.time() + wait
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    go_on = h11.InformationalResponse(
                        status_code=100, headers=[], reason="Continue"
                    )
                    writer.write(conn.send(go_on) or b"")
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    if not started:
                        return None  # an idle keep-alive connection: just close it
                    raise HttpError(408, "the request was not received in time") from None
                if not data:
                    return None  # closed mid-request: nobody is left to answer
                if not started:
                    started = True
                    deadline = loop.time() + self._request_timeout
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                if tcp:  # before any of the body is read
                    self._check_token(event, peer)
                declared = _content_length(event)
                if declared is not None and declared > self._max_body:
                    raise HttpError(413, f"the request body is over {self._max_body} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    raise HttpError(413, f"the request body is over {self._max_body} bytes")
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return request, bytes(body)
            else:  # ConnectionClosed (or PAUSED, which the cycle order rules out)
                return None

    def _check_token(self, request: h11.Request, peer: str) -> None:
        refusal = self._refusal(request)
        if refusal is None:
            return
        if self._refusals is None:
            self._refusals = Throttle(self._log, asyncio.get_running_loop())
        host = peer.rpartition(":")[0] or peer
        message = f"refused a control request from {peer}: {refusal}"
        self._refusals.log(f"API client {host}", logging.WARNING, message)
        raise HttpError(
            401,
            "this request needs the API token (Authorization: Bearer <token>)",
            (("WWW-Authenticate", "Bearer"),),
        )

    def _refusal(self, request: h11.Request) -> str | None:
        """Why a TCP request lacks a valid token, or None if it has one. Never the token."""
        # Imported here: hmac loads OpenSSL (~0.7 MB RSS), which only TCP needs.
        import hmac

        values = [value for name, value in request.headers if name == b"authorization"]
        if not values:
            return "no Authorization header"
        scheme, _, token = values[0].partition(b" ")
        if len(values) > 1 or scheme.lower() != b"bearer":
            return "not a single bearer token"
        if not hmac.compare_digest(token.strip(), self._token):
            return "wrong token"
        return None

    async def _dispatch(self, method: str, target: bytes, body: bytes) -> Reply | Stream:
        try:
            return await self._routes.handle(method, target, body)
        except HttpError as e:
            return e.reply()
        except Exception:
            shown = target.decode("ascii", "replace")
            self._log.exception("control request %s %s failed", method, shown)
            return error_reply(500, "the daemon failed to handle this request; its log says why")

    async def _send_reply(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply, *, head: bool
    ) -> None:
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            *reply.headers,
        ]
        writer.write(conn.send(_response(reply.status, headers)) or b"")
        if reply.body and not head:  # a HEAD response declares the length but has no body
            writer.write(conn.send(h11.Data(data=reply.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await self._drain(writer, flush=reply.after is not None)

    async def _reply_and_close(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply: Reply,
    ) -> None:
        """Answer an unusable request (if the protocol state still allows), then close."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        self._log.debug("answered %d and closed: %s", reply.status, reply.body.decode())
        closing = Reply(reply.status, reply.body, headers=(*reply.headers, ("Connection", "close")))
        with contextlib.suppress(h11.LocalProtocolError):
            await self._send_reply(conn, writer, closing, head=False)
        # Read what the client is still sending (an oversized body) before closing:
        # closing with unread input makes TCP reset the connection, and the client
        # may then lose the answer before reading it.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER_TIMEOUT):
                await _until_eof(reader, limit=LINGER_BYTES)

    async def _send_stream(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        stream: Stream,
    ) -> None:
        """Send a streamed 200 until the source ends, the client goes, or the server closes."""
        tasks: list[asyncio.Task[None]] = []
        try:
            headers = [
                ("Content-Type", stream.content_type),
                ("Cache-Control", "no-cache"),
                # Never reused: a stream ends when one side gives up on it.
                ("Connection", "close"),
            ]
            writer.write(conn.send(_response(200, headers)) or b"")
            pump = asyncio.create_task(self._pump(conn, writer, stream))
            gone = asyncio.create_task(_until_eof(reader))
            tasks = [pump, gone]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # raises what broke the stream, for _connection to log
        except asyncio.CancelledError:
            if self._closing and conn.our_state is h11.SEND_BODY:
                # The daemon is going away: end the body cleanly, so a follower
                # sees a complete response rather than a truncated one.
                writer.write(conn.send(h11.EndOfMessage()) or b"")
            raise
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            await aclose(stream.source)

    async def _pump(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, stream: Stream
    ) -> None:
        if stream.first:
            writer.write(conn.send(h11.Data(data=stream.first)) or b"")
        await self._drain(writer)  # the headers go out now, not with the first new item
        async for item in stream.source:
            writer.write(conn.send(h11.Data(data=stream.encode(item))) or b"")
            await self._drain(writer)
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter, *, flush: bool = False) -> None:
        if flush:  # wait for an empty buffer, not merely one under the high-water mark
            writer.transport.set_write_buffer_limits(high=0)
        async with asyncio.timeout(self._write_timeout):
            await writer.drain()


async def _until_eof(reader: asyncio.StreamReader, limit: float = float("inf")) -> None:
    """Return once the client closes its side (or sent `limit` bytes), ignoring what it sends."""
    received = 0
    with contextlib.suppress(OSError):
        while received < limit and (data := await reader.read(READ_SIZE)):
            received += len(data)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _response(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    return h11.Response(status_code=status, headers=headers, reason=_reason(status))


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
