"""Mender deviceconnect over websockets, transport-free: the two connect routes.

- ``/api/devices/v1/deviceconnect/connect``: mender-connect's link, with the device's JWT (it
  gets it from mender-client over D-Bus). Any accepted device may keep a link open; that alone
  opens nothing.
- ``/api/management/v1/deviceconnect/devices/{id}/connect``: a user's session on device ``id``:
  ``remoteaccess:use`` on the device and the owner's grant in force (:func:`open_session`), else
  an HTTP error before the websocket is accepted. The session ends when either side closes, the
  device's link drops, or the grant expires or is revoked (re-read every
  ``ApiLimits.remote_recheck`` seconds, and at the expiry it had); then it is audited.

An adapter calls :func:`serve_websocket` with the request (headers), ``accept()``, the incoming
binary messages and a :class:`Peer` to send on; an :class:`ApiError` raised before ``accept``
becomes an HTTP error response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack

from bridge.service import Denied
from bridge.store._tenancy import reset_tenant, set_tenant

from ._auth import require_device, require_user
from ._context import ApiContext
from ._remote_access import grant_state, open_session, record_session
from ._remote_hub import CLOSE_DEVICE_GONE, CLOSE_GRANT_ENDED, Peer, UserSession
from ._remote_proto import PROTO_CONTROL, ProtoMsg, encode_msg
from ._types import ApiError, Request

__all__ = ["DEVICE_CONNECT", "USER_CONNECT", "is_websocket_route", "serve_websocket", "watch_grant"]

log = logging.getLogger(__name__)
DEVICE_CONNECT = "/api/devices/v1/deviceconnect/connect"
USER_CONNECT = re.compile(r"^/api/management/v1/deviceconnect/devices/(?P<id>[^/]{1,64})/connect$")

Accept = Callable[[], Awaitable[None]]


def is_websocket_route(path: str) -> bool:
    return path == DEVICE_CONNECT or USER_CONNECT.match(path) is not None


async def serve_websocket(
    ctx: ApiContext, request: Request, accept: Accept, messages: AsyncIterator[bytes], peer: Peer
) -> None:
    # no organisation until the caller is authenticated (which sets it), as in Router.handle
    tenant = set_tenant(None)
    try:
        await _serve(ctx, request, accept, messages, peer)
    except Denied as exc:
        raise ApiError(exc.status, exc.message) from None
    finally:
        reset_tenant(tenant)


async def _serve(
    ctx: ApiContext, request: Request, accept: Accept, messages: AsyncIterator[bytes], peer: Peer
) -> None:
    if request.path == DEVICE_CONNECT:
        await _serve_device(ctx, request, accept, messages, peer)
        return
    match = USER_CONNECT.match(request.path)
    if match is None:
        raise ApiError(404, f"no such websocket route: {request.path[:200]}")
    await _serve_user(ctx, request, match["id"], accept, messages, peer)


async def _serve_device(
    ctx: ApiContext, request: Request, accept: Accept, messages: AsyncIterator[bytes], peer: Peer
) -> None:
    auth = await require_device(ctx, request)
    hub = ctx.remote
    link, old = hub.attach(auth.device_id, auth.tenant_id, peer, ctx.clock())
    await accept()
    if old is not None:  # the device reconnected: its previous link and sessions are gone
        for session in hub.detach(old):
            await hub.end(session, "device reconnected", CLOSE_DEVICE_GONE)
        with contextlib.suppress(Exception):
            await old.peer.close(1000, "replaced by a newer connection")
    try:
        async for data in messages:
            try:
                await hub.from_device(link, data)
            except ApiError as exc:
                link.dropped += 1
                log.debug("device %s: message dropped: %s", link.device_id, exc.message)
    finally:
        for session in hub.detach(link):
            await hub.end(session, "device disconnected", CLOSE_DEVICE_GONE)


async def _serve_user(
    ctx: ApiContext,
    request: Request,
    device_id: str,
    accept: Accept,
    messages: AsyncIterator[bytes],
    peer: Peer,
) -> None:
    principal = await require_user(ctx, request)
    ticket = await open_session(ctx, principal, device_id)
    hub = ctx.remote
    session = hub.open(ticket, peer, principal.tenant_id, ctx.clock())
    try:
        await accept()
        pump = asyncio.create_task(_pump(ctx, session, messages))
        watch = asyncio.create_task(watch_grant(ctx, session))
        ended = asyncio.create_task(session.ended.wait())
        done, pending = await asyncio.wait({pump, watch, ended}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("remote session %s: %r", session.sid, task.exception())
    finally:
        await hub.end(session, session.end_reason or "user closed")
        await record_session(ctx, ticket, session.summary(ctx.clock()))


async def _pump(ctx: ApiContext, session: UserSession, messages: AsyncIterator[bytes]) -> None:
    async for data in messages:
        try:
            await ctx.remote.from_user(session, data)
        except ApiError as exc:
            # the user's bad message is answered on the session (control error), never relayed
            error = {"err": exc.message, "close": False}
            reply = ProtoMsg(PROTO_CONTROL, "error", session.sid, {}, _pack(error))
            await session.peer.send(encode_msg(reply))


def _pack(doc: dict[str, object]) -> bytes:
    return bytes(msgpack.packb(doc, use_bin_type=True))


async def watch_grant(ctx: ApiContext, session: UserSession) -> None:
    """Cut the session when the grant ends: at its expiry, or at a re-read that finds it revoked."""
    expires: float | None = session.ticket.expires
    recheck = ctx.limits.remote_recheck
    while True:
        now = ctx.clock()
        if expires is not None and expires > now:
            await asyncio.sleep(min(expires - now, recheck))
        expires, reason = await grant_state(ctx, session.ticket)
        if expires is None or expires <= ctx.clock():
            await ctx.remote.end(session, reason, CLOSE_GRANT_ENDED)
            return
