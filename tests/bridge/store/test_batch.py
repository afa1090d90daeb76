"""Store.batch (group commit): all units in one transaction, all or nothing, one task only; and
the bulk path's fallback to one transaction per record when a record fails inside the batch.

PostgreSQL runs on 127.0.0.1:5432 (database ``test``); set MESHOTA_TEST_PG_URL to use another."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.api import AdapterServices, ApiError, Request, Response, Route, Router
from bridge.mqtt import SealedRecordService
from bridge.store import BatchFailed, Store, after_commit
from bridge.store import tables as t
from tests.support.mender import Db
from wire.envelope import BulkError, BulkReply, BulkRequest
from wire.sealed import (
    TO_NODE,
    RecordOp,
    decode_reply,
    derive_record_key,
    encode_request,
    open_record,
    seal_record,
)


async def _open(db: Db) -> Store:
    store = Store.open(db.url, schema=db.schema)
    await store.migrate()
    return store


async def _put(store: Store, key: str, value: str) -> None:
    async with store.transaction() as conn:
        await conn.execute(sa.insert(t.settings).values(key=key, value=value))


async def _keys(store: Store) -> set[str]:
    async with store.read() as conn:
        return {str(k) for k in (await conn.execute(sa.select(t.settings.c.key))).scalars()}


def test_batch_commits_all_units_once(db: Db) -> None:
    async def main() -> None:
        store = await _open(db)
        seen: list[str] = []
        async with store.batch() as batch:
            for i in range(5):
                async with store.transaction() as conn:
                    await conn.execute(sa.insert(t.settings).values(key=f"k{i}", value="v"))
                    after_commit(conn, lambda i=i: seen.append(f"k{i}"))
                async with store.read() as conn:  # reads see the batch's own writes
                    got = await conn.execute(sa.select(t.settings.c.key).where(t.settings.c.key == f"k{i}"))
                    assert got.first() is not None
            assert seen == []  # nothing is committed before the batch ends
        assert not batch.failed and batch.units == 10
        assert seen == [f"k{i}" for i in range(5)]
        assert {f"k{i}" for i in range(5)} <= await _keys(store)
        await store.close()

    asyncio.run(main())


def test_a_failing_write_unit_rolls_back_the_whole_batch(db: Db) -> None:
    async def main() -> None:
        store = await _open(db)
        await _put(store, "before", "v")
        seen: list[int] = []
        async with store.batch() as batch:
            async with store.transaction() as conn:
                await conn.execute(sa.insert(t.settings).values(key="a", value="v"))
                after_commit(conn, lambda: seen.append(1))
            with pytest.raises(ApiError):  # a read that fails does not fail the batch
                async with store.read() as conn:
                    raise ApiError(404, "no")
            assert not batch.failed
            with pytest.raises(ApiError):
                async with store.transaction() as conn:
                    await conn.execute(sa.insert(t.settings).values(key="b", value="v"))
                    raise ApiError(409, "after a write")
            assert batch.failed
            with pytest.raises(BatchFailed):
                async with store.transaction() as conn:
                    pass
        assert batch.failed and seen == []
        assert await _keys(store) >= {"before"} and not {"a", "b"} & await _keys(store)
        await _put(store, "after", "v")  # the store is fine afterwards (writer lock released)
        assert "after" in await _keys(store)
        await store.close()

    asyncio.run(main())


def test_batch_belongs_to_one_task(db: Db) -> None:
    async def main() -> None:
        store = await _open(db)

        async def other() -> None:
            async with store.transaction():
                pass

        async with store.batch():
            with pytest.raises(RuntimeError, match="another task"):
                await asyncio.create_task(other())
        await store.close()

    asyncio.run(main())


# --- the bulk path falls back to one transaction per record ------------------------------------

NODE = "node-7"
KEY = derive_record_key(NODE, b"\x07" * 16)
calls: list[str] = []


async def _inventory(store: Store, req: Request) -> Response:
    """A handler that writes, then may fail inside its own transaction (as put_status can, 409)."""
    attrs = req.json()
    calls.append(attrs[0]["name"])
    async with store.transaction() as conn:
        await conn.execute(sa.insert(t.settings).values(key=f"inv-{attrs[0]['name']}", value="x"))
        if attrs[0]["value"] == "fail":
            raise ApiError(409, "refused after a write")
    return Response(200)


def test_bulk_batch_falls_back_per_record_when_one_fails(tmp_path: Path) -> None:
    async def main() -> None:
        store = Store.open(f"sqlite:///{tmp_path / 'bulk.sqlite'}")
        await store.migrate()
        router: Router[Store] = Router(
            store, [Route("PATCH", "/api/devices/v1/inventory/device/attributes", _inventory)]
        )
        service = SealedRecordService(router, AdapterServices(store), {NODE: KEY})
        await service.bind_token(NODE, "token-of-node-7")

        async def send(batch_id: str, values: list[str], first_seq: int) -> list[int]:
            records = [
                seal_record(
                    KEY,
                    first_seq + i,
                    encode_request(RecordOp.INVENTORY_PATCH, "", [{"name": f"{batch_id}{i}", "value": v}]),
                )
                for i, v in enumerate(values)
            ]
            _, raw = await service.handle_batch(BulkRequest(batch_id, records).encode())
            reply = BulkReply.decode(raw)
            out = []
            for i, entry in enumerate(reply.entries):
                assert isinstance(entry, bytes)
                _, seq, plain = open_record([KEY], entry, direction=TO_NODE)
                assert seq == first_seq + i
                out.append(decode_reply(plain)[0])
            return out

        calls.clear()
        assert await send("ok", ["a", "b", "c"], 10) == [200, 200, 200]
        assert calls == ["ok0", "ok1", "ok2"]  # one pass: the group commit held
        calls.clear()
        assert await send("mix", ["a", "fail", "c"], 20) == [200, 409, 200]
        # the group commit stopped at the failing record, rolled back, then each record ran alone
        assert calls == ["mix0", "mix1", "mix0", "mix1", "mix2"]
        keys = await _keys(store)
        assert {"inv-ok0", "inv-ok1", "inv-ok2", "inv-mix0", "inv-mix2"} <= keys and "inv-mix1" not in keys
        # the replay window kept exactly what was accepted once: the same records again are replays
        again = BulkReply.decode((await service.handle_batch(BulkRequest("again", [
            seal_record(KEY, 21, encode_request(RecordOp.INVENTORY_PATCH, "", [{"name": "z", "value": "v"}]))
        ]).encode()))[1])  # fmt: skip
        assert again.entries == [BulkError.REPLAYED]
        await store.close()

    asyncio.run(main())
