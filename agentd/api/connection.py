"""Closing a client's connection for real.

When an app stops in the middle of a response, uvicorn closes the transport (after logging an
error, with a traceback if the app raised), and closing a transport waits until its buffered
bytes are written: to a client that stopped reading, never. Even aborting the transport only
frees the process's buffer: the kernel still delivers the socket's send buffer (megabytes on
a fast link) before its FIN. agentd serves with a protocol that gives each request an ASGI
extension to reset its connection instead (SO_LINGER 0, then abort: an RST, every buffer
dropped); uvicorn then sees a disconnect, so the response ends without a log line."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

EXTENSION = "agentd.abort"
_LINGER_RESET = struct.pack("ii", 1, 0)  # on, 0 s: close() resets the connection


class AbortableHttpToolsProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        extensions = self.scope.setdefault("extensions", {})  # keep any uvicorn may add
        extensions[EXTENSION] = {"abort": self._reset}

    def _reset(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()


def connection_aborter(scope: dict[str, Any]) -> Callable[[], None] | None:
    """The function that resets this request's connection, if the server offers one."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    return extension["abort"] if extension else None
