"""The fleet's public statistics (issue 18): counted once per device and week at check-in, no
history, public pages with cells below k hidden, off unless enabled; a root's count record."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bridge.api import ApiContext, Request, Settings, build_router
from bridge.api import _fleet_stats as fleet
from bridge.api._auth import DeviceAuth
from bridge.artifacts import BlobStore
from bridge.store import Store, fleet_tables, tables
from tests.support.mender import Db
from wire.countme import CountRecord, encode_count_record, window_start

W = 2950


async def _context(db: Db, tmp_path: Path, enabled: bool = True) -> ApiContext:
    store = Store.open(db.url, schema=db.schema)
    await store.migrate()
    return await ApiContext.create(store, BlobStore(tmp_path / "blobs"), Settings(public_stats=enabled))


async def _devices(ctx: ApiContext, ids: list[str]) -> None:
    async with ctx.store.transaction() as conn:
        for i in ids:
            digest = hashlib.sha256(i.encode()).hexdigest()
            row = {"id": i, "id_data_sha256": digest, "id_data": i, "status": "accepted"}
            await conn.execute(sa.insert(tables.devices).values(**row, created_ts=0, updated_ts=0))


async def _get(ctx: ApiContext, path: str) -> tuple[int, bytes]:
    response = await build_router(ctx).handle(Request("GET", path))
    return response.status, response.body


def _at(monkeypatch: pytest.MonkeyPatch, t: float) -> None:
    monkeypatch.setattr(fleet, "now", lambda: t)


def test_checkins_counted_once_per_week_without_history(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        ctx = await _context(db, tmp_path)
        try:
            ids = [f"dev-{i}" for i in range(18)]
            await _devices(ctx, ids)
            rng = random.Random(3)
            for week in (W, W + 1):
                for _ in range(3):  # every device checks in three times a week, at random moments
                    for i, dev in enumerate(ids):
                        _at(monkeypatch, window_start(week) + rng.random() * 600_000)
                        version = "fw-1" if i < 9 else "fw-2" if i < 12 else "fw-3"
                        provides = {"artifact_name": version, "device_type": "esp32"}
                        await fleet.count_checkin(ctx, dev, provides)
            async with ctx.store.read() as conn:
                marks = list(await conn.execute(sa.select(fleet_tables.fleet_marks)))
            assert len(marks) == 18  # one row per device, overwritten: no history
            status, body = await _get(ctx, "/stats/fleet/weekly.csv")
            text = body.decode()
            assert status == 200
            assert f",{W},nodes-checkin,age_bucket=1;device_type=esp32;version=fw-1,9" in text
            assert f",{W + 1},nodes-checkin,age_bucket=2;device_type=esp32;version=fw-1,9" in text
            # fw-2 (3 devices) is below k; fw-3 (6) is hidden with it, else total - shown = 3
            assert "fw-2" not in text and "fw-3" not in text
            assert f",{W},nodes-checkin,(other),9" in text and f",{W},nodes-checkin,(total),18" in text
            status, page = await _get(ctx, "/stats/fleet")
            assert status == 200 and b"<svg" in page and b"fw-2" not in page
        finally:
            await ctx.store.close()

    asyncio.run(run())


def test_off_unless_enabled(db: Db, tmp_path: Path) -> None:
    async def run() -> None:
        ctx = await _context(db, tmp_path, enabled=False)
        try:
            await _devices(ctx, ["d1"])
            await fleet.count_checkin(ctx, "d1", {"artifact_name": "a", "device_type": "t"})
            for path in ("/stats/fleet", "/stats/fleet/weekly.json", "/stats/fleet/weekly.csv"):
                assert (await _get(ctx, path))[0] == 404
            async with ctx.store.read() as conn:
                assert list(await conn.execute(sa.select(fleet_tables.fleet_marks))) == []
        finally:
            await ctx.store.close()

    asyncio.run(run())


def test_a_roots_count_record_adds_to_the_mesh_series_once_per_root_and_cell(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def by_header(_ctx: Any, req: Request) -> DeviceAuth:
        return DeviceAuth(req.headers["x-root"], "set")

    monkeypatch.setattr(fleet, "require_device", by_header)
    _at(monkeypatch, window_start(W + 1) + 10)

    async def run() -> None:
        ctx = await _context(db, tmp_path)
        try:
            router = build_router(ctx)
            path = "/api/meshota/v1/devices/fleet_counts"

            async def post(root: str, body: bytes) -> int:
                return (
                    await router.handle(Request("POST", path, headers={"x-root": root}, body=body))
                ).status

            record = encode_count_record(CountRecord(W, 2, "fw-3", "nrf52", 40))
            # the root re-sends (its answer was lost; it rebooted): counted once, answered 204
            assert [await post("root-a", record) for _ in range(3)] == [204] * 3
            assert await post("root-b", encode_count_record(CountRecord(W, 2, "fw-3", "nrf52", 2))) == 204
            old = encode_count_record(CountRecord(W - 3, 2, "fw-3", "nrf52", 40))
            assert await post("root-a", old) == 400
            assert await post("root-a", b"junk") == 400
            _, body = await _get(ctx, "/stats/fleet/weekly.json")
            assert b'"table": "nodes-mesh"' in body and b'"count": 42' in body
            async with ctx.store.read() as conn:
                seen = list(await conn.execute(sa.select(fleet_tables.fleet_mesh_seen)))
            assert len(seen) == 2 and all(len(r.digest) == 16 and b"root" not in r.digest for r in seen)
            # two weeks on, the digests of week W are gone with the next record
            _at(monkeypatch, window_start(W + 3) + 10)
            assert await post("root-a", encode_count_record(CountRecord(W + 2, 1, "fw-3", "nrf52", 5))) == 204
            async with ctx.store.read() as conn:
                windows = [r.window for r in await conn.execute(sa.select(fleet_tables.fleet_mesh_seen))]
            assert windows == [W + 2]
        finally:
            await ctx.store.close()

    asyncio.run(run())


def test_public_outputs_unchanged_when_one_devices_id_or_check_in_time_changes(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 devices check in during week W at random moments: the published statistics stay
    the same bytes when one device's id or the moment of its check-in changes."""
    rng = random.Random(18)
    devices = [
        (f"dev-{i:04d}", window_start(W) + rng.uniform(0, 600_000),
         {"artifact_name": rng.choice(["fw-1", "fw-1", "fw-2", "fw-3"]),
          "device_type": rng.choice(["a", "b"])})
        for i in range(1000)
    ]  # fmt: skip

    async def run() -> None:
        ctx = await _context(db, tmp_path)
        try:
            await _devices(ctx, [d for d, _, _ in devices] + ["dev-new"])

            async def published(checkins: list[tuple[str, float, dict[str, str]]]) -> tuple[bytes, bytes]:
                async with ctx.store.transaction() as conn:
                    await conn.execute(sa.delete(fleet_tables.fleet_marks))
                    await conn.execute(sa.delete(fleet_tables.fleet_weekly))
                for dev, at, provides in sorted(checkins, key=lambda c: c[1]):
                    _at(monkeypatch, at)
                    await fleet.count_checkin(ctx, dev, provides)
                return (await _get(ctx, "/stats/fleet/weekly.json"))[1], (
                    await _get(ctx, "/stats/fleet/weekly.csv")
                )[1]

            before = await published(devices)
            assert b"nodes-checkin" in before[0]
            _, at, provides = devices[7]
            assert await published([*devices[:7], ("dev-new", at, provides), *devices[8:]]) == before
            moved = (devices[7][0], window_start(W) + 604_000, provides)
            assert await published([*devices[:7], moved, *devices[8:]]) == before
        finally:
            await ctx.store.close()

    asyncio.run(run())
