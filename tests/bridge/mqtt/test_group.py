"""Group commit of MQTT API requests: one transaction per group, replies only after it committed,
and a group with a failing request falls back to one transaction per request (same answers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from bridge.api import ApiContext, ApiError, Request, Response, Route, Router, Settings
from bridge.artifacts import BlobStore
from bridge.mqtt import MqttBridge, MqttBridgeConfig
from bridge.store import Store
from bridge.store import tables as t
from wire.envelope import (
    DEVICE_PROPERTY,
    VERIFIED_PROPERTY,
    RequestEnvelope,
    ResponseEnvelope,
    request_topic,
    response_topic,
)

calls: list[str] = []


async def _write(ctx: ApiContext, req: Request) -> Response:
    """Inserts settings row ``key`` (a second committed run would violate the primary key)."""
    key = req.path_params["key"]
    calls.append(key)
    async with ctx.store.transaction() as conn:
        await conn.execute(sa.insert(t.settings).values(key=key, value="v"))
        if key.startswith("fail"):
            raise ApiError(409, "refused after a write")
    async with ctx.store.read() as conn:  # reads its own write (inside the group: uncommitted)
        seen = (await conn.execute(sa.select(t.settings.c.value).where(t.settings.c.key == key))).first()
    return Response(200, body=b"seen" if seen else b"missing")


def _message(device: str, rid: str, key: str) -> tuple[str, bytes, list[tuple[str, str]]]:
    topic = request_topic(f"/api/devices/v1/test/{key}")
    return topic, RequestEnvelope(rid, "POST").encode(), [(DEVICE_PROPERTY, device), (VERIFIED_PROPERTY, "1")]


async def _world(tmp: Path) -> tuple[MqttBridge, Store]:
    store = Store.open(f"sqlite:///{tmp / 'group.sqlite'}")
    await store.migrate()
    ctx = ApiContext(store, BlobStore(tmp / "blobs"), b"k" * 32, Settings())
    router = Router(ctx, [Route("POST", "/api/devices/v1/test/{key}", _write)])
    return MqttBridge(router, MqttBridgeConfig("127.0.0.1", 1)), store


def _reply(bridge: MqttBridge, device: str, rid: str) -> ResponseEnvelope:
    # not connected: replies wait in the outbox (published on connect)
    return ResponseEnvelope.decode(bridge._outbox[response_topic(device, rid)])


def test_group_runs_in_one_transaction_and_answers_each(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, store = await _world(tmp_path)
        calls.clear()
        await bridge._run_group([_message(f"d{i}", f"r{i}", f"ok{i}") for i in range(5)])
        assert calls == [f"ok{i}" for i in range(5)]  # each handler once, in arrival order
        assert bridge.stats.groups == 1 and bridge.stats.group_fallbacks == 0
        for i in range(5):
            reply = _reply(bridge, f"d{i}", f"r{i}")
            assert (reply.status, reply.body) == (200, b"seen")
        async with store.read() as conn:
            keys = set((await conn.execute(sa.select(t.settings.c.key))).scalars())
        assert {f"ok{i}" for i in range(5)} <= keys
        await store.close()

    asyncio.run(main())


def test_a_failing_request_makes_the_group_run_one_by_one(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, store = await _world(tmp_path)
        calls.clear()
        group = [_message("a", "r1", "x1"), _message("b", "r2", "fail2"), _message("c", "r3", "x3")]
        await bridge._run_group(group)
        # first pass stopped at the failure and was rolled back; then every request on its own,
        # each in a transaction with its request-log entry; the one failing in there runs once
        # more without it (how its 409 is answered; both attempts were rolled back)
        assert calls == ["x1", "fail2", "x1", "fail2", "fail2", "x3"]
        assert bridge.stats.group_fallbacks == 1
        assert [_reply(bridge, d, r).status for d, r in (("a", "r1"), ("b", "r2"), ("c", "r3"))] == [
            200,
            409,
            200,
        ]
        async with store.read() as conn:
            keys = set((await conn.execute(sa.select(t.settings.c.key))).scalars())
        assert {"x1", "x3"} <= keys and "fail2" not in keys
        # a redelivered request id is answered from the reply cache, never run again
        calls.clear()
        await bridge._run_group([_message("a", "r1", "x1")])
        assert calls == [] and bridge.stats.duplicates == 1
        await store.close()

    asyncio.run(main())


def test_messages_arriving_together_form_groups(tmp_path: Path) -> None:
    async def main() -> None:
        bridge, store = await _world(tmp_path)
        calls.clear()
        for i in range(150):  # as one read from the broker delivers them
            bridge._accept(*_message(f"d{i}", f"r{i}", f"k{i}"))
        assert bridge._group_task is not None
        await bridge._group_task
        assert len(calls) == 150 and bridge.stats.groups == 3  # 64 + 64 + 22
        assert all(_reply(bridge, f"d{i}", f"r{i}").status == 200 for i in range(150))
        assert bridge._group_task is None and not bridge._queue
        await store.close()

    asyncio.run(main())
