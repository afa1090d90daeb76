"""Transport-free handler tests: the transport identity must match the device token, and the
device-status cache never lets a rejected device through (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa

from bridge.api import ApiContext, Request, Response, Router, Settings, build_router, set_auth_status
from bridge.api._device_status import DeviceStatusCache
from bridge.artifacts import BlobStore
from bridge.store import Store, tables
from tests.support.mender import Db, auth_body, device_key

INV = "/api/devices/v1/inventory/device/attributes"
Scenario = Callable[[ApiContext, Router[ApiContext]], Awaitable[None]]


def run_with_router(db: Db, tmp_path: Path, scenario: Scenario, settings: Settings | None = None) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            ctx = await ApiContext.create(store, BlobStore(tmp_path / "art"), settings or Settings())
            await scenario(ctx, build_router(ctx))
        finally:
            await store.close()

    asyncio.run(run())


async def enroll(ctx: ApiContext, router: Router[ApiContext], mac: str) -> tuple[str, str]:
    key = device_key("ecdsa")
    body, sig = auth_body(key, mac)
    auth = Request("POST", "/api/devices/v1/authentication/auth_requests", body=body,
                   headers={"x-men-signature": sig})  # fmt: skip
    assert (await router.handle(auth)).status == 401
    async with ctx.store.transaction() as conn:
        query = sa.select(tables.devices.c.id).where(tables.devices.c.id_data.contains(mac))
        device_id = (await conn.execute(query)).scalar_one()
        await set_auth_status(conn, device_id, None, "accepted")
    r = await router.handle(auth)
    assert r.status == 200
    return device_id, r.body.decode()


def inventory(token: str | None, identity: str | None) -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request("PATCH", INV, headers=headers, body=b'[{"name":"a","value":"1"}]', identity=identity)


def assert_error(r: Response, status: int, needle: str) -> None:
    assert r.status == status
    body = json.loads(r.body)
    assert set(body) == {"error", "request_id"} and needle in body["error"] and body["request_id"]


def test_transport_identity_must_match_token(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        device_a, token_a = await enroll(ctx, router, "02:00:00:00:1d:01")
        device_b, _ = await enroll(ctx, router, "02:00:00:00:1d:02")
        assert (await router.handle(inventory(token_a, None))).status == 200  # plain HTTP
        # a token issued without a transport identity (HTTP) is refused on any, even one equal
        # to its own device id: only a token issued over that identity's session is good there
        assert_error(await router.handle(inventory(token_a, device_a)), 403, "transport identity")
        # device B's transport carrying device A's token: refused, whatever the cache holds
        assert_error(await router.handle(inventory(token_a, device_b)), 403, "transport identity")
        assert_error(await router.handle(inventory(None, device_a)), 401, "bearer")
        status = Request("PUT", "/api/devices/v1/deployments/device/deployments/x/status",
                         headers={"authorization": f"Bearer {token_a}"}, body=b'{"status":"success"}',
                         identity="someone-else")  # fmt: skip
        assert_error(await router.handle(status), 403, "transport identity")

    run_with_router(db, tmp_path, scenario)


def test_status_change_takes_effect_at_once_despite_cache(db: Db, tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        device_id, token = await enroll(ctx, router, "02:00:00:00:1d:03")
        assert (await router.handle(inventory(token, None))).status == 200
        assert len(ctx.device_status) == 1  # the answer is cached now
        # a rejection that rolls back changes nothing, not even the cache
        try:
            async with ctx.store.transaction() as conn:
                await set_auth_status(conn, device_id, None, "rejected")
                raise RuntimeError("abandon")
        except RuntimeError:
            pass
        assert (await router.handle(inventory(token, None))).status == 200
        async with ctx.store.transaction() as conn:
            await set_auth_status(conn, device_id, None, "rejected")
        assert_error(await router.handle(inventory(token, None)), 401, "not accepted")
        async with ctx.store.transaction() as conn:
            await set_auth_status(conn, device_id, None, "accepted")
        assert (await router.handle(inventory(token, None))).status == 200

    run_with_router(db, tmp_path, scenario)


def test_change_by_another_process_applies_after_ttl(db: Db, tmp_path: Path) -> None:
    """A write that bypasses this process (e.g. meshota admin) is seen once the TTL ran out."""

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        _, token = await enroll(ctx, router, "02:00:00:00:1d:04")
        assert (await router.handle(inventory(token, None))).status == 200
        async with ctx.store.transaction() as conn:  # behind the cache's back
            await conn.execute(sa.update(tables.auth_sets).values(status="rejected"))
        assert (await router.handle(inventory(token, None))).status == 200  # within the TTL
        ctx.device_status.ttl = 0  # 0 stops caching; clear() stands for the entry's expiry
        ctx.device_status.clear()
        assert_error(await router.handle(inventory(token, None)), 401, "not accepted")

    run_with_router(db, tmp_path, scenario)


def test_cache_expiry_and_generation() -> None:
    cache = DeviceStatusCache(ttl=5)
    cache.remember("d", "a", now=100, generation=cache.generation)
    assert cache.is_accepted("d", "a", 104.9)
    assert not cache.is_accepted("d", "other-auth-set", 104.9)
    assert not cache.is_accepted("d", "a", 105.0)
    assert len(cache) == 0
    # a lookup that started before an invalidation must not store its (possibly stale) answer
    started = cache.generation
    cache.invalidate("d")
    cache.remember("d", "a", now=100, generation=started)
    assert not cache.is_accepted("d", "a", 101)
