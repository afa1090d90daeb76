"""A small HTTP endpoint for processes without an HTTP API (the gateway): ``/healthz``,
``/readyz`` and ``/metrics``.

GET/HEAD only, one request per connection, the request head capped at 4 KiB and 5 s; anything
else gets a 4xx and the connection is closed. The server with the HTTP API (uvicorn) serves the
same three paths itself (bridge/http/_app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ._metrics import CONTENT_TYPE, Metrics

__all__ = ["ProbeServer"]

_MAX_HEAD = 4096
_TIMEOUT = 5.0


class ProbeServer:
    """``async with ProbeServer(metrics, ready=lambda: ok, host=..., port=...) as srv: srv.address``"""

    def __init__(
        self,
        metrics: Metrics,
        *,
        ready: Callable[[], bool] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.metrics = metrics
        self.ready = ready or (lambda: True)
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> ProbeServer:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=_MAX_HEAD)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> ProbeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                writer.write(_response(400, b"bad request\n", "text/plain"))
                return
            status, body, ctype, head_only = self._answer(head)
            writer.write(_response(status, b"" if head_only else body, ctype, len(body)))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.drain(), _TIMEOUT)
        finally:
            self._clients.discard(task)
            writer.close()

    def _answer(self, head: bytes) -> tuple[int, bytes, str, bool]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, b"bad request\n", "text/plain", False
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", "text/plain", False
        head_only = method == b"HEAD"
        if target == b"/healthz":
            return 200, b'{"status":"alive"}', "application/json", head_only
        if target == b"/readyz":
            try:
                ok = bool(self.ready())
            except Exception:
                ok = False
            body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
            return (200 if ok else 503), body, "application/json", head_only
        if target == b"/metrics":
            return 200, self.metrics.render(), CONTENT_TYPE, head_only
        return 404, b"not found\n", "text/plain", head_only


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _response(status: int, body: bytes, ctype: str, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
