"""Routing: one parsed HTTP request in, one call on the Controller, one reply out.

No sockets and no HTTP framing here. `Routes.handle` returns a `Reply` (a whole
response) or a `Stream` (a body produced over time); every client mistake becomes
an `HttpError`, so only a fault in the controller can end in a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from herdsman.api import openapi
from herdsman.api.controller import ControlError, Controller
from herdsman.api.openapi import (
    EVENT_STREAM,
    INSTANCE_KEYS,
    JSON,
    MAX_LOG_LINES,
    MAX_SIGNAL,
    MAX_WAIT,
    NDJSON,
    SIGNAL_NAME_PATTERN,
)


@dataclass(slots=True)
class Reply:
    """An HTTP answer: its status, body and headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # Runs once the reply has been flushed to the client (shutdown must answer first).
    after: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class Stream:
    """A 200 whose body is `first`, then `encode(item)` for each item of `source`.

    Whoever sends it must `aclose()` the source when done, so the controller can
    drop its subscription.
    """

    content_type: str
    source: AsyncIterator[Mapping[str, Any]]
    encode: Callable[[Mapping[str, Any]], bytes]
    first: bytes = b""


class HttpError(Exception):
    """A request the API refuses before (or instead of) asking the controller."""

    def __init__(
        self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers

    def reply(self) -> Reply:
        return error_reply(self.status, self.message, self.headers)


def to_json(value: Any) -> bytes:
    # ensure_ascii keeps undecodable output (surrogate escapes) encodable, and keeps
    # each document on one line, which NDJSON and server-sent events rely on.
    return json.dumps(value, separators=(",", ":")).encode()


def json_reply(status: int, value: Any) -> Reply:
    return Reply(status, to_json(value))


def error_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, to_json({"error": message}), headers=headers)


def ndjson_line(value: Mapping[str, Any]) -> bytes:
    return to_json(value) + b"\n"


def sse_event(value: Mapping[str, Any]) -> bytes:
    return b"data: " + to_json(value) + b"\n\n"


def sse_snapshot(status: Mapping[str, Any]) -> bytes:
    """The status document as the stream's first event, named so that a client that
    only listens for changes (a browser's EventSource `onmessage`) passes it by."""
    return b"event: snapshot\n" + sse_event(status)


async def aclose(source: AsyncIterator[Any]) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


Handler = Callable[[list[str], str, bytes], Awaitable[Reply | Stream]]
_VAR = None  # a path segment captured as an argument


