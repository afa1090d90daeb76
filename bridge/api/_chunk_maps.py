"""Server side of group streaming: a signed chunk map per (artifact, chunk size).

The map (format in wire/SPEC.md §2) is signed with the server's Ed25519 *deployment
key*, created once and kept in the ``settings`` table (``chunk_map_key``, hex seed). Each newly
signed map takes the next value of a monotonic counter (``chunk_map_seq``), so a map signed later
always carries a higher sequence number: nodes refuse any map not above what they run (SUIT
anti-rollback; re-deploying an old artifact simply gets a new, higher-numbered map). Maps are
cached (``cmap:<artifact id>:<chunk size>``), so every root and every node asking for the same
artifact and chunk size gets the very same bytes — and therefore the same stream id, which is
what lets a new root resume another root's stream.

Limits (docs/limits.md): a device gets maps only of artifacts deployed to it or still being
deployed to some device (a group root relays for its targets); any other id is 404, as an unknown
one; at most ``ApiLimits.chunk_map_sizes_per_artifact`` chunk sizes are
signed and kept per artifact (another size: 400 naming the ones there are); an artifact's maps are
dropped with the artifact. Reading and hashing the artifact runs in the thread pool.

Endpoint (device token; a meshota extension, not a Mender path):
``GET /api/meshota/v1/devices/chunk_maps/{artifact_id}?chunk_size=N``
→ 200 ``application/vnd.meshota-chunk-map`` (the full form: head + leaves); with a
``Range: bytes=A-B`` header → 206 and ``Content-Range`` like an artifact download (the MQTT
adapter clamps it to its block size, so a map larger than a datagram is fetched block-wise).

And for the operator (user token; meshota extension): ``GET /api/meshota/v1/management/chunk_map_key``
→ 200 ``application/x-pem-file``, the deployment key's public half that nodes are provisioned with
to check chunk maps (the key is created on first use, as for the first map).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.api._auth import require_device, require_user
from bridge.api._context import ApiContext
from bridge.api._paging import query_int
from bridge.api._ranges import RangeError, byte_span, refused
from bridge.api._types import ApiError, Request, Response
from bridge.service import authorize
from bridge.store import tables as t
from wire.chunk_map import MAX_CHUNK, MIN_CHUNK, ChunkMap, ChunkMapError, build_chunk_map, check_shape

__all__ = [
    "CHUNK_MAP_PATH",
    "deployment_key",
    "deployment_public_key_pem",
    "get_chunk_map",
    "mgmt_chunk_map_key",
    "remove_chunk_maps",
    "signed_chunk_map",
]

CHUNK_MAP_PATH = "/api/meshota/v1/devices/chunk_maps/{id}"
_KEY = "chunk_map_key"
_SEQ = "chunk_map_seq"
_CACHE_PREFIX = "cmap:"


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


async def mgmt_chunk_map_key(ctx: ApiContext, req: Request) -> Response:
    """``GET /api/meshota/v1/management/chunk_map_key``: the PEM public key nodes check maps with."""
    authorize(await require_user(ctx, req), "artifacts:read")
    return Response(200, [("Content-Type", "application/x-pem-file")], await deployment_public_key_pem(ctx))


_DD, _D, _A = t.device_deployments, t.deployments, t.artifacts


async def _deployed_to(conn: AsyncConnection, device_id: str, artifact: Any) -> bool:
    """Whether this artifact (by id once started, else by name) is deployed to the device, or is
    still being deployed to any device (a group-stream root fetches the map for its targets and
    need not be one itself)."""
    query = (
        sa.select(_DD.c.id)
        .join(_D, _D.c.id == _DD.c.deployment_id)
        .where(sa.or_(_DD.c.device_id == device_id, _DD.c.finished_ts.is_(None)))
        .where(
            sa.or_(
                _DD.c.artifact_id == artifact.id,
                sa.and_(_DD.c.artifact_id.is_(None), _D.c.artifact_name == artifact.name),
            )
        )
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


def _draft(
    path: Path, artifact_id: str, name: str, chunk_size: int, key: ed25519.Ed25519PrivateKey
) -> ChunkMap:
    """Read and hash the artifact (thread pool); numbered and signed for real in the transaction."""
    return build_chunk_map(
        path.read_bytes(),
        artifact_id=artifact_id,
        artifact_name=name,
        chunk_size=chunk_size,
        sequence=0,
        key=key,
    )


def _numbered(draft: ChunkMap, sequence: int, key: ed25519.Ed25519PrivateKey) -> ChunkMap:
    head = dataclasses.replace(draft.head, sequence=sequence, signature=b"")
    return ChunkMap(dataclasses.replace(head, signature=key.sign(head.signed_bytes())), draft.leaves)


async def signed_chunk_map(
    ctx: ApiContext, artifact_id: str, chunk_size: int, device_id: str | None = None
) -> bytes:
    """The cached map for this artifact and chunk size, signing (and numbering) it the first time.

    With ``device_id``, only for an artifact deployed to that device (404 otherwise, as for an
    unknown artifact). At most ``ApiLimits.chunk_map_sizes_per_artifact`` chunk sizes are signed
    and kept per artifact; another size is refused (400, naming the sizes there are).
    """
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ApiError(400, f"chunk_size must be in {MIN_CHUNK}..{MAX_CHUNK}")
    cache_key = f"{_CACHE_PREFIX}{artifact_id}:{chunk_size}"
    async with ctx.store.read() as conn:
        artifact = (await conn.execute(sa.select(_A).where(_A.c.id == artifact_id))).first()
        if artifact is None or (device_id is not None and not await _deployed_to(conn, device_id, artifact)):
            raise ApiError(404, "artifact not found")
        row = (await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == cache_key))).first()
    if row is not None:
        return bytes.fromhex(row[0])
    if not ctx.blobs.exists(artifact.sha256):
        raise ApiError(404, "artifact not found")
    try:
        check_shape(int(artifact.size), chunk_size)  # from the sizes alone, before any work
    except ChunkMapError as exc:
        raise ApiError(400, f"no chunk map of this shape: {exc}") from None
    key = await deployment_key(ctx)
    try:
        # reading and hashing the whole artifact is CPU and disk work: not on the event loop
        draft = await asyncio.to_thread(
            _draft, ctx.blobs.path(artifact.sha256), artifact_id, artifact.name, chunk_size, key
        )
    except ChunkMapError as exc:
        raise ApiError(400, f"no chunk map for this artifact: {exc}") from None
    for _ in range(5):
        try:
            async with ctx.store.transaction() as conn:
                cached = (
                    await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == cache_key))
                ).first()
                if cached is not None:
                    return bytes.fromhex(cached[0])
                await _check_sizes(ctx, conn, artifact_id)
                seq_row = (
                    await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == _SEQ))
                ).first()
                sequence = int(seq_row[0]) + 1 if seq_row is not None else 1
                encoded = _numbered(draft, sequence, key).encode()
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


async def _check_sizes(ctx: ApiContext, conn: AsyncConnection, artifact_id: str) -> None:
    prefix = f"{_CACHE_PREFIX}{artifact_id}:"
    keys = (
        await conn.execute(
            sa.select(t.settings.c.key).where(t.settings.c.key.startswith(prefix, autoescape=True))
        )
    ).scalars()
    sizes = sorted(int(k[len(prefix) :]) for k in keys)
    limit = ctx.limits.chunk_map_sizes_per_artifact
    if len(sizes) >= limit:
        raise ApiError(
            400, f"chunk maps of {limit} sizes exist for this artifact, the most kept; ask for one of {sizes}"
        )


async def remove_chunk_maps(conn: AsyncConnection, artifact_id: str) -> None:
    """Drop the cached maps of an artifact (when the artifact is deleted)."""
    await conn.execute(
        sa.delete(t.settings).where(
            t.settings.c.key.startswith(f"{_CACHE_PREFIX}{artifact_id}:", autoescape=True)
        )
    )


async def get_chunk_map(ctx: ApiContext, req: Request) -> Response:
    auth = await require_device(ctx, req)
    chunk_size = query_int(req, "chunk_size", 1024, minimum=MIN_CHUNK, maximum=MAX_CHUNK)
    data = await signed_chunk_map(ctx, req.path_params["id"], chunk_size, auth.device_id)
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
