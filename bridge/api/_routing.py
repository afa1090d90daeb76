"""The routing table: (method, path pattern) -> handler. No transport knowledge here."""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._types import ApiError, Request, Response, error_response

__all__ = ["Route", "Router"]

log = logging.getLogger(__name__)
C = TypeVar("C")
Handler = Callable[[C, Request], Awaitable[Response]]
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Route(Generic[C]):
    method: str
    pattern: str
    handler: Handler[C]
    streaming: bool = False  # the handler reads Request.body_chunks() itself (uploads)

    def compile(self) -> re.Pattern[str]:
        parts = _PARAM.split(self.pattern)
        # split() with one group alternates literal text and parameter names
        regex = "".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts))
        return re.compile(f"^{regex}$")


class Router(Generic[C]):
    """Dispatch a :class:`Request` to the handler whose pattern matches; render ApiError."""

    def __init__(self, context: C, routes: Sequence[Route[C]]) -> None:
        self.context = context
        self._routes = [(r.method, r.compile(), r.handler, r.streaming) for r in routes]

    async def handle(self, request: Request) -> Response:
        rid = request.request_id or uuid.uuid4().hex
        if not request.request_id:
            request = dataclasses.replace(request, request_id=rid)
        allowed: list[str] = []
        for method, regex, handler, streaming in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            request = dataclasses.replace(request, path_params=match.groupdict())
            try:
                if request.body_stream is not None and not streaming:
                    body = b"".join([chunk async for chunk in request.body_stream])
                    request = dataclasses.replace(request, body=body, body_stream=None)
                response = await handler(self.context, request)
            except ApiError as exc:
                return error_response(exc.status, exc.message, rid, exc.headers)
            except Exception:
                log.exception("handler failed: %s %s", request.method, request.path)
                return error_response(500, "internal error", rid)
            response.headers.append(("X-MEN-RequestID", rid))
            return response
        if allowed:
            resp = error_response(405, f"method {request.method} not allowed", rid)
            resp.headers.append(("Allow", ", ".join(sorted(set(allowed)))))
            return resp
        return error_response(404, f"no such resource: {request.path}", rid)
