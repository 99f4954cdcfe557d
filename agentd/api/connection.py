"""Closing a client's connection for real.

When an app stops in the middle of a response, uvicorn closes the transport (after logging an
error, with a traceback if the app raised), and closing a transport waits until its buffered
bytes are written: to a client that stopped reading, never. The socket, its buffers and the
response's task then stay until the client goes away. agentd serves with a protocol that gives
each request an ASGI extension to abort its connection instead (a reset, buffers dropped);
uvicorn then sees a disconnect, so the response ends without a log line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

EXTENSION = "agentd.abort"


class AbortableHttpToolsProtocol(HttpToolsProtocol):
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {EXTENSION: {"abort": self.transport.abort}}


def connection_aborter(scope: dict[str, Any]) -> Callable[[], None] | None:
    """The function that aborts this request's connection, if the server offers one."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    return extension["abort"] if extension else None