class Routes:
    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._openapi: bytes | None = None
        c = controller
        self._table: list[tuple[tuple[str | None, ...], dict[str, Handler]]] = [
            (("v1", "status"), {"GET": self._status}),
            (("v1", "instances"), {"GET": self._instances}),
            (("v1", "instances", _VAR), {"GET": self._instance}),
            (("v1", "instances", _VAR, "start"), {"POST": self._action(c.start)}),
            (("v1", "instances", _VAR, "stop"), {"POST": self._action(c.stop)}),
            (("v1", "instances", _VAR, "restart"), {"POST": self._action(c.restart)}),
            (("v1", "instances", _VAR, "signal"), {"POST": self._signal}),
            (("v1", "logs"), {"GET": self._logs}),
            (("v1", "events"), {"GET": self._events}),
            (("v1", "shutdown"), {"POST": self._shutdown}),
            (("v1", "reload"), {"POST": self._reload}),
            (("v1", "reexec"), {"POST": self._reexec}),
            (("metrics",), {"GET": self._metrics}),
            (("openapi.json",), {"GET": self._openapi_document}),
        ]

    async def handle(self, method: str, target: bytes, body: bytes) -> Reply | Stream:
        segments, query = _split_target(target)
        handler, args = self._match(method, segments)
        try:
            return await handler(args, query, body)
        except ControlError as e:
            status = e.status if 400 <= e.status <= 599 else 500
            return error_reply(status, e.message)

    def _match(self, method: str, segments: list[str]) -> tuple[Handler, list[str]]:
        allowed: set[str] = set()
        for template, methods in self._table:
            if len(template) != len(segments):
                continue
            args = []
            for want, got in zip(template, segments, strict=True):
                if want is _VAR and got:
                    args.append(got)
                elif want != got:
                    break
            else:
                if method in methods:
                    return methods[method], args
                allowed.update(methods)
        if allowed:
            raise HttpError(
                405,
                f"{method} is not allowed here; use {' or '.join(sorted(allowed))}",
                (("Allow", ", ".join(sorted(allowed))),),
            )
        raise HttpError(404, "no such path in the control API (see /openapi.json)")

    async def _status(self, args: list[str], query: str, body: bytes) -> Reply:
        columns = _query(query).get("columns")
        if columns is None:
            return json_reply(200, self._controller.status())
        keys = columns.split(",")
        for key in keys:
            if key not in INSTANCE_KEYS:
                raise HttpError(
                    400,
                    f"parameter 'columns' names {key[:40]!r}, which is not a key of an"
                    f" instance ({', '.join(INSTANCE_KEYS)})",
                )
        return json_reply(200, self._controller.columns(keys))

    async def _instances(self, args: list[str], query: str, body: bytes) -> Reply:
        return json_reply(200, self._controller.instances())

    async def _instance(self, args: list[str], query: str, body: bytes) -> Reply:
        return json_reply(200, self._controller.instance(args[0]))

    def _action(
        self, call: Callable[[str, bool, float | None], Awaitable[Mapping[str, Any]]]
    ) -> Handler:
        async def action(args: list[str], query: str, body: bytes) -> Reply:
            fields = _json_object(body, allowed={"wait", "timeout"}, required=False)
            wait = fields.get("wait", False)
            if not isinstance(wait, bool):
                raise HttpError(400, "field 'wait' must be true or false")
            timeout = fields.get("timeout")
            valid = isinstance(timeout, int | float) and not isinstance(timeout, bool)
            if timeout is not None and not (valid and 0 < timeout <= MAX_WAIT):
                raise HttpError(
                    400, f"field 'timeout' must be a number of seconds from 0 to {MAX_WAIT:g}"
                )
            return json_reply(200, await call(args[0], wait, timeout))

        return action

    async def _signal(self, args: list[str], query: str, body: bytes) -> Reply:
        fields = _json_object(body, allowed={"signal"}, required=True)
        if "signal" not in fields:
            raise HttpError(400, "field 'signal' is required")
        sig = fields["signal"]
        if isinstance(sig, float) and sig.is_integer():  # JSON has no integer type: 15.0 is 15
            sig = int(sig)
        valid_name = isinstance(sig, str) and re.fullmatch(SIGNAL_NAME_PATTERN, sig)
        valid_number = type(sig) is int and 1 <= sig <= MAX_SIGNAL
        if not (valid_name or valid_number):
            raise HttpError(
                400,
                "field 'signal' must be a signal name such as HUP or SIGHUP,"
                f" or a number from 1 to {MAX_SIGNAL}",
            )
        return json_reply(200, self._controller.signal(args[0], sig))

    async def _logs(self, args: list[str], query: str, body: bytes) -> Reply | Stream:
        params = _query(query)
        instance = params.get("instance") or None
        n = _int_param(params, "n", default=100, low=0, high=MAX_LOG_LINES)
        follow = _bool_param(params, "follow")
        if not follow:
            lines = self._controller.logs(instance, n)
            return Reply(200, b"".join(map(ndjson_line, lines)), NDJSON)
        # Subscribe first, then take the backlog, with no await in between: no line
        # can slip between the two (see Controller.follow_logs).
        source = self._controller.follow_logs(instance)
        try:
            backlog = self._controller.logs(instance, n)
        except BaseException:
            await aclose(source)
            raise
        return Stream(NDJSON, source, ndjson_line, b"".join(map(ndjson_line, backlog)))

    async def _events(self, args: list[str], query: str, body: bytes) -> Stream:
        snapshot = _bool_param(_query(query), "snapshot")
        # Subscribe first, then take the snapshot, with no await in between: every
        # change is either in the snapshot or in the stream, never in both.
        source = self._controller.events()
        if not snapshot:
            return Stream(EVENT_STREAM, source, sse_event)
        try:
            first = sse_snapshot(self._controller.status())
        except BaseException:
            await aclose(source)
            raise
        return Stream(EVENT_STREAM, source, sse_event, first)

    async def _shutdown(self, args: list[str], query: str, body: bytes) -> Reply:
        return Reply(202, to_json({"shutting_down": True}), after=self._controller.shutdown)

    async def _reload(self, args: list[str], query: str, body: bytes) -> Reply:
        return json_reply(200, await self._controller.reload())

    async def _reexec(self, args: list[str], query: str, body: bytes) -> Reply:
        answer = await self._controller.reexec()
        return Reply(202, to_json(answer), after=self._controller.begin_reexec)

    async def _metrics(self, args: list[str], query: str, body: bytes) -> Reply:
        data, content_type = self._controller.metrics()
        return Reply(200, data, content_type)

    async def _openapi_document(self, args: list[str], query: str, body: bytes) -> Reply:
        if self._openapi is None:  # serialised on first use: most daemons never serve it
            self._openapi = to_json(openapi.DOCUMENT)
        return Reply(200, self._openapi)


def _split_target(target: bytes) -> tuple[list[str], str]:
    """Path segments, each percent-decoded on its own (so `%2F` stays inside one), and the query."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the request target must be ASCII (percent-encode the rest)") from None
    parts = urlsplit(text)
    if not parts.path.startswith("/"):
        raise HttpError(404, "no such path in the control API (see /openapi.json)")
    try:
        segments = [unquote(s, errors="strict") for s in parts.path[1:].split("/")]
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not valid percent-encoded UTF-8") from None
    return segments, parts.query


def _query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the query string is not valid percent-encoded UTF-8") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise HttpError(400, f"parameter {name!r} is given more than once")
        params[name] = value
    return params


def _int_param(params: dict[str, str], name: str, *, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    # isdigit alone would let "²" through, and int() alone "+5", " 5" and "1_0".
    if text.isascii() and text.isdigit() and len(text) <= len(str(high)):
        value = int(text)
        if low <= value <= high:
            return value
    raise HttpError(400, f"parameter {name!r} must be an integer from {low} to {high}")


def _bool_param(params: dict[str, str], name: str) -> bool:
    text = params.get(name, "false")
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise HttpError(400, f"parameter {name!r} must be true, false, 1 or 0")


def _json_object(body: bytes, *, allowed: set[str], required: bool) -> dict[str, Any]:
    if not body.strip():
        if required:
            raise HttpError(400, "the request body must be a JSON object")
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise HttpError(400, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise HttpError(400, "the request body must be a JSON object")
    for key in value:
        if key not in allowed:
            raise HttpError(400, f"unknown field {key[:40]!r} in the request body")
    return value
