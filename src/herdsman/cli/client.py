"""The client side of the control API: HTTP/1.1 + JSON over the daemon's Unix socket,
or over its TCP listener (`--url http://HOST:PORT`, with the bearer token of
`--token-file`).

It finds the socket from the config file, turns "nobody listens there" into NoDaemon
and error answers into ApiError carrying the server's sentence. The HTTP is a few
lines of its own rather than `http.client`, which loads `email` and `ssl` (half of
the whole command's start-up): the daemon is the only server it talks to, and its
answers are either a body with Content-Length or a chunked stream. Nothing of the
server stack is imported, so `herdsman status` starts fast. Over the Unix socket it
uses `_socket`, the C module under `socket`: importing `socket` builds enums of every
constant the platform has, a tenth of what `status` costs (TCP loads it). For the
same reason JSON goes through cli/cjson.py and a path's quoting is done here:
`json`, `pathlib` and `urllib.parse` load `re` and `enum`.
"""

from __future__ import annotations

import _socket
import io
import os
import sys
import time

from herdsman.cli import cjson

# typing costs ~3 ms of a client command's start-up; mypy reads TYPE_CHECKING by name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Any

CONNECT_TIMEOUT = 5.0
GET_ATTEMPTS = 3  # a GET cut off by a re-exec is asked again
RETRY_PAUSE = 0.05
READ_TIMEOUT = 10.0  # for answers that need no waiting; waiting ones pass None
EXIT_FAILED, EXIT_USAGE, EXIT_NO_DAEMON = 1, 2, 3
MAX_HEAD_LINE = 65536  # a status or header line longer than this is not our daemon
_SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path, the trailing NUL included
# What urllib.parse.quote never escapes (RFC 3986's unreserved characters).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class ClientError(Exception):
    """A client command cannot go on: one sentence for stderr, and the exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class NoDaemon(ClientError):
    """Nothing listens on the config's socket (or at --url)."""

    def __init__(self, config: str | os.PathLike[str] | None, url: str | None = None) -> None:
        if url is not None:
            message = f"no daemon answers at {url}"
        else:
            message = f"no daemon is running for {config} (start one with 'herdsman up -d')"
        super().__init__(message, EXIT_NO_DAEMON)
        self.config = config


class ConnectionLost(ClientError):
    """The daemon closed the connection before it answered."""


class ApiError(ClientError):
    """The daemon answered with an error; 400 means the user asked for something invalid,
    401 that the token is missing or wrong: both exit 2."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, EXIT_USAGE if status in (400, 401) else EXIT_FAILED)
        self.status = status


class _Broken(Exception):
    """The answer is not HTTP as the daemon speaks it; the text says how."""


class _SocketReader(io.RawIOBase):
    """A socket as a raw stream to buffer, what `socket.makefile("rb")` makes."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._sock.recv_into(buffer)


