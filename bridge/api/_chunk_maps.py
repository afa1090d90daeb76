"""Server side of group streaming: a signed chunk map per (artifact, chunk size).

The map (format in wire/SPEC.md §2) is signed with the server's Ed25519 *deployment
key*, created once and kept in the ``settings`` table (``chunk_map_key``, hex seed). Each newly
signed map takes the next value of a monotonic counter (``chunk_map_seq``), so a map signed later
always carries a higher sequence number: nodes refuse any map not above what they run (SUIT
anti-rollback; re-deploying an old artifact simply gets a new, higher-numbered map). Maps are
cached (``cmap:<artifact id>:<chunk size>``), so every root and every node asking for the same
artifact and chunk size gets the very same bytes — and therefore the same stream id, which is
what lets a new root resume another root's stream.

Endpoint (device token; a meshota extension, not a Mender path):
``GET /api/meshota/v1/devices/chunk_maps/{artifact_id}?chunk_size=N``
→ 200 ``application/vnd.meshota-chunk-map`` (the full form: head + leaves); with a
``Range: bytes=A-B`` header → 206 and ``Content-Range`` like an artifact download (the MQTT
adapter clamps it to its block size, so a map larger than a datagram is fetched block-wise).
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.exc import IntegrityError

from bridge.api._auth import require_device
from bridge.api._context import ApiContext
from bridge.api._paging import query_int
from bridge.api._ranges import RangeError, byte_span, refused
from bridge.api._types import ApiError, Request, Response
from bridge.store import tables as t
from wire.chunk_map import MAX_CHUNK, MIN_CHUNK, ChunkMapError, build_chunk_map, check_shape

__all__ = [
    "CHUNK_MAP_PATH",
    "deployment_key",
    "deployment_public_key_pem",
    "get_chunk_map",
    "signed_chunk_map",
]

CHUNK_MAP_PATH = "/api/meshota/v1/devices/chunk_maps/{id}"
_KEY = "chunk_map_key"
_SEQ = "chunk_map_seq"


class _Raced(Exception):
    """Another request numbered a map first."""


async def deployment_key(ctx: ApiContext) -> ed25519.Ed25519PrivateKey:
    """The server's chunk-map signing key, created on first use."""
    for _ in range(2):
        try:
            async with ctx.store.transaction() as conn:
                row = (
                    await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == _KEY))
                ).first()
                if row is not None:
                    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(row[0]))
                key = ed25519.Ed25519PrivateKey.generate()
                seed = key.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                )
                await conn.execute(sa.insert(t.settings).values(key=_KEY, value=seed.hex()))
                return key
        except IntegrityError:
            continue  # created concurrently: read it back
    raise RuntimeError("could not create the chunk map key")


async def deployment_public_key_pem(ctx: ApiContext) -> bytes:
    """What nodes are provisioned with to check chunk maps."""
    key = await deployment_key(ctx)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def signed_chunk_map(ctx: ApiContext, artifact_id: str, chunk_size: int) -> bytes:
    """The cached map for this artifact and chunk size, signing (and numbering) it the first time."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ApiError(400, f"chunk_size must be in {MIN_CHUNK}..{MAX_CHUNK}")
    cache_key = f"cmap:{artifact_id}:{chunk_size}"
    async with ctx.store.read() as conn:
        row = (await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == cache_key))).first()
        artifact = (await conn.execute(sa.select(t.artifacts).where(t.artifacts.c.id == artifact_id))).first()
    if row is not None:
        return bytes.fromhex(row[0])
    if artifact is None or not ctx.blobs.exists(artifact.sha256):
        raise ApiError(404, "artifact not found")
    try:
        check_shape(int(artifact.size), chunk_size)  # from the sizes alone, before any work
    except ChunkMapError as exc:
        raise ApiError(400, f"no chunk map of this shape: {exc}") from None
    data = await asyncio.to_thread(ctx.blobs.path(artifact.sha256).read_bytes)
    key = await deployment_key(ctx)
    for _ in range(5):
        try:
            async with ctx.store.transaction() as conn:
                cached = (
                    await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == cache_key))
                ).first()
                if cached is not None:
                    return bytes.fromhex(cached[0])
                seq_row = (
                    await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == _SEQ))
                ).first()
                sequence = int(seq_row[0]) + 1 if seq_row is not None else 1
                cmap = await asyncio.to_thread(
                    build_chunk_map,
                    data,
                    artifact_id=artifact_id,
                    artifact_name=artifact.name,
                    chunk_size=chunk_size,
                    sequence=sequence,
                    key=key,
                )
                encoded = cmap.encode()
                if seq_row is None:
                    await conn.execute(sa.insert(t.settings).values(key=_SEQ, value=str(sequence)))
                else:
                    updated = await conn.execute(
                        sa.update(t.settings)
                        .where(t.settings.c.key == _SEQ, t.settings.c.value == seq_row[0])
                        .values(value=str(sequence))
                    )
                    if updated.rowcount != 1:
                        raise _Raced
                await conn.execute(sa.insert(t.settings).values(key=cache_key, value=encoded.hex()))
                return encoded
        except (IntegrityError, _Raced):
            continue
    raise ApiError(503, "chunk map is being signed concurrently; retry")


async def get_chunk_map(ctx: ApiContext, req: Request) -> Response:
    await require_device(ctx, req)
    chunk_size = query_int(req, "chunk_size", 1024, minimum=MIN_CHUNK, maximum=MAX_CHUNK)
    data = await signed_chunk_map(ctx, req.path_params["id"], chunk_size)
    headers = [("Content-Type", "application/vnd.meshota-chunk-map"), ("Accept-Ranges", "bytes")]
    size = len(data)
    try:
        span = byte_span(req.headers.get("range"), size)
    except RangeError:
        return refused(size)
    if span is None:
        return Response(200, headers, data)
    start, end = span
    headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
    return Response(206, headers, data[start : end + 1])
