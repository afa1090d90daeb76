"""Store: Alembic migrations, transactions, URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bridge.store import Store, StoreConfigError, normalize_url, tables
from tests.support.mender import Db


def test_migrate_is_idempotent_and_versioned(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            await store.migrate()
            async with store.transaction() as conn:
                version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
                assert version == "0012"
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


def _schema_diff(conn: sa.Connection) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    diff: list[object] = compare_metadata(context, tables.metadata)
    return diff


def _reflected(conn: sa.Connection) -> dict[str, object]:
    inspector = sa.inspect(conn)
    out: dict[str, object] = {}
    for name in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        out[name] = {
            "columns": [(c["name"], c["nullable"]) for c in inspector.get_columns(name)],
            "pk": sorted(inspector.get_pk_constraint(name)["constrained_columns"]),
            # PostgreSQL also lists the index behind each unique constraint; that one is not an index of ours
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]))
                for i in inspector.get_indexes(name)
                if not i.get("duplicates_constraint")
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
            "fks": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in inspector.get_foreign_keys(name)
            ),
        }
    return out


def _expected() -> dict[str, object]:
    out: dict[str, object] = {}
    for table in sorted(tables.metadata.sorted_tables, key=lambda t: t.name):
        out[table.name] = {
            "columns": [(c.name, c.nullable) for c in table.columns],
            "pk": sorted(c.name for c in table.primary_key.columns),
            "indexes": sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes),
            # unique=True columns appear as UniqueConstraint in table.constraints too
            "unique": sorted(
                {
                    tuple(c.name for c in u.columns)
                    for u in table.constraints
                    if isinstance(u, sa.UniqueConstraint)
                }
                | {(c.name,) for c in table.columns if c.unique}
            ),
            "fks": sorted(
                (tuple(c.name for c in f.columns), f.referred_table.name, f.ondelete)
                for f in table.foreign_key_constraints
            ),
        }
    return out


def test_upgrade_from_empty_yields_exactly_the_table_metadata(db: Db) -> None:
    """Migrations 0001-0003 are explicit op.create_table/add_column/create_index calls; they must produce
    what _tables.py says: autogenerate sees no difference, and the inspector agrees."""

    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            async with store.transaction() as conn:
                assert await conn.run_sync(_schema_diff) == []
                assert await conn.run_sync(_reflected) == _expected()
        finally:
            await store.close()

    asyncio.run(run())


def test_downgrade_to_base_removes_every_table(db: Db) -> None:
    from alembic import command
    from alembic.config import Config

    from bridge.store._engine import _MIGRATIONS

    def downgrade(conn: sa.Connection) -> list[str]:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
        return sorted(set(sa.inspect(conn).get_table_names()) - {"alembic_version"})

    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            async with store.transaction() as conn:
                assert await conn.run_sync(downgrade) == []
            await store.migrate()  # and back up again
            async with store.transaction() as conn:
                assert await conn.run_sync(_schema_diff) == []
        finally:
            await store.close()

    asyncio.run(run())
