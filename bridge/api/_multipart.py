"""multipart/form-data: a splitter for bodies in memory and a streaming parser for uploads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ._types import ApiError

__all__ = ["MultipartStream", "Part", "parse_multipart"]

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    m = _BOUNDARY.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or m is None:
        raise ApiError(400, "expected multipart/form-data with a boundary")
    delimiter = b"--" + m.group(1).encode()
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ApiError(400, "malformed or truncated multipart body")
    parts = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ApiError(400, "malformed multipart part")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise ApiError(400, "multipart part without headers")
        headers, params = _part_headers(head)
        parts.append(Part(params["name"], params.get("filename"), headers.get("content-type"), data))
    return parts


_FIELD_LIMIT = 64 * 1024


class MultipartStream:
    """Incremental multipart/form-data parser over an async byte stream.

    Small fields are kept in memory (at most 64 KiB each); the part named ``file_field`` is
    written chunk by chunk to ``sink`` and must be the last part (Mender's upload rule), so the
    body is never held whole. Truncation anywhere raises ApiError(400).
    """

    def __init__(self, content_type: str, file_field: str) -> None:
        m = _BOUNDARY.search(content_type)
        if not content_type.lower().startswith("multipart/form-data") or m is None:
            raise ApiError(400, "expected multipart/form-data with a boundary")
        self.boundary = b"--" + m.group(1).encode()
        self.file_field = file_field
        self.fields: dict[str, bytes] = {}
        self.file_seen = False

    async def parse(self, chunks: AsyncIterator[bytes], sink: Callable[[bytes], Awaitable[None]]) -> None:
        buf = bytearray()
        stream = chunks.__aiter__()

        async def more() -> None:
            try:
                buf.extend(await stream.__anext__())
            except StopAsyncIteration:
                raise ApiError(400, "malformed or truncated multipart body") from None

        opening = self.boundary + b"\r\n"
        while len(buf) < len(opening):
            await more()
        if not buf.startswith(opening):
            raise ApiError(400, "malformed or truncated multipart body")
        del buf[: len(opening)]
        delimiter = b"\r\n" + self.boundary
        while True:
            while (end := buf.find(b"\r\n\r\n")) < 0:
                if len(buf) > _FIELD_LIMIT:
                    raise ApiError(400, "multipart part headers too long")
                await more()
            name = _part_name(bytes(buf[:end]))
            del buf[: end + 4]
            if self.file_seen:
                raise ApiError(400, f"the {self.file_field!r} part must come last")
            is_file = name == self.file_field
            self.file_seen = self.file_seen or is_file
            data = bytearray()
            while (end := buf.find(delimiter)) < 0:
                # keep a tail that could be the start of the delimiter
                keep = len(delimiter) - 1
                if len(buf) > keep:
                    piece = bytes(buf[: len(buf) - keep])
                    del buf[: len(buf) - keep]
                    if is_file:
                        await sink(piece)
                    else:
                        data.extend(piece)
                        if len(data) > _FIELD_LIMIT:
                            raise ApiError(400, f"multipart field {name!r} is too long")
                await more()
            if is_file:
                await sink(bytes(buf[:end]))
            else:
                data.extend(buf[:end])
                self.fields[name] = bytes(data)
            del buf[: end + len(delimiter)]
            while len(buf) < 2:
                await more()
            if buf.startswith(b"--"):
                return  # closing delimiter; an epilogue, if any, is ignored
            if not buf.startswith(b"\r\n"):
                raise ApiError(400, "malformed multipart delimiter")
            del buf[:2]


def _part_headers(head: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(headers by lower-case name, Content-Disposition parameters) of one part; it must be named."""
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    params = dict(_DISPOSITION.findall(headers.get("content-disposition", "")))
    if "name" not in params:
        raise ApiError(400, "multipart part without a name")
    return headers, params


def _part_name(head: bytes) -> str:
    return _part_headers(head)[1]["name"]
