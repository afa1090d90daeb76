"""Login throttling, the bounded scrypt gate, constant work for unknown users, CPU work off the
event loop, and limits taken from ``Settings.limits`` (issue 12, item 5)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.api import (
    ApiContext,
    ApiLimits,
    Request,
    Response,
    Router,
    Settings,
    _crypto,
    _devauth,
    _useradm,
    build_router,
    create_user,
)
from bridge.api._throttle import TokenBuckets, WorkGate
from bridge.artifacts import BlobStore
from bridge.http import BackgroundServer, ServerConfig
from bridge.store import DEFAULT_ORG_ID, Store, tables, tenant_scope
from tests.support.mender import ADMIN, auth_body, device_key

LOGIN = "/api/management/v1/useradm/auth/login"
AUTH = "/api/devices/v1/authentication/auth_requests"
Scenario = Callable[[ApiContext, Router[ApiContext]], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, limits: ApiLimits | None = None) -> None:
    async def go() -> None:
        store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
        try:
            await store.migrate()
            ctx = await ApiContext.create(
                store, BlobStore(tmp_path / "art"), Settings(limits=limits or ApiLimits())
            )
            with tenant_scope(DEFAULT_ORG_ID):  # test set-up acts in the default organisation
                async with store.transaction() as conn:
                    await create_user(conn, *ADMIN)
            await scenario(ctx, build_router(ctx))
        finally:
            await store.close()

    asyncio.run(go())


def login(user: str, password: str, client: str | None = "192.0.2.1", identity: str | None = None) -> Request:
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return Request(
        "POST", LOGIN, headers={"authorization": f"Basic {basic}"}, client=client, identity=identity
    )


def error(r: Response) -> str:
    body = json.loads(r.body)
    assert set(body) == {"error", "request_id"} and r.header("X-MEN-RequestID") == body["request_id"]
    return str(body["error"])


def test_failed_logins_are_throttled_per_user(tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        for _ in range(3):
            assert (await router.handle(login(ADMIN[0], "wrong-password"))).status == 401
        r = await router.handle(login(ADMIN[0], "wrong-password"))
        assert r.status == 429 and "for this user" in error(r)
        assert int(r.header("Retry-After") or 0) >= 1
        # while throttled even the right password waits (what makes guessing pointless)
        assert (await router.handle(login(*ADMIN))).status == 429
        # another name from the same source is not affected; nor is an unknown one throttled early
        assert (await router.handle(login("other@example.com", "x"))).status == 401

    run(tmp_path, scenario, ApiLimits(login_user_burst=3, login_user_refill=60.0))


def test_logins_are_throttled_per_source(tmp_path: Path) -> None:
    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        for i in range(4):
            assert (await router.handle(login(f"u{i}@example.com", "x", client="192.0.2.7"))).status == 401
        r = await router.handle(login(*ADMIN, client="192.0.2.7"))
        assert r.status == 429 and "from this source" in error(r) and r.header("Retry-After")
        # other sources (an HTTP peer, an MQTT-stamped identity) have their own buckets
        assert (await router.handle(login(*ADMIN, client="192.0.2.8"))).status == 200
        assert (await router.handle(login(*ADMIN, client=None, identity="node-1"))).status == 200

    run(tmp_path, scenario, ApiLimits(login_source_burst=4, login_source_refill=60.0))


def test_unknown_user_costs_one_scrypt_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []
    real = _crypto.check_password

    def spy(stored: str, password: str) -> bool:
        seen.append((stored, threading.current_thread() is threading.main_thread()))
        return real(stored, password)

    monkeypatch.setattr(_useradm, "check_password", spy)

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        unknown = await router.handle(login("nobody@example.com", "secret123"))
        known = await router.handle(login(ADMIN[0], "not-it"))
        assert unknown.status == known.status == 401 and error(unknown) == error(known)
        assert seen[0][0] == _crypto.DUMMY_PASSWORD_HASH  # the same scrypt as a real user
        assert len(seen) == 2 and not any(on_loop for _, on_loop in seen)  # both in the thread pool

    run(tmp_path, scenario)


def test_password_gate_refuses_instead_of_queueing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def slow(stored: str, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return False

    monkeypatch.setattr(_useradm, "check_password", slow)

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        flood = [login(f"u{i}@example.com", "x", client=f"192.0.2.{i}") for i in range(8)]
        answers = await asyncio.gather(*(router.handle(r) for r in flood))
        statuses = sorted(a.status for a in answers)
        assert statuses == [401, 401] + [429] * 6, statuses  # 1 running + 1 waiting, the rest refused
        assert all("busy" in error(a) for a in answers if a.status == 429)
        assert most == 1 and ctx.passwords.admitted == 0

    run(tmp_path, scenario, ApiLimits(password_workers=1, password_queue_max=1))


def test_auth_signature_check_runs_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop: list[bool] = []
    real = _devauth.verify_auth_signature

    def spy(pem: str, body: bytes, signature: str) -> bool:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real(pem, body, signature)

    monkeypatch.setattr(_devauth, "verify_auth_signature", spy)

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        body, sig = auth_body(device_key("rsa"), "02:00:00:00:5a:01")
        r = await router.handle(Request("POST", AUTH, headers={"x-men-signature": sig}, body=body))
        assert r.status == 401 and error(r) == "device authentication pending"
        assert on_loop == [False]

    run(tmp_path, scenario)


def test_limits_come_from_settings(tmp_path: Path) -> None:
    """One place: a changed ApiLimits in Settings changes what the handlers accept."""

    async def scenario(ctx: ApiContext, router: Router[ApiContext]) -> None:
        body, sig = auth_body(device_key("ed25519"), "02:00:00:00:5b:01")
        auth = Request("POST", AUTH, headers={"x-men-signature": sig}, body=body)
        assert (await router.handle(auth)).status == 401
        from bridge.api import set_auth_status

        async with ctx.store.transaction() as conn:
            device_id = (await conn.execute(sa.select(tables.devices.c.id))).scalar_one()
            await set_auth_status(conn, device_id, None, "accepted")
        token = (await router.handle(auth)).body.decode()
        attrs = json.dumps([{"name": f"a{i}", "value": i} for i in range(3)]).encode()
        put = Request("PUT", "/api/devices/v1/inventory/device/attributes",
                      headers={"authorization": f"Bearer {token}"}, body=attrs)  # fmt: skip
        r = await router.handle(put)
        assert r.status == 400 and "at most 2" in error(r)

    run(tmp_path, scenario, ApiLimits(inventory_max_attributes=2))


# -- the buckets themselves -----------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 30), st.floats(0, 5)), min_size=1, max_size=200),
    burst=st.integers(1, 5),
    refill=st.floats(0.5, 10),
    max_keys=st.integers(1, 8),
)
def test_token_buckets_bound_attempts_and_state(
    steps: list[tuple[int, float]], burst: int, refill: float, max_keys: int
) -> None:
    buckets = TokenBuckets(burst, refill, max_keys)
    now, taken = 0.0, 0
    for key, dt in steps:
        now += dt
        if buckets.take(f"k{key % 3}" if key < 20 else f"spray{key}", now) == 0 and key % 3 == 0 and key < 20:
            taken += 1
        assert len(buckets) <= max_keys
    if max_keys >= 4:  # no eviction of the watched key's partly used bucket can have happened
        assert taken <= burst + now / refill + 1e-9


def test_token_bucket_wait_is_the_time_to_the_next_token() -> None:
    buckets = TokenBuckets(2, 10.0, 100)
    assert buckets.take("a", 0.0) == 0 and buckets.take("a", 0.0) == 0
    assert buckets.take("a", 1.0) == pytest.approx(9.0)
    assert buckets.wait("a", 10.0) == 0 and buckets.take("a", 10.0) == 0


def test_work_gate_validates() -> None:
    with pytest.raises(ValueError):
        WorkGate(0, 1)
    with pytest.raises(ValueError):
        TokenBuckets(0, 1.0, 1)


# -- the client address and the stamp reach the handler -----------------------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    limits = ApiLimits(login_source_burst=3, login_source_refill=60.0)
    config = ServerConfig(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art", port=0,
                          settings=Settings(limits=limits))  # fmt: skip
    with BackgroundServer(config) as srv:
        yield srv


def test_login_flood_over_http_gets_429_per_peer_address(server: BackgroundServer) -> None:
    url = f"{server.url}{LOGIN}"
    answers = [httpx.post(url, auth=(f"u{i}@example.com", "x"), timeout=30) for i in range(4)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    last = answers[-1]
    assert "from this source" in last.json()["error"] and int(last.headers["retry-after"]) >= 1
    assert last.headers["x-men-requestid"] == last.json()["request_id"]
