"""Transport-free request/response objects shared by every adapter (HTTP, MQTT)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import ApiError
from ._json import decode_json

__all__ = ["ApiError", "FileSlice", "Request", "Response", "error_response", "json_response"]


@dataclass(frozen=True, slots=True)
class Request:
    """One API call, as any adapter sees it.

    ``headers`` keys are lower-case. ``identity`` is the authenticated transport identity
    (e.g. the device id an MQTT-SN gateway stamps on a request), ``None`` over plain HTTP.
    ``base_url`` is ``scheme://host[:port]`` as the client reached us (used to build links).
    ``client`` is the peer's network address as the adapter saw it (HTTP: the TCP peer's host),
    ``None`` where there is none (MQTT: ``identity`` names the caller); login throttling keys on it.
    ``body_stream``, when an adapter sets it, yields the body in chunks instead of ``body``
    (HTTP uploads); the router reads it into ``body`` for every route not marked streaming.
    ``decoded`` is the body already run through :func:`decode_json` (the router does that in a
    thread for large bodies): ``(value,)`` or the ApiError it raised; ``json()`` returns/raises it.
    """

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    identity: str | None = None
    # the organisation the transport vouches for (MQTT: the topic's organisation, which the
    # broker ACL ties to the gateway's credentials); None over HTTP. A device token or an auth
    # request naming another organisation is refused (403)
    transport_tenant: str | None = None
    base_url: str = ""
    request_id: str = ""
    path_params: Mapping[str, str] = field(default_factory=dict)
    body_stream: AsyncIterator[bytes] | None = None
    decoded: tuple[Any] | ApiError | None = field(default=None, repr=False, compare=False)
    client: str | None = None

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The body in chunks, whichever way the adapter delivered it."""
        if self.body_stream is None:
            yield self.body
            return
        async for chunk in self.body_stream:
            yield chunk

    def query_one(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        """The body as JSON, through the one decoder (size, depth and content limits -> 4xx)."""
        if isinstance(self.decoded, ApiError):
            raise ApiError(self.decoded.status, self.decoded.message)
        if self.decoded is not None:
            return self.decoded[0]
        return decode_json(self.body)


@dataclass(frozen=True, slots=True)
class FileSlice:
    """A byte range of a stored file, streamed by the adapter instead of held in memory."""

    path: Path
    offset: int
    length: int


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    file: FileSlice | None = None

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def json_response(status: int, obj: object, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, [("Content-Type", "application/json"), *(headers or [])], body)


def error_response(
    status: int, message: str, request_id: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    return json_response(
        status,
        {"error": message, "request_id": request_id},
        [("X-MEN-RequestID", request_id), *(headers or [])],
    )