class Response:
    """An HTTP/1.1 answer read from a socket: status, headers, then the body, whole
    (`read`) or line by line as it arrives (`readline`)."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._file = io.BufferedReader(_SocketReader(sock))
        status_line = self._file.readline(MAX_HEAD_LINE)
        if not status_line:
            raise ConnectionResetError("closed before the status line")
        version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, self.reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _Broken(f"bad status line {status_line[:40]!r}")
        self.status = int(code)
        self.headers: dict[str, str] = {}
        while (line := self._file.readline(MAX_HEAD_LINE)) not in (b"\r\n", b"\n"):
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise _Broken("a header line without a colon" if line else "no end of headers")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        length = self.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise _Broken(f"Content-Length {length[:20]!r}")
        self._left = None if length is None else int(length)  # body bytes not yet read
        self._held = b""  # chunked: data read past the last line handed out

    def read(self) -> bytes:
        """The whole body."""
        if self._chunked:
            parts = [self._held]
            while chunk := self._chunk():
                parts.append(chunk)
            self._held = b""
            return b"".join(parts)
        data = self._file.read(self._left)  # None: up to the end of the connection
        if self._left is not None and len(data) < self._left:
            raise ConnectionResetError("closed in the middle of the answer")
        self._left = 0
        return data

    def readline(self) -> bytes:
        """The body's next line with its newline; b"" at its end."""
        if not self._chunked:
            if self._left == 0:
                return b""
            line = self._file.readline(-1 if self._left is None else self._left)
            if self._left is not None:
                self._left -= len(line)
            return line
        while (end := self._held.find(b"\n")) < 0:
            chunk = self._chunk()
            if not chunk:
                line, self._held = self._held, b""
                return line
            self._held += chunk
        line, self._held = self._held[: end + 1], self._held[end + 1 :]
        return line

    def _chunk(self) -> bytes:
        """The next chunk's data; b"" after the last (and its trailers)."""
        size_line = self._file.readline(MAX_HEAD_LINE)
        if not size_line:
            raise ConnectionResetError("closed in the middle of the answer")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise _Broken(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            while self._file.readline(MAX_HEAD_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers, which the daemon does not send
            self._chunked, self._left = False, 0
            return b""
        data = self._file.read(size)
        if len(data) < size or self._file.readline(MAX_HEAD_LINE) not in (b"\r\n", b"\n"):
            raise ConnectionResetError("closed in the middle of the answer")
        return data

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def parse_url(url: str) -> tuple[str, int]:
    """`http://HOST:PORT` (the daemon's `settings.tcp`) as (host, port); ClientError
    (exit 2) for anything else."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise ClientError(f"--url {url}: {err}", EXIT_USAGE) from None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ClientError(f"--url {url}: expected http://HOST:PORT", EXIT_USAGE)
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ClientError(f"--url {url}: expected http://HOST:PORT, with nothing after it", 2)
    return parts.hostname, port


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace stripped, as the daemon reads
    its token_file); ClientError (exit 2) when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ClientError(f"--token-file {path}: cannot read it: {why}", EXIT_USAGE) from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ClientError(f"--token-file {path}: no token in it (one line of text)", EXIT_USAGE)
    return token


def locate(explicit: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The config file to use and its daemon's socket; ClientError (exit 2) when the
    config cannot be found or read."""
    from herdsman.config.errors import ConfigError
    from herdsman.config.paths import find_config_file, socket_path

    environ = os.environ if environ is None else environ
    try:
        config = find_config_file(explicit, os.getcwd(), environ)
        return config, socket_path(config, environ)
    except ConfigError as err:
        raise ClientError(str(err), EXIT_USAGE) from None


def connect(config: str | None, url: str | None, token_file: str | None) -> Client:
    """The client the global options ask for: the daemon of the config (`-c`), or the
    TCP listener at `url`; the token from `token_file` goes with every request. With
    a URL no config is read: the daemon may be on another machine."""
    token = read_token(token_file) if token_file is not None else None
    if url is not None:
        return Client(None, None, url=url, token=token, token_file=token_file)
    return Client(*locate(config), token=token, token_file=token_file)


def instance_path(pattern: str, action: str) -> str:
    return f"/v1/instances/{quote(pattern)}/{action}"


def quote(text: str, *, plus: bool = False) -> str:
    """`text` percent-encoded for a URL's path or query, as urllib.parse's
    quote(text, safe="") writes it (quote_plus(text, safe="") with `plus`)."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else "+" if plus and byte == 0x20 else f"%{byte:02X}"
        for byte in text.encode()
    )


class Client:
    """Requests to the daemon serving `config` (over its socket), or to the daemon at
    `url` (over TCP, then `config` is None); each request opens its own connection."""

    def __init__(
        self,
        config: str | os.PathLike[str] | None,
        socket_path: str | os.PathLike[str] | None,
        *,
        url: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
    ) -> None:
        self.config = None if config is None else os.fspath(config)
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        self.url = url
        self._tcp = parse_url(url) if url is not None else None
        self._token = token
        self._token_file = token_file
        # Who answered the last request over the socket, for `down` to watch it exit.
        self.peer_pid: int | None = None

    @property
    def where(self) -> str:
        return self.url if self.url is not None else str(self.socket_path)

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
                response = self._send(method, path, body, timeout)
                try:
                    data = self._read(response)
                finally:
                    response.close()
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
        return self._objects(self._send("GET", path, None, timeout))

    def answers(self) -> bool:
        """Whether something accepts connections at the daemon's address."""
        try:
            self._connect(READ_TIMEOUT).close()
        except NoDaemon:
            return False
        return True

    # --- the parts of a request -----------------------------------------------

    def _connect(self, timeout: float | None) -> _socket.socket:
        where = self.where
        try:
            if self._tcp is not None:
                import socket

                sock: _socket.socket = socket.create_connection(self._tcp, CONNECT_TIMEOUT)
            else:
                sock = self._connect_unix()
            sock.settimeout(timeout)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NoDaemon(self.config, self.url) from None
        except PermissionError:
            raise ClientError(
                f"permission denied to connect to {where} (the socket belongs to another user?)"
            ) from None
        except TimeoutError:
            raise ClientError(
                f"the daemon at {where} did not accept a connection within {CONNECT_TIMEOUT:g}s"
            ) from None
        except _socket.gaierror as err:
            raise ClientError(f"cannot find the host of {where}: {err.strerror}") from None
        except OSError as err:
            raise ClientError(f"cannot connect to {where}: {err.strerror or err}") from None
        return sock

    def _connect_unix(self) -> _socket.socket:
        path = os.fsencode(str(self.socket_path))
        if len(path) >= _SUN_PATH_MAX:
            raise ClientError(
                f"the socket path {self.socket_path} is too long for a Unix socket"
                f" (the limit is {_SUN_PATH_MAX - 1} bytes)",
                EXIT_USAGE,
            )
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
            # The pid of the process that listens, as our pid namespace sees it (0: one
            # we cannot see into): a ucred is three ints, the pid first.
            creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        except BaseException:
            sock.close()
            raise
        self.peer_pid = int.from_bytes(creds[:4], sys.byteorder, signed=True) or None
        return sock

    def _send(self, method: str, path: str, body: object, timeout: float | None) -> Response:
        sock = self._connect(timeout)
        try:
            host = f"{self._tcp[0]}:{self._tcp[1]}" if self._tcp is not None else "localhost"
            head = [
                f"{method} {path} HTTP/1.1",
                f"Host: {host}",
                "Accept: application/json",
                "Connection: close",
            ]
            if self._token is not None:
                head.append(f"Authorization: Bearer {self._token}")
            payload = b""
            if body is not None:
                payload = cjson.dumps(body).encode()
                head.append("Content-Type: application/json")
            if body is not None or method != "GET":
                head.append(f"Content-Length: {len(payload)}")
            try:
                sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
                response = Response(sock)
            except TimeoutError:
                raise ClientError(
                    f"the daemon did not answer {method} {path} within {timeout:g}s"
                ) from None
            except (_Broken, ConnectionError) as err:
                raise self._lost(err) from None
            if response.status >= 400:
                raise ApiError(response.status, self._error_sentence(response))
        except BaseException:
            sock.close()
            raise
        return response

    def _objects(self, response: Response) -> Iterator[dict[str, Any]]:
        try:
            while line := self._readline(response):
                if line.strip():
                    yield self._decode(line)
        finally:
            response.close()

    def _read(self, response: Response) -> bytes:
        try:
            return response.read()
        except TimeoutError:
            raise ClientError("the daemon stopped sending its answer") from None
        except (_Broken, ConnectionError) as err:
            raise self._lost(err) from None

    def _readline(self, response: Response) -> bytes:
        try:
            return response.readline()
        except TimeoutError:
            raise ClientError("the daemon stopped sending its answer") from None
        except (_Broken, ConnectionError):
            # The daemon went away mid-stream (it was stopped): the stream just ends.
            return b""

    def _error_sentence(self, response: Response) -> str:
        if response.status == 401:
            if self._token is None:
                return f"the daemon at {self.where} wants its API token: give it with --token-file"
            return f"the daemon at {self.where} refused the token in {self._token_file}"
        try:
            data = cjson.loads(self._read(response))
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                return str(data["error"])
        except (ValueError, ClientError):
            pass
        return f"the daemon answered {response.status} {response.reason}"

    @staticmethod
    def _decode(data: bytes) -> Any:
        try:
            return cjson.loads(data)
        except ValueError:
            raise ClientError("the daemon sent an answer that is not JSON") from None

    @staticmethod
    def _lost(err: Exception) -> ClientError:
        if isinstance(err, ConnectionError):
            return ConnectionLost("the daemon closed the connection before answering")
        return ClientError(f"the daemon broke the protocol before answering ({err})")
