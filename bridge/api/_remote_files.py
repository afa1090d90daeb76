"""deviceconnect's HTTP file routes (what ``mender-cli cp`` uses) and the device's connection state.

``GET /api/management/v1/deviceconnect/devices/{id}/download?path=P`` and ``PUT .../upload``
(multipart ``path``, ``file``, optional ``mode`` octal, ``uid``, ``gid``) run one server-side session
on the device's link, under exactly the rules of a user's websocket session (``open_session``:
``remoteaccess:use``, the owner's grant with ``filetransfer``; cut when the grant ends; audited),
speaking mender-connect's file-transfer protocol: ``stat`` → ``file_info``, ``get_file`` →
``file_chunk``s acked by offset until an empty chunk; ``put_file`` → ``ack`` 0, chunks of 4 KiB
with at most 20 unacknowledged, an empty chunk, the final ``ack`` at the size. At most
``ApiLimits.remote_file_max`` bytes either way, held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import sqlalchemy as sa

from bridge.store import tables as t

from ._auth import require_user
from ._context import ApiContext
from ._deviceconnect import watch_grant
from ._multipart import parse_multipart
from ._remote_access import SessionTicket, open_session, record_session
from ._remote_hub import UserSession
from ._remote_proto import PROTO_FILETRANSFER, ProtoMsg, decode_msg
from ._scope import check_devices
from ._times import rfc3339
from ._types import ApiError, Request, Response, json_response

__all__ = ["UPLOAD_BODY_MAX", "mgmt_connection", "mgmt_download", "mgmt_upload"]

_CHUNK = 4096
_WINDOW = 20 * _CHUNK  # bytes in flight before waiting for mender-connect's ack
UPLOAD_BODY_MAX = (16 << 20) + (64 << 10)  # the route's body limit: a 16 MiB file and its form


class _Inbox:
    """The server-side session's peer: what the device sends it, queued (the protocol's ack window
    bounds it; past ``max_bytes`` the session is over)."""

    def __init__(self, max_bytes: int, timeout: float) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._timeout = timeout
        self._bytes = 0
        self._max = max_bytes
        self.closed: str | None = None

    async def send(self, data: bytes) -> None:
        self._bytes += len(data)
        if self._bytes > self._max:
            raise ConnectionError("the device sent more than the session may hold")
        self._queue.put_nowait(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed = reason or "closed"
        self._queue.put_nowait(None)

    async def recv(self, limit: int) -> ProtoMsg:
        try:
            data = await asyncio.wait_for(self._queue.get(), self._timeout)
        except TimeoutError:
            # mender-connect ignores a protocol its config disables (FileTransfer.Disable)
            raise ApiError(
                504,
                "the device did not answer in time (is file transfer enabled in its mender-connect.conf?)",
            ) from None
        if data is None:
            raise ApiError(409, f"the session ended: {self.closed}")
        self._bytes -= len(data)
        return decode_msg(data, limit)


def _device_error(msg: ProtoMsg) -> ApiError:
    try:
        doc = msgpack.unpackb(msg.body, raw=False)
        text = str(doc.get("err") or doc.get("error") or "error") if isinstance(doc, dict) else "error"
    except Exception:
        text = "error"
    text = text[:300]
    low = text.lower()
    if "no such file" in low or "not exist" in low:
        return ApiError(404, f"on the device: {text}")
    if "denied" in low or "not permitted" in low:
        return ApiError(403, f"on the device: {text}")
    return ApiError(400, f"on the device: {text}")


@contextlib.asynccontextmanager
async def _session(
    ctx: ApiContext, req: Request, what: dict[str, Any]
) -> AsyncIterator[tuple[UserSession, _Inbox]]:
    """A file-transfer session on the device's link: opened by the one check, watched for the end
    of the grant, audited when it ends."""
    principal = await require_user(ctx, req)
    ticket: SessionTicket = await open_session(ctx, principal, req.path_params["id"])
    if PROTO_FILETRANSFER not in ticket.protocols:
        raise ApiError(403, "the owner's grant does not include file transfer")
    inbox = _Inbox(ctx.limits.remote_file_max + (1 << 20), ctx.limits.remote_reply_timeout)
    session = ctx.remote.open(ticket, inbox, principal.tenant_id, ctx.clock())
    watch = asyncio.create_task(watch_grant(ctx, session))
    try:
        yield session, inbox
        session.end_reason = session.end_reason or "transfer complete"
    except ApiError as exc:
        session.end_reason = session.end_reason or f"failed: {exc.message[:100]}"
        raise
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await ctx.remote.end(session, session.end_reason or "aborted")
        await record_session(ctx, ticket, {**session.summary(ctx.clock()), **what})


async def _send(ctx: ApiContext, session: UserSession, typ: str, body: Any = None, **props: Any) -> None:
    raw = body if isinstance(body, bytes) else b"" if body is None else bytes(msgpack.packb(body))
    await ctx.remote.to_device(session, ProtoMsg(PROTO_FILETRANSFER, typ, "", props, raw))


async def _reply(ctx: ApiContext, inbox: _Inbox, *types: str) -> ProtoMsg:
    """The next file-transfer message of one of ``types`` (others: control ``ping``s and the like,
    skipped); an ``error`` from the device becomes the caller's error."""
    while True:
        msg = await inbox.recv(ctx.limits.remote_device_message_max)
        if msg.proto != PROTO_FILETRANSFER:
            continue
        if msg.typ == "error":
            raise _device_error(msg)
        if msg.typ in types:
            return msg


