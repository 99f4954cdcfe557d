"""A minimal HTTP/1.1 client for bursts of concurrent requests.

httpx's connection pool becomes the bottleneck with ~100 requests in flight (here: 100
concurrent ``GET /ok`` took 0.5-3.4 s through httpx, 0.06 s through plain asyncio streams), so
burst phases would measure the client rather than the server. One connection per request
(``Connection: close``), JSON bodies, Content-Length or chunked responses."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class LeanResponse:
    def __init__(self, status: int, body: bytes):
        self.status_code = status
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class LeanClient:
    def __init__(self, host: str, port: int, timeout: float = 60.0):
        self.host, self.port, self.timeout = host, port, timeout

    async def post(self, path: str, json: Any) -> LeanResponse:  # named as httpx names it
        return await self.request("POST", path, _dumps(json))

    async def get(self, path: str) -> LeanResponse:
        return await self.request("GET", path, None)

    async def request(self, method: str, path: str, body: bytes | None) -> LeanResponse:
        return await asyncio.wait_for(self._request(method, path, body), self.timeout)

    async def _request(self, method: str, path: str, body: bytes | None) -> LeanResponse:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"\r\n" + (body or b""))
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header_blob, _, payload = raw.partition(b"\r\n\r\n")
        lines = header_blob.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.decode("latin-1").partition(":") for line in lines[1:])
        }
        if headers.get("transfer-encoding") == "chunked":
            payload = _dechunk(payload)
        return LeanResponse(status, payload)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
