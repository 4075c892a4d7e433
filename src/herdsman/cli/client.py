"""The client side of the control API: HTTP/1.1 + JSON over the daemon's Unix socket.

It finds the socket from the config file, turns "nobody listens there" into NoDaemon
and error answers into ApiError carrying the server's sentence. Stdlib only, and none
of the server stack, so `herdsman status` starts fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

CONNECT_TIMEOUT = 5.0
GET_ATTEMPTS = 3  # a GET cut off by a re-exec is asked again
RETRY_PAUSE = 0.05
READ_TIMEOUT = 10.0  # for answers that need no waiting; waiting ones pass None
EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON = 1, 2, 3
_SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path, the trailing NUL included


class ClientError(Exception):
    """A client command cannot go on: one sentence for stderr, and the exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class NoDaemon(ClientError):
    """Nothing listens on the config's socket."""

    def __init__(self, config: Path) -> None:
        super().__init__(
            f"no daemon is running for {config} (start one with 'herdsman up -d')",
            EXIT_NO_DAEMON,
        )
        self.config = config


class ConnectionLost(ClientError):
    """The daemon closed the connection before it answered."""


class ApiError(ClientError):
    """The daemon answered with an error; 400 means the user asked for something invalid."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, EXIT_USAGE if status == 400 else EXIT_FAILED)
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection to a Unix socket, with separate connect and read timeouts."""

    def __init__(self, path: Path, read_timeout: float | None) -> None:
        super().__init__("localhost", timeout=CONNECT_TIMEOUT)
        self._path = str(path)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(self._path)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def peer_pid(self) -> int | None:
        """The pid of the process that listens, as our pid namespace sees it."""
        if self.sock is None:
            return None
        creds = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        pid: int = struct.unpack("3i", creds)[0]
        return pid or None  # 0: the peer is in a pid namespace we cannot see into


def locate(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """The config file to use and its daemon's socket; ClientError (exit 2) when the
    config cannot be found or read."""
    from herdsman.config.errors import ConfigError
    from herdsman.config.paths import find_config_file, socket_path

    environ = os.environ if environ is None else environ
    try:
        config = find_config_file(explicit, Path.cwd(), environ)
        return config, socket_path(config, environ)
    except ConfigError as err:
        raise ClientError(str(err), EXIT_USAGE) from None


def instance_path(pattern: str, action: str) -> str:
    return f"/v1/instances/{quote(pattern, safe='')}/{action}"


class Client:
    """Requests to the daemon serving `config`; each opens its own connection."""

    def __init__(self, config: Path, socket_path: Path) -> None:
        self.config = config
        self.socket_path = socket_path
        # Who answered the last request, for `down` to watch it exit.
        self.peer_pid: int | None = None

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        timeout: float | None = READ_TIMEOUT,
    ) -> Any:
        """The decoded JSON answer; ApiError for a 4xx/5xx answer.

        A GET whose connection is closed before the answer (the daemon was just
        handing over to a new image: one that `reexec` or a self-heal started) is
        asked again; the next connection waits in the backlog for the new image.
        """
        for attempt in range(GET_ATTEMPTS):
            try:
                conn, response = self._send(method, path, body, timeout)
                try:
                    data = self._read(response)
                finally:
                    conn.close()
                return self._decode(data)
            except ConnectionLost:
                if method != "GET" or attempt == GET_ATTEMPTS - 1:
                    raise
                time.sleep(RETRY_PAUSE)
        raise AssertionError("unreachable")  # pragma: no cover

    def stream(self, path: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The objects of a newline-delimited JSON answer, as they arrive. The request is
        sent and answered before this returns; by default reads never time out (a
        followed log may be quiet for hours)."""
        conn, response = self._send("GET", path, None, timeout)
        return self._objects(conn, response)

    def answers(self) -> bool:
        """Whether something accepts connections on the socket."""
        conn = UnixHTTPConnection(self.socket_path, READ_TIMEOUT)
        try:
            self._connect(conn)
        except NoDaemon:
            return False
        finally:
            conn.close()
        return True

    # --- the parts of a request -----------------------------------------------

    def _connect(self, conn: UnixHTTPConnection) -> None:
        where = self.socket_path
        if len(os.fsencode(where)) >= _SUN_PATH_MAX:
            raise ClientError(
                f"the socket path {where} is too long for a Unix socket"
                f" (the limit is {_SUN_PATH_MAX - 1} bytes)",
                EXIT_USAGE,
            )
        try:
            conn.connect()
            self.peer_pid = conn.peer_pid()
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NoDaemon(self.config) from None
        except PermissionError:
            raise ClientError(
                f"permission denied to connect to {where} (the socket belongs to another user?)"
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the daemon at {where} did not accept a connection within {CONNECT_TIMEOUT:g}s"
            ) from None
        except OSError as err:
            raise ClientError(f"cannot connect to {where}: {err.strerror or err}") from None

    def _send(
        self, method: str, path: str, body: object, timeout: float | None
    ) -> tuple[UnixHTTPConnection, http.client.HTTPResponse]:
        conn = UnixHTTPConnection(self.socket_path, timeout)
        try:
            self._connect(conn)
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            try:
                conn.request(method, path, payload, headers)
                response = conn.getresponse()
            except TimeoutError:
                raise ClientError(
                    f"the daemon did not answer {method} {path} within {timeout:g}s"
                ) from None
            except (http.client.HTTPException, ConnectionError) as err:
                raise self._lost(err) from None
            if response.status >= 400:
                raise ApiError(response.status, self._error_sentence(response))
        except BaseException:
            conn.close()
            raise
        return conn, response

    def _objects(
        self, conn: UnixHTTPConnection, response: http.client.HTTPResponse
    ) -> Iterator[dict[str, Any]]:
        try:
            while line := self._readline(response):
                if line.strip():
                    yield self._decode(line)
        finally:
            conn.close()

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except TimeoutError:
            raise ClientError("the daemon stopped sending its answer") from None
        except (http.client.HTTPException, ConnectionError) as err:
            raise self._lost(err) from None

    def _readline(self, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.readline()
        except TimeoutError:
            raise ClientError("the daemon stopped sending its answer") from None
        except (http.client.HTTPException, ConnectionError):
            # The daemon went away mid-stream (it was stopped): the stream just ends.
            return b""

    def _error_sentence(self, response: http.client.HTTPResponse) -> str:
        try:
            data = json.loads(self._read(response))
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                return str(data["error"])
        except (ValueError, ClientError):
            pass
        return f"the daemon answered {response.status} {response.reason}"

    @staticmethod
    def _decode(data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            raise ClientError("the daemon sent an answer that is not JSON") from None

    @staticmethod
    def _lost(err: Exception) -> ClientError:
        name = err.__class__.__name__
        if isinstance(err, ConnectionError | http.client.RemoteDisconnected):
            return ConnectionLost(f"the daemon closed the connection before answering ({name})")
        return ClientError(f"the daemon broke the protocol before answering ({name})")
