"""The control API's listening sockets, bound without the HTTP stack.

`bind` listens on the daemon's Unix socket (its mode and group set before anyone
can connect; a dead daemon's socket file replaced, a live one's refused) and on
the TCP port when one is configured. `up` binds them before its first spawn, so
a socket it cannot have stops it before any service starts, and loads the server
that answers on them (server.py: h11, the routes, the OpenAPI bounds) once the
first wave is on its way: clients that connect meanwhile wait in the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import stat
from pathlib import Path

BACKLOG = 128
STALE_PROBE_TIMEOUT = 1.0


class ListenError(Exception):
    """The server cannot listen; the message is one sentence naming the socket and why."""


async def bind(
    unix_path: Path,
    *,
    socket_mode: int = 0o600,
    socket_group: str | None = None,
    tcp: tuple[str, int] | None = None,
) -> list[int]:
    """Listen on the Unix socket, and on TCP when `tcp` is set: the listening
    sockets' fds, Unix first, as a previous image hands them over. Raises
    ListenError (and leaves nothing bound)."""
    unix, bound = await _bind_unix(unix_path, socket_mode, socket_group)
    try:
        others = [] if tcp is None else await _bind_tcp(*tcp)
    except BaseException:
        unix.close()
        unlink_socket(unix_path, bound)
        raise
    return [sock.detach() for sock in (unix, *others)]


def socket_id(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the socket file at `path`: which file a server bound."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def unlink_socket(path: Path, bound: tuple[int, int] | None) -> None:
    """Remove the socket file, unless it is no longer the one bound (`bound`)."""
    if bound is None:
        return
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == bound:
            os.unlink(path)


async def _bind_unix(
    path: Path, mode: int, group: str | None
) -> tuple[socket.socket, tuple[int, int]]:
    await _remove_stale_socket(path)
    gid = _group_id(path, group)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = None
    try:
        # Bound owner-only under a umask, so there is no moment where the file
        # is more open than configured; the group and mode are applied before
        # listen(), i.e. before anyone can connect.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        found = os.stat(path)
        bound = (found.st_dev, found.st_ino)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        unlink_socket(path, bound)
        raise ListenError(f"cannot listen on {path}: {e.strerror or e}") from e
    return sock, bound


async def _bind_tcp(host: str, port: int) -> list[socket.socket]:
    """Listen on every address `host` names (as asyncio.start_server would:
    `localhost` is 127.0.0.1 and ::1)."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        addresses = list(dict.fromkeys((family, address[:2]) for family, *_, address in found))
        socks: list[socket.socket] = []
        try:
            for family, address in addresses:
                socks.append(socket.create_server(address, family=family, backlog=BACKLOG))
        except OSError:
            for sock in socks:
                sock.close()
            raise
    except OSError as e:
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    return socks


async def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file left by a dead daemon; refuse one that still answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:  # e.g. a file where a directory of the path should be
        raise ListenError(f"cannot listen on {path}: {e.strerror or e}") from e
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot listen on {path}: it exists and is not a socket")
    try:
        async with asyncio.timeout(STALE_PROBE_TIMEOUT):
            _, writer = await asyncio.open_unix_connection(str(path))
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except FileNotFoundError:
        return
    except TimeoutError:  # a full accept backlog: someone is listening
        pass
    except OSError as e:
        raise ListenError(f"cannot tell whether {path} is in use: {e.strerror or e}") from e
    else:
        writer.close()
    raise ListenError(f"cannot listen on {path}: another process is serving it")


def _group_id(path: Path, group: str | None) -> int | None:
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenError(
            f"cannot listen on {path}: socket_group {group!r} does not exist"
        ) from None