def _file_path(value: str | None) -> str:
    if not value or not value.startswith("/") or len(value) > 4096 or "\x00" in value:
        raise ApiError(400, "path must be an absolute path on the device (at most 4096 characters)")
    return value


def _offset(msg: ProtoMsg) -> int:
    off = msg.props.get("offset")
    if not isinstance(off, int) or isinstance(off, bool) or off < 0:
        raise ApiError(502, "the device sent a file-transfer message without a valid offset")
    return off


# -- routes -------------------------------------------------------------------------------------
async def mgmt_connection(ctx: ApiContext, req: Request) -> Response:
    """Mender's ConnectionState: ``connected`` when the device's link is held by this process."""
    p = await require_user(ctx, req)
    device_id = req.path_params["id"]
    async with ctx.gov.read(p, "devices:read") as uow:
        await check_devices(uow, [device_id])
        row = (await uow.conn.execute(sa.select(t.devices).where(t.devices.c.id == device_id))).first()
    if row is None:
        raise ApiError(404, "device not found")
    link = ctx.remote.devices.get(device_id)
    connected = link is not None and link.tenant_id == p.tenant_id
    out = {
        "device_id": device_id,
        "status": "connected" if connected else "disconnected",
        "created_ts": rfc3339(row.created_ts),
        "updated_ts": rfc3339(link.connected if link is not None and connected else row.updated_ts),
    }
    return json_response(200, out)


async def mgmt_download(ctx: ApiContext, req: Request) -> Response:
    limit = ctx.limits.remote_file_max
    path = req.query_one("path")
    async with _session(ctx, req, {"direction": "download", "path": (path or "")[:256]}) as (session, inbox):
        path = _file_path(path)
        await _send(ctx, session, "stat", {"path": path})
        info_doc = msgpack.unpackb((await _reply(ctx, inbox, "file_info")).body, raw=False, timestamp=3)
        info = info_doc if isinstance(info_doc, dict) else {}
        size = info.get("size")
        if not isinstance(size, int) or size < 0:
            raise ApiError(502, "the device's file_info has no size")
        if size > limit:
            raise ApiError(413, f"the file is {size} bytes; at most {limit} are transferred")
        await _send(ctx, session, "get_file", {"path": path})
        parts: list[bytes] = []
        received = 0
        while True:
            msg = await _reply(ctx, inbox, "file_chunk")
            if _offset(msg) != received:
                raise ApiError(502, "the device sent a chunk out of order")
            received += len(msg.body)
            if received > limit:
                raise ApiError(413, f"the file grew past {limit} bytes while it was read")
            await _send(ctx, session, "ack", offset=received)
            if not msg.body:
                break
            parts.append(msg.body)
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("X-MEN-File-Path", path),
        ("X-MEN-File-Size", str(received)),
    ]
    mode = info.get("mode")
    headers.append(("X-MEN-File-Mode", f"{(mode if isinstance(mode, int) else 0o644) & 0o7777:o}"))
    for key, header in (("uid", "X-MEN-File-UID"), ("gid", "X-MEN-File-GID")):
        if isinstance(info.get(key), int):
            headers.append((header, str(info[key])))
    return Response(200, headers, b"".join(parts))


def _form(req: Request, limit: int) -> tuple[str, bytes, dict[str, int]]:
    parts = {p.name: p for p in parse_multipart(req.headers.get("content-type", ""), req.body)}
    if "path" not in parts or "file" not in parts:
        raise ApiError(400, "the form needs a path and a file")
    path = _file_path(parts["path"].data.decode("utf-8", "replace"))
    data = parts["file"].data
    if len(data) > limit:
        raise ApiError(413, f"the file is {len(data)} bytes; at most {limit} are transferred")
    extra: dict[str, int] = {}
    for name, base in (("mode", 8), ("uid", 10), ("gid", 10)):
        if name in parts:
            text = parts[name].data.decode("ascii", "replace").strip()
            try:
                value = int(text, base)
            except ValueError:
                raise ApiError(
                    400, f"{name} must be {'an octal' if base == 8 else 'a decimal'} number"
                ) from None
            if not 0 <= value < 2**32:
                raise ApiError(400, f"{name} is out of range")
            extra[name] = value & 0o7777 if name == "mode" else value
    return path, data, extra


async def mgmt_upload(ctx: ApiContext, req: Request) -> Response:
    limit = ctx.limits.remote_file_max
    async with _session(ctx, req, {"direction": "upload"}) as (session, inbox):
        path, data, extra = _form(req, limit)
        await _send(ctx, session, "put_file", {"path": path, "size": len(data), **extra})
        if _offset(await _reply(ctx, inbox, "ack", "put_file/continue")) != 0:
            raise ApiError(502, "the device acknowledged an upload it has not received")
        acked = 0
        for start in range(0, len(data), _CHUNK):
            while start - acked >= _WINDOW:
                acked = max(acked, _offset(await _reply(ctx, inbox, "ack")))
            await _send(ctx, session, "file_chunk", data[start : start + _CHUNK], offset=start)
        await _send(ctx, session, "file_chunk", None, offset=len(data))
        while acked < len(data) or not data:
            acked = max(acked, _offset(await _reply(ctx, inbox, "ack")))
            if not data:
                break
    return Response(201)
