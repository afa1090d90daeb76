"""Artifact uploads stream to a staging file: size limit while streaming, and a failed,
oversize or truncated upload leaves no file and no row."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.api import ApiError, Settings
from bridge.api._multipart import MultipartStream, parse_multipart
from bridge.http import BackgroundServer, ServerConfig
from tests.support.mender import admin_token, make_artifact

ARTS = "/api/management/v1/deployments/artifacts"
BOUNDARY = "b0undary"


def form(artifact: bytes, description: bytes = b"desc") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="description"\r\n\r\n'.encode()
        + description
        + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; '
        f'filename="a.mender"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + artifact
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def parse_in_chunks(body: bytes, size: int) -> tuple[dict[str, bytes], bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i : i + size]

    parser = MultipartStream(f"multipart/form-data; boundary={BOUNDARY}", "artifact")
    out = bytearray()

    async def sink(chunk: bytes) -> None:
        out.extend(chunk)

    await parser.parse(chunks(), sink)
    return parser.fields, bytes(out)


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 1 << 20])
def test_stream_parser_agrees_with_in_memory_parser(chunk: int) -> None:
    payload = bytes(range(256)) * 40 + b"\r\n--b0undar" + b"\r\n-"  # near-delimiters inside the data
    body = form(payload)
    fields, data = asyncio.run(parse_in_chunks(body, chunk))
    parts = {p.name: p.data for p in parse_multipart(f"multipart/form-data; boundary={BOUNDARY}", body)}
    assert data == payload == parts["artifact"]
    assert fields == {"description": b"desc"} and parts["description"] == b"desc"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (form(b"x" * 1000)[:-30], "truncated"),
        (b"--other\r\n", "truncated"),
        (form(b"x").replace(b'name="description"', b'name="artifact"', 1), "must come last"),
        (
            form(b"x").replace(b'Content-Disposition: form-data; name="description"', b"X: y"),
            "without a name",
        ),
    ],
)
def test_stream_parser_rejects_bad_bodies(body: bytes, needle: str) -> None:
    with pytest.raises(ApiError) as exc:
        asyncio.run(parse_in_chunks(body, 100))
    assert exc.value.status == 400 and needle in exc.value.message


class RequestsDone:
    """ASGI middleware: an event per finished HTTP request, so tests await instead of sleeping."""

    def __init__(self) -> None:
        self.finished = threading.Semaphore(0)

    def __call__(self, app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            finally:
                if scope["type"] == "http":
                    self.finished.release()

        return wrapped


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[BackgroundServer, RequestsDone, str]]:
    done = RequestsDone()
    config = ServerConfig(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art", port=0,
                          settings=Settings(max_body=256 * 1024))  # fmt: skip
    with BackgroundServer(config, middleware=done) as srv:
        token = admin_token(srv)
        assert done.finished.acquire(timeout=30)  # the login request admin_token made
        yield srv, done, token


def nothing_stored(srv: BackgroundServer, token: str, art_dir: Path) -> None:
    listing = httpx.get(f"{srv.url}{ARTS}", headers={"Authorization": f"Bearer {token}"})
    assert listing.json() == []
    assert not list((art_dir / "objects").glob("*/*"))
    assert not list((art_dir / "tmp").iterdir())


def test_oversize_upload_refused_while_streaming(
    server: tuple[BackgroundServer, RequestsDone, str], tmp_path: Path
) -> None:
    srv, _, token = server
    sent = 0

    def body() -> Iterator[bytes]:  # chunked: the server cannot know the size in advance
        nonlocal sent
        yield form(b"")[: -len(f"\r\n--{BOUNDARY}--\r\n")]
        for _ in range(64):
            sent += 16 * 1024
            yield b"z" * 16 * 1024

    try:
        r = httpx.post(f"{srv.url}{ARTS}", content=body(), timeout=30,
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})  # fmt: skip
        assert r.status_code == 413 and "exceeds" in r.json()["error"]
    except httpx.TransportError:
        pass  # the server may answer and close before the client finished sending
    nothing_stored(srv, token, tmp_path / "art")


def test_truncated_upload_leaves_nothing(
    server: tuple[BackgroundServer, RequestsDone, str], tmp_path: Path
) -> None:
    srv, done, token = server
    art = make_artifact(tmp_path, "streamed")
    body = form(art.read_bytes())
    half = len(body) // 2
    head = (
        f"POST {ARTS} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    staging = tmp_path / "art" / "tmp"
    with socket.create_connection(("127.0.0.1", srv.port)) as sock:
        sock.sendall(head + body[:half])
        # the first half is on disk in a staging file before the upload is complete
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 0 for p in staging.iterdir()):
            assert time.monotonic() < deadline, "upload was not streamed to a staging file"
            time.sleep(0.01)
    assert done.finished.acquire(timeout=30)  # the server finished with the broken request
    nothing_stored(srv, token, tmp_path / "art")
    # and a complete upload of the same artifact still works
    r = httpx.post(f"{srv.url}{ARTS}", content=body, headers={"Authorization": f"Bearer {token}",
                   "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert not list(staging.iterdir())
    assert len(list((tmp_path / "art" / "objects").glob("*/*"))) == 1
