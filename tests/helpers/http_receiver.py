"""A real HTTP receiver on 127.0.0.1 for notification tests and the notify bench.

Paths choose the behaviour: ``/ok...`` answers 200, ``/fail...`` answers 500, ``/hang...`` holds the request
open (up to ``hang_s`` seconds, or until :meth:`Receiver.release`) before answering. Every request is kept
with its path, content type and decoded body so tests can check what a person would receive.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Received:
    path: str
    content_type: str
    raw: bytes

    @property
    def data(self) -> dict[str, Any]:
        """The body as a dict: JSON for json://, the form fields for form://."""
        if self.content_type.startswith("application/json"):
            return json.loads(self.raw.decode("utf-8"))
        return {k: v[0] for k, v in parse_qs(self.raw.decode("utf-8")).items()}


class Receiver:
    """Serves on a free loopback port in a daemon thread; use as a context manager."""

    def __init__(self, hang_s: float = 30.0) -> None:
        self.hang_s = hang_s
        self.requests: list[Received] = []
        self.hanging = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with outer._lock:
                    outer.requests.append(Received(self.path, self.headers.get("Content-Type") or "", body))
                if self.path.startswith("/hang"):
                    with outer._lock:
                        outer.hanging += 1
                    outer._release.wait(outer.hang_s)
                code = 500 if self.path.startswith("/fail") else 200
                try:
                    self.send_response(code)
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client gave up (its read timeout): expected for /hang

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="test-receiver", daemon=True)

    def url(self, scheme: str, path: str) -> str:
        """An apprise URL for this receiver, e.g. ``url("json", "/ok")``."""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def received(self, prefix: str = "/") -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def wait_for(self, prefix: str, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait (polling) until ``count`` requests under ``prefix`` arrived; returns what arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(prefix)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.received(prefix)

    def release(self) -> None:
        self._release.set()

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
