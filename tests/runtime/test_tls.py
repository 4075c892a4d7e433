"""The daemon loads ssl only once an https URL asks for it, and https then works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")

SERVER = """
import http.server, ssl, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

# A fresh interpreter that imports what the daemon does, in the daemon's order.
CLIENT = """
import sys
import herdsman.cli.up
import asyncio
from herdsman.runtime.httpclient import status_of
print("ssl" in sys.modules)
print(asyncio.run(status_of(f"https://127.0.0.1:{sys.argv[1]}/", 10, agent="test")))
print("ssl" in sys.modules)
"""


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command makes the test's certificate")
def test_https_works_though_the_daemon_starts_without_ssl(tmp: Path) -> None:
    assert OPENSSL is not None
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            *(OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(cert), str(key)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().decode().strip()
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, port],
            env={**os.environ, "SSL_CERT_FILE": str(cert)},  # trust the test's certificate
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.stdout.split() == ["False", "200", "True"], client.stderr
    finally:
        server.kill()
        server.wait()
