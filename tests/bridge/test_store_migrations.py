"""Store: Alembic migrations, transactions, URLs (SQLite and PostgreSQL)."""

# ruff: noqa: F811  (pytest fixtures imported from mender_support)
from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from mender_support import Db, db  # noqa: F401  (fixture)

from bridge.store import Store, StoreConfigError, normalize_url, tables


def test_migrate_is_idempotent_and_versioned(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            await store.migrate()
            async with store.transaction() as conn:
                version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
                assert version == "0001"
                for table in tables.metadata.sorted_tables:
                    await conn.execute(sa.select(sa.func.count()).select_from(table))
        finally:
            await store.close()

    asyncio.run(run())


def test_transaction_rolls_back_on_error(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            with pytest.raises(RuntimeError):
                async with store.transaction() as conn:
                    await conn.execute(sa.insert(tables.settings).values(key="k", value="v"))
                    raise RuntimeError("half-way")
            async with store.transaction() as conn:
                rows = (
                    await conn.execute(sa.select(tables.settings).where(tables.settings.c.key == "k"))
                ).all()
                assert rows == []
        finally:
            await store.close()

    asyncio.run(run())


def test_concurrent_transactions_do_not_fail(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()

            async def write(i: int) -> None:
                async with store.transaction() as conn:
                    await conn.execute(sa.insert(tables.settings).values(key=f"k{i}", value="v"))

            await asyncio.gather(*(write(i) for i in range(20)))
            async with store.transaction() as conn:
                count = (await conn.execute(sa.select(sa.func.count()).select_from(tables.settings))).scalar()
                assert count == 20
        finally:
            await store.close()

    asyncio.run(run())


def test_urls() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+asyncpg://")
    for bad in ("nonsense", "mysql://h/db"):
        with pytest.raises(StoreConfigError):
            normalize_url(bad)
    with pytest.raises(StoreConfigError, match="schema"):
        Store.open("postgresql://u@h/db", schema="Robert'); DROP")
    with pytest.raises(StoreConfigError, match="only supported on PostgreSQL"):
        Store.open("sqlite:///x.db", schema="abc")
