"""What the client commands cost at start-up, and the few lines of HTTP they speak.

`herdsman status` is mostly interpreter start-up and imports; these tests pin which
heavy modules the client commands never load (each checked in a fresh interpreter
against a fake daemon), and that the client's own HTTP reads every answer framing
the daemon uses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from herdsman.cli.client import ApiError, Client, ClientError, ConnectionLost
from tests.cli.conftest import Project
from tests.cli.fake import FakeDaemon, Reply, Stream, instance, log_line
from tests.cli.fake import status as status_doc

# What each would cost a client command (ms of start-up on these machines), and why
# it is not needed: http.client pulls in email and ssl; `socket` builds enums of every
# constant (the client speaks over `_socket`); the others are the server's.
HEAVY = (
    "http.client",
    "email",
    "ssl",
    "socket",
    "pydantic",
    "asyncio",
    "psutil",
    "textual",
    "yaml",
)


def loaded_by(
    project: Project, *argv: str, modules: tuple[str, ...] = HEAVY
) -> tuple[int, list[str]]:
    """Run `herdsman -c CONFIG ARGV` in a fresh interpreter: its exit code and which
    of `modules` (or their submodules) it had imported by the end."""
    code = (
        "import sys\n"
        "from herdsman.cli.main import main\n"
        f"code = main(['-c', {str(project.config)!r}, *{list(argv)!r}])\n"
        f"heavy = {modules!r}\n"
        "found = sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy)\n"
        "print(code, ' '.join(found), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    last = proc.stderr.splitlines()[-1].split()
    return int(last[0]), last[1:]


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("status", "--json", "web.*"),
        ("logs", "-n", "5"),
        ("start", "web.0"),
        ("stop", "web.0"),
    ],
)
def test_client_commands_load_no_heavy_module(
    project: Project, fake: FakeDaemon, argv: tuple[str, ...]
) -> None:
    web0 = instance("web.0")
    fake.answer("GET", "/v1/status", Reply(200, status_doc(web0)))
    fake.answer("GET", "/v1/logs", Stream([log_line("web.0", "hello")]))
    for action in ("start", "stop"):
        answer = Reply(200, {"instances": [web0], "failed": []})
        fake.answer("POST", f"/v1/instances/web.0/{action}", answer)
    code, heavy = loaded_by(project, *argv)
    assert (code, heavy) == (0, [])
    assert fake.requests, "the command did not talk to the daemon"


def test_status_without_a_daemon_loads_no_heavy_module(project: Project) -> None:
    assert loaded_by(project, "status") == (3, [])


# What `status` (and `logs`, and a `stop` that does not wait) does without, beyond
# HEAVY: each loads `re` or `enum` (`json` compiles regular expressions, pathlib and
# urllib.parse load both, collections is what collections.abc and functools load),
# together half of what `status` cost.
TIME = "2026-12-07T00:00:00.000000Z"
LEAN = (
    "re",
    "enum",
    "json",
    "pathlib",
    "urllib",
    "ipaddress",
    "fnmatch",
    "collections",
    "functools",
)


@pytest.mark.parametrize(
    "argv",
    [
        ("status",),
        ("status", "web.0"),
        ("logs", "-n", "5", "web.0"),
        ("stop", "--no-wait", "web.0"),  # a wait's thread loads `threading`, and collections
    ],
)
def test_client_commands_load_neither_re_nor_enum(
    project: Project, fake: FakeDaemon, argv: tuple[str, ...]
) -> None:
    web0 = instance(
        "web.0", message="listening", command=["sh", "-c", "echo 'hi'"], since=TIME, checks={}
    )
    fake.answer("GET", "/v1/status", Reply(200, status_doc(web0)))
    # `status web.0` shows its last lines.
    fake.answer("GET", "/v1/logs", Stream([log_line("web.0", "hello")]))
    fake.answer("POST", "/v1/instances/web.0/stop", Reply(200, {"instances": [web0], "failed": []}))
    assert loaded_by(project, *argv, modules=LEAN) == (0, [])
    assert fake.requests, "the command did not talk to the daemon"


def test_status_without_a_daemon_loads_neither_re_nor_enum(project: Project) -> None:
    assert loaded_by(project, "status", modules=LEAN) == (3, [])


@pytest.mark.parametrize(
    "argv", [("status",), ("status", "--json", "web.*"), ("start", "web.0"), ("stop", "web.0")]
)
def test_plain_client_commands_load_no_argparse(
    project: Project, fake: FakeDaemon, argv: tuple[str, ...]
) -> None:
    # argparse and the gettext look-ups of the parser it builds: a fifth of `status`.
    web0 = instance("web.0")
    fake.answer("GET", "/v1/status", Reply(200, status_doc(web0)))
    for action in ("start", "stop"):
        fake.answer(
            "POST", f"/v1/instances/web.0/{action}", Reply(200, {"instances": [web0], "failed": []})
        )
    assert loaded_by(project, *argv, modules=("argparse", "gettext")) == (0, [])


# --- the HTTP of the client ------------------------------------------------------


class RawServer:
    """A Unix socket that answers every connection with the same bytes, then closes;
    what each connection sent is kept."""

    def __init__(self, path: Path, answer: bytes) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                self.received.append(data)
                conn.sendall(self.answer)

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def raw(tmp: Path) -> Iterator[tuple[Client, RawServer]]:
    path = tmp / "s.sock"
    server = RawServer(path, b"")
    yield Client(tmp / "herdsman.toml", path), server
    server.close()


def test_content_length_body(raw: tuple[Client, RawServer]) -> None:
    client, server = raw
    body = json.dumps({"a": [1, 2]}).encode()
    server.answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert client.request("GET", "/v1/status") == {"a": [1, 2]}
    head = server.received[0].decode()
    assert head.startswith("GET /v1/status HTTP/1.1\r\n")
    assert "\r\nHost: localhost\r\n" in head
    assert "Authorization" not in head


def test_chunked_stream_split_anywhere(raw: tuple[Client, RawServer]) -> None:
    client, server = raw
    data = b'{"n": 1}\n{"n": 2}\n\n{"n": 3}\n'
    # Chunks that cut lines (and a chunk extension), as a server may send them.
    pieces = [data[:3], data[3:12], data[12:]]
    chunks = b"".join(b"%x;x=y\r\n%s\r\n" % (len(p), p) for p in pieces)
    server.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    assert list(client.stream("/v1/logs")) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_chunked_whole_body(raw: tuple[Client, RawServer]) -> None:
    client, server = raw
    server.answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[1\r\n2\r\n,2\r\n1\r\n]\r\n0\r\n\r\n"
    assert client.request("GET", "/x") == [1, 2]


def test_error_answer_is_its_sentence(raw: tuple[Client, RawServer]) -> None:
    client, server = raw
    body = b'{"error": "no instance or service matches \'x\'"}'
    server.answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with pytest.raises(ApiError) as caught:
        client.request("POST", "/v1/instances/x/start", {"wait": True})
    assert (caught.value.status, caught.value.message) == (
        404,
        "no instance or service matches 'x'",
    )
    head = server.received[0]
    assert b"\r\nContent-Length: 14\r\n" in head
    assert b"Content-Type: application/json" in head


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (b"", ConnectionLost, "the daemon closed the connection before answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", ConnectionLost, "closed"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ClientError, "broke the protocol"),
        (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n", ClientError, "broke the protocol"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", ClientError, "not JSON"),
    ],
)
def test_broken_answers_are_one_sentence(
    raw: tuple[Client, RawServer], answer: bytes, error: type[Exception], message: str
) -> None:
    client, server = raw
    server.answer = answer
    with pytest.raises(error) as caught:
        client.request("POST", "/v1/reload")
    assert message in str(caught.value)
