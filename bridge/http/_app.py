"""ASGI adapter: HTTP request -> api.Request -> routing table -> HTTP response.

Request bodies arrive through ASGI whatever their framing, so mender-client's chunked bodies
(``Transfer-Encoding: chunked``, no Content-Length) need nothing special here; uvicorn
de-chunks them. The API is served at the root path, as mender-client's local proxy requires.

Body limits are the route's (``Router.intake``), decided before a byte is read: a
Content-Length over the limit is answered 413 at once; a body without one is counted as it
arrives and cut off at the limit (413). The artifact upload is streamed to the handler (and
on to staging on disk), every other body is read whole, at most its (small) limit.

Probes, answered before the routing table (no auth, no body): ``GET /healthz`` is 200 while the
process serves HTTP at all (also while starting); ``GET /readyz`` is 200 once the store answers a
query, 503 before startup finished or when the store is unreachable. ``GET /metrics`` is the
process's Prometheus metrics (bridge/observe) when the app was given ``metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from bridge.api import (
    ApiError,
    Request,
    Response,
    Router,
    error_response,
    is_websocket_route,
    serve_websocket,
)

__all__ = ["ASGIApp", "HttpAdapter"]

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# headers a handler may look at; everything else stays in the adapter
_KEPT = frozenset(
    {"authorization", "content-type", "x-men-signature", "range", "host", "content-length"}
    | {"cookie", "x-csrf-token", "origin"}  # the admin UI's session cookie, CSRF token, origin check
)
_LENGTH = re.compile(r"[0-9]{1,19}")
_CHUNK = 64 * 1024
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class _BodyTooLarge(Exception):
    pass


class HttpAdapter:
    """An ASGI application around a :class:`Router`.

    ``startup`` / ``shutdown`` run in uvicorn's event loop (lifespan), which is where the
    store's async engine must live; ``startup`` returns the router.
    """

    def __init__(
        self,
        startup: Callable[[], Awaitable[Router[Any]]],
        shutdown: Callable[[], Awaitable[None]] | None = None,
        *,
        max_body: int = 1 << 30,
        ready: Callable[[], Awaitable[bool]] | None = None,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
    ) -> None:
        self._startup = startup
        self._metrics = metrics
        self._shutdown = shutdown
        self._ready = ready
        self.max_body = max_body
        self.router: Router[Any] | None = None
        # the admin UI's router (bridge/ui), for paths under /ui/; set by startup when served
        self.ui: Router[Any] | None = None
        self.state: dict[str, Any] = {}  # whatever startup wants to keep (store, loop)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.router = await self._startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._shutdown is not None:
                    await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _probe(self, path: str) -> Response:
        if path == "/metrics":
            if self._metrics is None:
                return error_response(404, "no metrics in this process", uuid.uuid4().hex)
            body, ctype = self._metrics()
            return Response(200, [("Content-Type", ctype)], body)
        if path == "/healthz":
            return Response(200, [("Content-Type", "application/json")], b'{"status":"alive"}')
        ok = self.router is not None
        if ok and self._ready is not None:
            try:
                ok = await asyncio.wait_for(self._ready(), timeout=5)
            except Exception:  # any failure of the probe means "not ready", never a 5xx trace
                ok = False
        body = b'{"status":"ready"}' if ok else b'{"status":"not ready"}'
        return Response(200 if ok else 503, [("Content-Type", "application/json")], body)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = uuid.uuid4().hex
        if scope["path"] in _PROBES and scope["method"] in ("GET", "HEAD"):
            await _send(send, await self._probe(scope["path"]), head=scope["method"] == "HEAD")
            return
        if self.router is None:
            await _send(send, error_response(503, "server is starting", rid))
            return
        router = self.router
        if self.ui is not None and (scope["path"] == "/ui" or scope["path"].startswith("/ui/")):
            if scope["path"] == "/ui":
                await _send(send, Response(308, [("Location", "/ui/")]))
                return
            router = self.ui
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in _KEPT:
                headers[name] = raw_value.decode("latin-1")
        body = b""
        body_stream: AsyncIterator[bytes] | None = None
        limit, streaming = router.intake(scope["method"], scope["path"])
        limit = min(limit, self.max_body)
        declared = headers.pop("content-length", None)
        if declared is not None:
            if _LENGTH.fullmatch(declared.strip()) is None:
                await _send(send, error_response(400, "malformed Content-Length", rid))
                return
            if int(declared) > limit:
                # refused before reading: the body is never buffered
                await _send(send, error_response(413, f"body exceeds {limit} bytes", rid))
                return
        if streaming:
            # uploads are streamed to the handler (and on to disk), never held whole
            body_stream = self._stream_body(receive, limit)
        else:
            try:
                body = await self._read_body(receive, limit)
            except _BodyTooLarge:
                await _send(send, error_response(413, f"body exceeds {limit} bytes", rid))
                return
        host = headers.get("host") or _server_host(scope)
        request = Request(
            method=scope["method"],
            path=scope["path"],
            query=parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True),
            headers=headers,
            body=body,
            base_url=f"{scope.get('scheme', 'http')}://{host}",
            request_id=rid,
            body_stream=body_stream,
            client=_client_host(scope),
        )
        response = await router.handle(request)
        await _send(send, response, head=scope["method"] == "HEAD")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """deviceconnect (remote access): refusals are HTTP error responses before the handshake
        (ASGI's websocket.http.response), everything after it binary messages."""
        rid = uuid.uuid4().hex
        if (await receive())["type"] != "websocket.connect":
            return
        if self.router is None or not is_websocket_route(scope["path"]):
            starting = self.router is None
            status, message = (503, "server is starting") if starting else (404, "no such websocket route")
            await _refuse(send, scope, error_response(status, message, rid))
            return
        headers = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name in _KEPT:
                headers[name] = raw_value.decode("latin-1")
        host = headers.get("host") or _server_host(scope)
        request = Request(
            method="GET",
            path=scope["path"],
            query=parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True),
            headers=headers,
            base_url=f"{scope.get('scheme', 'ws')}://{host}",
            request_id=rid,
            client=_client_host(scope),
        )
        peer = _WebSocketPeer(send)

        async def accept() -> None:
            await send({"type": "websocket.accept"})
            peer.accepted = True

        async def messages() -> AsyncIterator[bytes]:
            while not peer.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    peer.closed = True
                    return
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode()
                yield data

        try:
            await serve_websocket(self.router.context, request, accept, messages(), peer)
        except ApiError as exc:
            if not peer.accepted:
                await _refuse(send, scope, error_response(exc.status, exc.message, rid, exc.headers))
                return
            await peer.close(1008, exc.message[:120])
        except Exception:
            log.exception("websocket %s failed", scope["path"][:200])
            if not peer.accepted:
                await _refuse(send, scope, error_response(500, "internal error", rid))
            else:
                await peer.close(1011, "internal error")
        finally:
            await peer.close(1000, "")

    async def _stream_body(self, receive: Receive, limit: int) -> AsyncIterator[bytes]:
        """The request body chunk by chunk; the size limit is enforced as it arrives."""
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "client went away before the body was complete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body exceeds {limit} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def _read_body(self, receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class _WebSocketPeer:
    """The ASGI websocket as a deviceconnect peer (bridge.api._remote_hub.Peer)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.accepted = False
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("websocket closed")
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int, reason: str) -> None:
        if self.closed or not self.accepted:
            return
        self.closed = True
        with contextlib.suppress(Exception):  # already gone: nothing to tell
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


async def _refuse(send: Send, scope: Scope, response: Response) -> None:
    """An HTTP response instead of the websocket handshake (or a bare close without the extension)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "websocket.http.response.start", "status": response.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": response.body})


def _client_host(scope: Scope) -> str | None:
    """The TCP peer's address (uvicorn: ``scope["client"] = (host, port)``), without the port."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _server_host(scope: Scope) -> str:
    server = scope.get("server")
    if not server:
        return "localhost"
    host, port = server
    return f"{host}:{port}"


async def _send(send: Send, response: Response, *, head: bool = False) -> None:
    length = response.file.length if response.file is not None else len(response.body)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if head:
        await send({"type": "http.response.body", "body": b""})
        return
    if response.file is None:
        await send({"type": "http.response.body", "body": response.body})
        return
    remaining = response.file.length
    with response.file.path.open("rb") as fh:
        fh.seek(response.file.offset)
        while remaining > 0:
            chunk = await asyncio.to_thread(fh.read, min(_CHUNK, remaining))
            if not chunk:
                break  # the file shrank under us; the client sees a short body
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
    if remaining > 0:
        await send({"type": "http.response.body", "body": b""})
