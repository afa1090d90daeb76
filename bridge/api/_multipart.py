"""A small multipart/form-data splitter for bodies already in memory."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._types import ApiError

__all__ = ["Part", "parse_multipart"]

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
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        params = dict(_DISPOSITION.findall(headers.get("content-disposition", "")))
        if "name" not in params:
            raise ApiError(400, "multipart part without a name")
        parts.append(Part(params["name"], params.get("filename"), headers.get("content-type"), data))
    return parts
