"""Real HTTP endpoints in the test process, for the server's webhooks to call.

``Receiver`` is an HTTP server (in a thread) that records every request, answering by path:
``/status/<code>...`` answers each ``code`` in turn (``/status/500,429/x`` -> 500, then 429,
then 200), ``/redirect/...`` answers 302, ``/hang/<n>/...`` leaves the first ``n`` requests
unanswered until the client goes away, ``/big/<code>/<MiB>/...`` answers ``code`` with a body
of that size, ``/drip/head/...`` sends its answer a byte a second from the status line on,
``/drip/body/<code>/...`` sends the status and headers at once, then the body a byte a second.
Each request's ``Hook`` records when the client closed the connection on an unfinished answer
(``closed_at``) and the body bytes sent (``sent``). ``Blackhole`` accepts connections and never
answers, like a receiver that hangs."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Hook:
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    body: Any
    at: float  # time.time() of arrival
    closed_at: float | None = None  # the client went away before the answer was complete
    sent: int = 0  # body bytes of the answer written


DRIP_INTERVAL = 1.0  # seconds between the bytes of a dripped answer
_MIB = b"x" * (1 << 20)


class Receiver:
    def __init__(self) -> None:
        self._hooks: dict[str, list[Hook]] = defaultdict(list)
        self._answered: dict[str, int] = defaultdict(int)
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                path = urlsplit(self.path).path
                hook = Hook(self.path, {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw) if raw else None, time.time())  # fmt: skip
                with receiver._cond:
                    receiver._hooks[path].append(hook)
                    n = receiver._answered[path]
                    receiver._answered[path] += 1
                    receiver._cond.notify_all()
                parts = path.split("/")
                try:
                    if parts[1] == "hang" and n < int(parts[2]):
                        return self.hang(hook)
                    if parts[1] == "big":
                        return self.big(hook, int(parts[2]), int(parts[3]))
                    if parts[1] == "drip":
                        return self.drip(hook, parts)
                except OSError:  # the client went away
                    return receiver._closed(hook)
                status = 200
                if path.startswith("/status/"):
                    codes = parts[2].split(",")
                    status = int(codes[n]) if n < len(codes) else 200
                elif path.startswith("/redirect/"):
                    status = 302
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", f"/target{path}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def hang(self, hook: Hook) -> None:
                self.close_connection = True
                self.connection.settimeout(120)  # a test's bound; the client goes first
                while self.connection.recv(1024):
                    pass
                receiver._closed(hook)

            def big(self, hook: Hook, status: int, mib: int) -> None:
                self.close_connection = True
                self.send_response(status)
                self.send_header("Content-Length", str(mib << 20))
                self.end_headers()
                for _ in range(mib):
                    self.wfile.write(_MIB)
                    hook.sent += len(_MIB)

            def drip(self, hook: Hook, parts: list[str]) -> None:
                self.close_connection = True
                body = b"{}" * 500
                if parts[2] == "head":
                    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                else:
                    self.send_response(int(parts[3]))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.flush()
                    head = b""
                for i in range(len(head) + len(body)):
                    # Between two bytes, notice at once a client that closed the connection.
                    readable, _, _ = select.select([self.connection], [], [], DRIP_INTERVAL)
                    if readable and not self.connection.recv(1024):
                        return receiver._closed(hook)
                    if i < len(head):
                        self.connection.sendall(head[i : i + 1])
                    else:
                        self.connection.sendall(body[i - len(head) : i - len(head) + 1])
                        hook.sent += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _closed(self, hook: Hook) -> None:
        with self._cond:
            hook.closed_at = time.time()
            self._cond.notify_all()

    def hooks(self, path: str) -> list[Hook]:
        with self._cond:
            return list(self._hooks[path])

    def wait(self, path: str, count: int = 1, timeout: float = 15) -> list[Hook]:
        """Block until ``path`` got ``count`` requests; the requests so far."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._hooks[path]) >= count, timeout)
            hooks = list(self._hooks[path])
        assert len(hooks) >= count, f"{path}: {len(hooks)} request(s), expected {count}"
        return hooks


class Blackhole:
    """Accepts connections, reads what is sent, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        with self._lock:
            for conn in self.connections:
                conn.close()

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self.connections)

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections.append(conn)
