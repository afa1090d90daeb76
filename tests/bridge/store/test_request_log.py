"""bridge.store.RequestLog: one claim per (device, request id) across workers; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from bridge.store import RequestLog, Store, request_key
from bridge.store import tables as t
from tests.support.mender import Db

K1, K2 = request_key("dev-1", "r1"), request_key("dev-1", "r2")
D1, D2 = b"\x01" * 16, b"\x02" * 16


async def _opened(db: Db, n: int = 1) -> list[Store]:
    stores = [Store.open(db.url, schema=db.schema) for _ in range(n)]
    await stores[0].migrate()
    return stores


def test_claim_new_duplicate_and_reused_id(db: Db) -> None:
    async def run() -> None:
        (store,) = await _opened(db)
        rl = RequestLog(store, ttl=60)
        try:
            async with store.batch() as b:
                first = await rl.claim([(K1, D1), (K2, D1)], time.time())
                await rl.record([(K1, b"reply-1"), (K2, b"reply-2")])
            assert not b.failed and [c.new for c in first] == [True, True]
            async with store.batch():
                again = await rl.claim([(K2, D1), (K1, D1)], time.time())
            assert [(c.new, c.reply) for c in again] == [(False, b"reply-2"), (False, b"reply-1")]
            # the same id carrying another request (a node cycling its ids): new again
            async with store.batch():
                reused = await rl.claim([(K1, D2)], time.time())
                await rl.record([(K1, b"reply-1b")])
            assert reused[0].new
            async with store.batch():
                assert (await rl.claim([(K1, D2)], time.time()))[0].reply == b"reply-1b"
        finally:
            await store.close()

    asyncio.run(run())


def test_a_rolled_back_claim_leaves_nothing(db: Db) -> None:
    async def run() -> None:
        (store,) = await _opened(db)
        rl = RequestLog(store)
        try:
            async with store.batch() as batch:
                await rl.claim([(K1, D1)], time.time())
                batch.failed = True  # the group failed: rolled back at the end of the block
            async with store.batch():
                assert (await rl.claim([(K1, D1)], time.time()))[0].new
        finally:
            await store.close()

    asyncio.run(run())


def test_prune_deletes_only_expired_rows(db: Db) -> None:
    async def run() -> None:
        (store,) = await _opened(db)
        rl = RequestLog(store, ttl=100)
        try:
            async with store.batch():
                await rl.claim([(K1, D1)], 1000.0)
                await rl.claim([(K2, D1)], 1090.0)
            assert await rl.prune(1150.0) == 1
            async with store.read() as conn:
                left = await conn.execute(
                    sa.select(sa.func.count()).select_from(t.metadata.tables["request_log"])
                )
                assert left.scalar() == 1
        finally:
            await store.close()

    asyncio.run(run())


def test_two_workers_racing_for_one_request_run_it_once(db: Db) -> None:
    """Worker A claims and is still running the request when worker B's claim arrives: B waits
    for A's commit and gets A's reply; with A rolled back, B runs it."""
    if db.kind == "sqlite":
        pytest.skip("SQLite: one writer at a time, a second claim cannot overlap")

    async def run() -> None:
        a_store, b_store = await _opened(db, 2)
        a, b = RequestLog(a_store), RequestLog(b_store)
        try:
            for a_commits in (True, False):
                key = request_key("dev-race", f"r-{a_commits}")
                a_claimed = asyncio.Event()
                release = asyncio.Event()

                async def worker_a(
                    key: bytes = key,
                    claimed: asyncio.Event = a_claimed,
                    go: asyncio.Event = release,
                    commits: bool = a_commits,
                ) -> None:
                    async with a_store.batch() as batch:
                        assert (await a.claim([(key, D1)], time.time()))[0].new
                        claimed.set()
                        await go.wait()
                        await a.record([(key, b"from-a")])
                        batch.failed = not commits  # rolled back at the end of the block

                task = asyncio.create_task(worker_a())
                await a_claimed.wait()

                async def worker_b(key: bytes = key) -> tuple[bool, bytes | None]:
                    async with b_store.batch():
                        claim = (await b.claim([(key, D1)], time.time()))[0]
                    return claim.new, claim.reply

                b_task = asyncio.create_task(worker_b())
                await asyncio.sleep(0.3)
                assert not b_task.done()  # B waits for A's transaction
                release.set()
                await task
                assert await b_task == ((False, b"from-a") if a_commits else (True, None))
        finally:
            await a_store.close()
            await b_store.close()

    asyncio.run(run())
