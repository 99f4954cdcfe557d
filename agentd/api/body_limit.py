"""The request body limit: a body over ``HTTP_MAX_REQUEST_BODY_BYTES`` is refused with 413,
and never more than the limit of it is held in memory.

A pure ASGI middleware (it sees every request): a body announced by ``Content-Length`` is
judged by that header before a byte is read, and then reaches the application untouched (the
HTTP parser delivers exactly that many bytes). A chunked body, whose size is known only once
read, is read and counted here first."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd import serde


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.refusal = serde.dumps({"detail": f"Request body too large (limit: {limit} bytes)"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _framing(scope)
        if chunked:
            await self._counted(scope, receive, send)
        elif length is not None and length > self.limit:
            await self._refuse(send)
        else:  # the parser delivers exactly Content-Length bytes (none without the header)
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a chunked body here, up to the limit, and hand it to the application whole:
        a body over the limit is refused before the application sees a byte of it, and what
        was read is freed at once."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                chunks.clear()
                await self._refuse(send)  # the server discards the rest as it arrives
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        chunks.clear()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # from then on: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        # The connection stays open: the server reads and drops the rest of the body, then the
        # client reads the 413. Closing at once would reset the connection under a client
        # still sending, which may lose the answer.
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.refusal)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": self.refusal})


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The announced body size (``Content-Length``) and whether the body is chunked, in which
    case its size is known only once read."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked
