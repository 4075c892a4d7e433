"""A tiny HTTP API for the demo: answers every GET with a JSON greeting."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"hello": "from api", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        if not self.path.startswith("/health"):  # probes every few seconds: not news
            super().log_message(format, *args)


port = int(os.environ.get("PORT", "8701"))
print(f"api listening on 127.0.0.1:{port}")
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
