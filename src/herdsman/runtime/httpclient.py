"""One HTTP request from the daemon, for http probes and webhooks: h11 on asyncio.

Never blocks the loop, always within a timeout, and every failure is one sentence.
https only when a URL asks for it (see tls.py), and h11 only once a request is
made: a daemon without http probes or webhooks never loads it before its API
server does, after the first spawns (see cli/up.py).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit


class RequestFailed(Exception):
    """No answer: the message says why, in one sentence naming the URL."""


def reason(err: OSError) -> str:
    # asyncio's strerror is "Connect call failed (...)"; the errno's text is the reason.
    return os.strerror(err.errno) if err.errno else str(err)


async def status_of(
    url: str,
    timeout: float,  # noqa: ASYNC109 -- the failure it raises names the time it gave
    *,
    agent: str,
    method: str = "GET",
    json_body: bytes | None = None,
) -> int:
    """The status code of `url`'s answer to one request; RequestFailed otherwise."""
    import h11

    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    ssl_context: Any = None
    if secure:
        from herdsman.runtime.tls import ssl_module

        ssl_context = ssl_module().create_default_context()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ssl_context)
            try:
                status = await _exchange(
                    reader, writer, parts.netloc, target, agent, method, json_body
                )
            finally:
                writer.close()
    except TimeoutError:
        raise RequestFailed(f"no answer from {url} within {timeout:g}s") from None
    except OSError as err:
        raise RequestFailed(f"cannot connect to {url}: {reason(err)}") from None
    except h11.ProtocolError:
        raise RequestFailed(f"{url} did not answer in HTTP") from None
    if status is None:
        raise RequestFailed(f"{url} closed the connection without an answer")
    return status


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    target: str,
    agent: str,
    method: str,
    body: bytes | None,
) -> int | None:
    import h11

    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", host), ("User-Agent", agent), ("Connection", "close")]
    if body is not None:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    data = conn.send(h11.Request(method=method, target=target, headers=headers)) or b""
    if body is not None:
        data += conn.send(h11.Data(data=body)) or b""
    writer.write(data + (conn.send(h11.EndOfMessage()) or b""))
    await writer.drain()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        if isinstance(event, h11.Response):
            return int(event.status_code)
        if isinstance(event, h11.ConnectionClosed):
            return None
