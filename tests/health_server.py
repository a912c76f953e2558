"""A real HTTP server standing in for the app's /health, answering from a script.

The health tests (test_health.py from the operator's side, test_health_on_node.py
through the program run on the node) need a real socket whose answers they
choose: ``state["answers"]`` lists ``(status code, body)`` in turn, the last
one repeating; ``state["hits"]`` counts the GETs.  A body is JSON-encoded
unless it is bytes.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

OK_BODY = {"status": "ok", "version": "1.0.0", "schema": "current"}


class _ScriptedHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - stdlib hook
        state = self.server.state
        state["hits"] += 1
        answers = state["answers"]
        code, body = answers[min(state["hits"], len(answers)) - 1]
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@contextmanager
def scripted_health_server(first=(200, OK_BODY)) -> Iterator[tuple[dict, str]]:
    """``(state, url)`` of a server on loopback answering ``first`` until told otherwise."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    server.state = {"hits": 0, "answers": [first]}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server.state, f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()
