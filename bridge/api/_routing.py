"""The routing table: (method, path pattern) -> handler. No transport knowledge here.

The router is also where every adapter's input meets the same limits before a handler runs:
the route's body limit (413), text that no handler can store (400), and large JSON bodies
decoded in a thread. An exception that is not an :class:`ApiError` is a server bug and
renders as 500 (logged with its traceback); bad input must never get that far.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bridge.service import Denied
from bridge.store._tenancy import reset_tenant, set_tenant

from ._json import INLINE_JSON_SIZE, MAX_JSON_SIZE, decode_json
from ._types import ApiError, Request, Response, error_response

__all__ = ["MAX_PATH_LENGTH", "Route", "Router"]

log = logging.getLogger(__name__)
C = TypeVar("C")
Handler = Callable[[C, Request], Awaitable[Response]]
_PARAM = re.compile(r"\{([a-z_]+)\}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_PATH_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Route(Generic[C]):
    method: str
    pattern: str
    handler: Handler[C]
    streaming: bool = False  # the handler reads Request.body_chunks() itself (uploads)
    max_body: int | None = None  # None: the router's body_limit (stream_limit when streaming)

    def compile(self) -> re.Pattern[str]:
        parts = _PARAM.split(self.pattern)
        # split() with one group alternates literal text and parameter names
        regex = "".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts))
        return re.compile(f"^{regex}$")


@dataclass(frozen=True, slots=True)
class _Compiled(Generic[C]):
    method: str
    pattern: str
    regex: re.Pattern[str]
    handler: Handler[C]
    streaming: bool
    limit: int


class Router(Generic[C]):
    """Dispatch a :class:`Request` to the handler whose pattern matches; render ApiError.

    ``body_limit``: the largest body of a non-streaming route (JSON, inventory...);
    ``stream_limit``: of a streaming route (artifact upload), counted by the adapter as it
    streams. A route's own ``max_body`` overrides either.
    """

    def __init__(
        self,
        context: C,
        routes: Sequence[Route[C]],
        *,
        body_limit: int = MAX_JSON_SIZE,
        stream_limit: int = 1 << 30,
    ) -> None:
        self.context = context
        self.body_limit = body_limit
        self.stream_limit = stream_limit
        self._routes = [
            _Compiled(
                r.method,
                r.pattern,
                r.compile(),
                r.handler,
                r.streaming,
                r.max_body if r.max_body is not None else (stream_limit if r.streaming else body_limit),
            )
            for r in routes
        ]
        # called once per handled request: (route pattern or "unmatched", method, status,
        # transport "http" | "mqtt" (a stamped identity), seconds); bridge.observe's metrics
        self.observers: list[Callable[[str, str, int, str, float], None]] = []

    def _match(self, method: str, path: str) -> tuple[_Compiled[C] | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for route in self._routes:
            match = route.regex.match(path)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            return route, match.groupdict(), allowed
        return None, {}, allowed

    def intake(self, method: str, path: str) -> tuple[int, bool]:
        """(body limit, streaming?) of the route ``method path`` goes to, for an adapter to decide
        before it reads a byte of the body (unmatched: the default limit, not streamed)."""
        route, _, _ = self._match(method, path)
        if route is None:
            return self.body_limit, False
        return route.limit, route.streaming

    async def handle(self, request: Request) -> Response:
        if not self.observers:
            return await self._handle(request)
        began = time.perf_counter()
        label = ["unmatched"]
        response = await self._handle(request, label)
        seconds = time.perf_counter() - began
        transport = "http" if request.identity is None else "mqtt"
        for observe in self.observers:
            observe(label[0], request.method, response.status, transport, seconds)
        return response

    async def _handle(self, request: Request, label: list[str] | None = None) -> Response:
        rid = request.request_id or uuid.uuid4().hex
        if not request.request_id:
            request = dataclasses.replace(request, request_id=rid)
        try:
            _check_text(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, rid)
        route, params, allowed = self._match(request.method, request.path)
        if route is None:
            if allowed:
                resp = error_response(405, f"method {request.method} not allowed", rid)
                resp.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
                return resp
            return error_response(404, f"no such resource: {request.path[:200]}", rid)
        if label is not None:
            label[0] = route.pattern
        request = dataclasses.replace(request, path_params=params)
        # no organisation until the handler authenticates the caller (which sets it); cleared
        # after the request, so requests sharing one task (MQTT group commit) never share one
        tenant = set_tenant(None)
        try:
            if not route.streaming:
                request = await _whole_body(request, route.limit)
            response = await route.handler(self.context, request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, rid, exc.headers)
        except Denied as exc:
            return error_response(exc.status, exc.message, rid)
        except Exception:
            log.exception("handler failed: %s %s", request.method, request.path[:200])
            return error_response(500, "internal error", rid)
        finally:
            reset_tenant(tenant)
        response.headers.append(("X-MEN-RequestID", rid))
        return response


async def _whole_body(request: Request, limit: int) -> Request:
    """The body read into ``body`` (at most ``limit`` bytes, else 413) and, when large, decoded
    as JSON in a thread so that no handler parses a big document on the event loop."""
    if request.body_stream is not None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.body_stream:
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"body exceeds {limit} bytes")
            chunks.append(chunk)
        request = dataclasses.replace(request, body=b"".join(chunks), body_stream=None)
    if len(request.body) > limit:
        raise ApiError(413, f"body exceeds {limit} bytes")
    if len(request.body) > INLINE_JSON_SIZE and request.method in _BODY_METHODS:
        decoded = await asyncio.to_thread(_decode, request.body)
        request = dataclasses.replace(request, decoded=decoded)
    return request


def _decode(body: bytes) -> tuple[Any] | ApiError:
    try:
        return (decode_json(body, max_size=len(body)),)
    except ApiError as exc:
        return exc  # raised only if the handler asks for JSON (Request.json())


def _check_text(request: Request) -> None:
    """Path, query and headers: no NUL and no unpaired surrogate (neither can be stored or
    compared by the database), and a bounded path."""
    if len(request.path) > MAX_PATH_LENGTH:
        raise ApiError(414, f"path longer than {MAX_PATH_LENGTH} characters")
    texts: list[Iterable[str]] = [(request.path,), request.headers.values()]
    for name, values in request.query.items():
        texts.append((name, *values))
    for group in texts:
        for text in group:
            if "\x00" in text or (not text.isascii() and not _encodable(text)):
                raise ApiError(400, "NUL or unpaired surrogate in path, query or headers")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
