"""The rollout service layer on SQLite and PostgreSQL: phase assignment, the ticker's gates,
actions, retries (the simulator tests drive the same code through the handlers, SQLite only)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from bridge.api import (
    ApiContext,
    ApiError,
    Settings,
    create_deployment,
    rollout_action,
    rollout_tick,
    set_group,
)
from bridge.api._rollouts import parse_rollout, retry_device, rollout_json
from bridge.artifacts import BlobStore
from bridge.store import Store, tables
from tests.support.mender import Db

T0 = 1_800_000_000.0


async def _world(db: Db, tmp_path: Path, n: int) -> tuple[ApiContext, list[str]]:
    store = Store.open(db.url, schema=db.schema)
    await store.migrate()
    ctx = await ApiContext.create(store, BlobStore(tmp_path / "blobs"), Settings())
    ids = [f"dev-{i:03d}" for i in range(n)]
    async with store.transaction() as conn:
        for i in ids:
            digest = hashlib.sha256(i.encode()).hexdigest()
            row = {"id": i, "id_data_sha256": digest, "id_data": i, "status": "accepted"}
            await conn.execute(sa.insert(tables.devices).values(**row, created_ts=0, updated_ts=0))
        art = {"id": "art-1", "name": "v2", "description": "", "device_types": ["t"], "signed": False,
               "size": 1, "sha256": "0" * 64, "info": {}, "provides": {}, "depends": {},
               "clears_provides": {}, "updates": [], "modified_ts": 0}  # fmt: skip
        await conn.execute(sa.insert(tables.artifacts).values(**art))
    return ctx, ids


async def _finish(ctx: ApiContext, dep: str, devices: list[str], status: str) -> None:
    dd = tables.device_deployments
    async with ctx.store.transaction() as conn:
        await conn.execute(
            sa.update(dd)
            .where(dd.c.deployment_id == dep, dd.c.device_id.in_(devices))
            .values(status=status, started_ts=T0, finished_ts=T0)
        )


async def _deploy(ctx: ApiContext, ids: list[str], body: dict[str, object]) -> str:
    spec = parse_rollout(body)
    async with ctx.store.transaction() as conn:
        return await create_deployment(
            conn, name="r", artifact_name="v2", device_ids=ids, rollout=spec, wall_clock=T0
        )


def test_gates_walk_and_pause(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        ctx, ids = await _world(db, tmp_path, 20)
        try:
            phases = [{"batch_size": 10}, {"batch_size": 40}, {}]
            gates = {"success_share": 1.0, "error_share": 1.0, "error_count": 2}
            dep = await _deploy(ctx, ids, {"phases": phases, "gates": gates})
            async with ctx.store.read() as conn:
                body = await rollout_json(conn, dep)
            assert body is not None and [p["device_count"] for p in body["phases"]] == [2, 8, 10]
            assert await rollout_tick(ctx.gov, T0) == []  # phase 1 not done yet
            await _finish(ctx, dep, ids[:2], "success")  # listed order: the first two are phase 1
            assert await rollout_tick(ctx.gov, T0) == [(dep, "phase 2 opened")]
            await _finish(ctx, dep, ids[2:3], "failure")
            assert await rollout_tick(ctx.gov, T0) == []  # one failure: under error_count 2
            await _finish(ctx, dep, ids[3:4], "failure")
            assert await rollout_tick(ctx.gov, T0) == [(dep, "paused")]
            assert await rollout_tick(ctx.gov, T0) == []  # a paused rollout stays paused
            async with ctx.store.transaction() as conn:
                assert await rollout_action(conn, dep, "resume", T0) == "running"
            assert await rollout_tick(ctx.gov, T0) == [(dep, "paused")]  # the gate still holds
            async with ctx.store.transaction() as conn:
                assert await rollout_action(conn, dep, "abort", T0) == "aborted"
                with pytest.raises(ApiError) as err:
                    await rollout_action(conn, dep, "resume", T0)
                assert err.value.status == 409
            async with ctx.store.read() as conn:
                statuses = dict(
                    (
                        await conn.execute(
                            sa.select(
                                tables.device_deployments.c.device_id, tables.device_deployments.c.status
                            ).where(tables.device_deployments.c.deployment_id == dep)
                        )
                    ).all()
                )
            assert statuses[ids[19]] == "aborted" and statuses[ids[0]] == "success"
        finally:
            await ctx.store.close()

    asyncio.run(run())


def test_group_phases_scheduled_start_and_retries(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        ctx, ids = await _world(db, tmp_path, 6)
        try:
            async with ctx.store.transaction() as conn:
                await set_group(conn, ids[:3], "submesh-a")
                await set_group(conn, ids[3:], "submesh-b")
            phases = [{"group": "submesh-b", "start_ts": "2027-01-15T08:00:10Z"}, {"group": "submesh-a"}]
            dep = await _deploy(ctx, ids, {"phases": phases, "retries": 1})
            async with ctx.store.read() as conn:
                body = await rollout_json(conn, dep)
            assert body is not None and body["state"] == "scheduled"
            assert [p["device_count"] for p in body["phases"]] == [3, 3]
            assert await rollout_tick(ctx.gov, T0) == []  # before start_ts
            assert await rollout_tick(ctx.gov, T0 + 20) == [(dep, "started")]
            dd = tables.device_deployments
            async with ctx.store.transaction() as conn:
                row = (
                    await conn.execute(
                        sa.select(dd).where(dd.c.deployment_id == dep, dd.c.device_id == ids[3])
                    )
                ).one()
                assert await retry_device(conn, dep, ids[3], row.id)  # first failure: retried
                assert not await retry_device(conn, dep, ids[3], row.id)  # retries used up
            with pytest.raises(ApiError, match="none of the phases"):
                await _deploy(ctx, ids, {"phases": [{"group": "submesh-b"}, {"group": "elsewhere"}]})
        finally:
            await ctx.store.close()

    asyncio.run(run())


def test_menders_abort_ends_the_rollout(db: Db, tmp_path: Path) -> None:
    from bridge.api import abort_deployment

    async def run() -> None:
        ctx, ids = await _world(db, tmp_path, 4)
        try:
            dep = await _deploy(ctx, ids, {"phases": [{"batch_size": 50}, {}]})
            async with ctx.store.transaction() as conn:
                await abort_deployment(conn, dep)  # PUT .../deployments/{id}/status {"status": "aborted"}
            async with ctx.store.read() as conn:
                body = await rollout_json(conn, dep)
            assert body is not None and body["state"] == "aborted" and body["reason"] == "deployment aborted"
            assert await rollout_tick(ctx.gov, T0) == []
        finally:
            await ctx.store.close()

    asyncio.run(run())
