"""An asyncio client of the control API for the commands that follow the daemon live
(`top`, `events`): many requests and streams at once, each on its own connection,
over the Unix socket or over the TCP listener with the bearer token.

HTTP framing is h11's (already the server's), so chunked streams and error answers are
read as the server wrote them. Errors are the blocking client's: NoDaemon when nothing
listens, ApiError for a 4xx/5xx answer, ConnectionLost when a connection is cut before
the answer (a GET is then asked again: the daemon was handing over to a new image).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11

from herdsman.cli.client import (
    EXIT_NO_DAEMON,
    EXIT_USAGE,
    READ_TIMEOUT,
    ApiError,
    ClientError,
    ConnectionLost,
    NoDaemon,
    locate,
    parse_url,
    read_token,
)

CONNECT_TIMEOUT = 5.0
GET_ATTEMPTS = 3
RETRY_PAUSE = 0.05
READ_SIZE = 65536


@dataclass(frozen=True)
class Endpoint:
    """Where the daemon listens: its Unix socket, or host and port with the token."""

    config: str | os.PathLike[str] | None
    socket: str | os.PathLike[str] | None = None
    host: str = "localhost"
    port: int | None = None
    token: str | None = None

    def describe(self) -> str:
        return str(self.socket) if self.socket is not None else f"http://{self.host}:{self.port}"


def endpoint(args: argparse.Namespace) -> Endpoint:
    """The endpoint the command line names; ClientError (exit 2) for a bad one."""
    url: str | None = getattr(args, "url", None)
    token_file: str | None = getattr(args, "token_file", None)
    if url is None:
        if token_file is not None:
            raise ClientError("--token-file only goes with --url", EXIT_USAGE)
        config, socket_path = locate(args.config)
        return Endpoint(config, socket=socket_path)
    host, port = parse_url(url)
    if token_file is None:
        raise ClientError("--url needs --token-file: the TCP listener wants the token", EXIT_USAGE)
    return Endpoint(None, host=host, port=port, token=read_token(token_file))


def is_gone(err: ClientError) -> bool:
    """Whether the error says that no daemon listens (as opposed to one that refused)."""
    return err.exit_code == EXIT_NO_DAEMON


class Response:
    """An answered request whose body is read as it arrives."""

    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
    ) -> None:
        self._conn = conn
        self._reader = reader
        self._writer = writer
        self.status = status

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come; ends at the end of the body or when the
        connection closes (the daemon went away mid-stream)."""
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self._reader.read(READ_SIZE)
                except ConnectionError:
                    data = b""
                try:
                    self._conn.receive_data(data)
                except h11.RemoteProtocolError:
                    return  # cut off mid-chunk: the stream just ends
                continue
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def lines(self) -> AsyncIterator[bytes]:
        """The body split into lines (without their newline)."""
        pending = b""
        async for chunk in self.chunks():
            pending += chunk
            *whole, pending = pending.split(b"\n")
            for line in whole:
                yield line
        if pending:
            yield pending

    def close(self) -> None:
        self._writer.close()


class AsyncClient:
    """Requests to one endpoint; each opens its own connection."""

    def __init__(self, where: Endpoint) -> None:
        self.endpoint = where

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        timeout: float | None = READ_TIMEOUT,  # noqa: ASYNC109 -- per attempt: a GET asked again gets the time afresh
    ) -> Any:
        """The decoded JSON answer; a GET cut off before its answer is asked again."""
        for attempt in range(GET_ATTEMPTS):
            try:
                async with asyncio.timeout(timeout):
                    response = await self.open(method, path, body)
                    try:
                        data = await response.read()
                    finally:
                        response.close()
                return _decode(data)
            except ConnectionLost:
                if method != "GET" or attempt == GET_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(RETRY_PAUSE)
            except TimeoutError:
                raise ClientError(
                    f"the daemon did not answer {method} {path} within {timeout:g}s"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def ndjson(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """The objects of a newline-delimited JSON stream (`/v1/logs?follow=1`). The
        request is answered at the first `anext`; the iterator ends with the stream."""
        response = await self.open("GET", path)
        try:
            async for line in response.lines():
                if line.strip():
                    yield _decode(line)
        finally:
            response.close()

    async def subscribe(self) -> Response:
        """The daemon's events, subscribed when this returns (read them with `events`):
        first a snapshot (the status document), then every change after it."""
        return await self.open("GET", "/v1/events?snapshot=1")

    async def open(self, method: str, path: str, body: object = None) -> Response:
        """Send a request and wait for the answer's head; ApiError for an error answer."""
        reader, writer = await self._connect()
        try:
            conn = h11.Connection(h11.CLIENT)
            headers = [("Host", self.endpoint.host), ("Accept", "application/json")]
            if self.endpoint.token is not None:
                headers.append(("Authorization", f"Bearer {self.endpoint.token}"))
            payload = b""
            if body is not None:
                payload = json.dumps(body).encode()
                headers.append(("Content-Type", "application/json"))
            headers.append(("Content-Length", str(len(payload))))
            data = conn.send(h11.Request(method=method, target=path, headers=headers)) or b""
            if payload:
                data += conn.send(h11.Data(data=payload)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            writer.write(data)
            await writer.drain()
            head = await self._head(conn, reader)
            response = Response(conn, reader, writer, head.status_code)
            if head.status_code >= 400:
                raise ApiError(head.status_code, _error_sentence(head, await response.read()))
            return response
        except ConnectionError as err:
            writer.close()
            raise ConnectionLost(
                f"the daemon closed the connection before answering ({err.__class__.__name__})"
            ) from None
        except BaseException:
            writer.close()
            raise

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        where = self.endpoint
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                if where.socket is not None:
                    return await asyncio.open_unix_connection(os.fspath(where.socket))
                return await asyncio.open_connection(where.host, where.port)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            if where.config is not None:
                raise NoDaemon(where.config) from None
            raise ClientError(f"no daemon answers at {where.describe()}", EXIT_NO_DAEMON) from None
        except PermissionError:
            raise ClientError(
                f"permission denied to connect to {where.describe()}"
                " (the socket belongs to another user?)"
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the daemon at {where.describe()} did not accept a connection"
                f" within {CONNECT_TIMEOUT:g}s"
            ) from None
        except OSError as err:
            raise ClientError(
                f"cannot connect to {where.describe()}: {err.strerror or err}"
            ) from None

    @staticmethod
    async def _head(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Response:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                raise ClientError("the daemon broke the protocol before answering") from None
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(READ_SIZE))
            elif isinstance(event, h11.Response):
                return event
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionLost("the daemon closed the connection before answering")


async def events(response: Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The events of a server-sent event stream, until it ends: (its name, its JSON
    document); a change is a `message`, the status the stream begins with a `snapshot`."""
    data: list[bytes] = []
    name = "message"
    try:
        async for line in response.lines():
            line = line.rstrip(b"\r")
            if not line:  # a blank line ends an event
                if data:
                    yield name, _decode(b"\n".join(data))
                    data = []
                name = "message"
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
            # Comments (`:`) and other fields (`id:`) carry nothing for us.
    finally:
        response.close()


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise ClientError("the daemon sent an answer that is not JSON") from None


def _error_sentence(head: h11.Response, body: bytes) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return str(data["error"])
    except ValueError:
        pass
    return f"the daemon answered {head.status_code} {head.reason.decode(errors='replace')}"
