"""Tenant scoping by construction (bridge/store/_tenancy.py), on SQLite and PostgreSQL: every
statement on a tenant table sees and touches only the organisation in scope — selects, joins,
subqueries, counts, updates, deletes, inserts — and one without an organisation does not run."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bridge.store import Store, TenantScopeError, cross_tenant, tables, tenant_scope
from bridge.store._tenancy import reset_tenant, set_tenant
from tests.support.mender import Db

D, INV = tables.devices, tables.inventory


async def _device(conn: sa.ext.asyncio.AsyncConnection, device_id: str, group: str) -> None:
    await conn.execute(
        sa.insert(D).values(
            id=device_id,
            id_data_sha256=device_id * 2,
            id_data="{}",
            status="accepted",
            created_ts=1.0,
            updated_ts=1.0,
        )
    )
    await conn.execute(
        sa.insert(INV),
        [{"device_id": device_id, "scope": "system", "name": "group", "value": group, "updated_ts": 1.0}],
    )


def test_every_statement_is_scoped_to_its_organisation(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            for org, devices in (("org-a", ("a1", "a2")), ("org-b", ("b1",))):
                with tenant_scope(org):
                    async with store.transaction() as conn:
                        for d in devices:
                            await _device(conn, d, f"g-{org}")
            joined = sa.select(D.c.id, INV.c.value).join(INV, INV.c.device_id == D.c.id).order_by(D.c.id)
            outer = sa.select(D.c.id, INV.c.value).select_from(D.outerjoin(INV, INV.c.device_id == D.c.id))
            nested = sa.select(sa.func.count()).select_from(INV).where(INV.c.device_id.in_(sa.select(D.c.id)))
            with tenant_scope("org-a"):
                async with store.transaction() as conn:
                    assert sorted((await conn.execute(sa.select(D.c.id))).scalars()) == ["a1", "a2"]
                    assert [tuple(r) for r in await conn.execute(joined)] == [
                        ("a1", "g-org-a"),
                        ("a2", "g-org-a"),
                    ]
                    assert len(list(await conn.execute(outer))) == 2
                    assert (await conn.execute(nested)).scalar() == 2
                    # another organisation's row, by its id: not there
                    assert (await conn.execute(sa.select(D).where(D.c.id == "b1"))).first() is None
                    assert (
                        await conn.execute(sa.update(D).where(D.c.id == "b1").values(status="x"))
                    ).rowcount == 0
                    assert (await conn.execute(sa.delete(INV).where(INV.c.device_id == "b1"))).rowcount == 0
                    assert (await conn.execute(sa.update(D).values(status="rejected"))).rowcount == 2
                    with pytest.raises(TenantScopeError, match="names tenant"):
                        row = {
                            "id": "x",
                            "id_data_sha256": "x",
                            "id_data": "{}",
                            "status": "s",
                            "tenant_id": "org-b",
                        }
                        await conn.execute(sa.insert(D).values(**row, created_ts=1.0, updated_ts=1.0))
            with cross_tenant():
                async with store.read() as conn:
                    rows = {
                        tuple(r) for r in await conn.execute(sa.select(D.c.id, D.c.tenant_id, D.c.status))
                    }
            assert rows == {
                ("a1", "org-a", "rejected"),
                ("a2", "org-a", "rejected"),
                ("b1", "org-b", "accepted"),
            }
            # no organisation in scope: the statement does not run
            token = set_tenant(None)
            try:
                async with store.read() as conn:
                    with pytest.raises(TenantScopeError, match="without a tenant"):
                        await conn.execute(sa.select(D.c.id))
                    # installation-wide tables need none
                    await conn.execute(sa.select(tables.settings))
            finally:
                reset_tenant(token)
        finally:
            await store.close()

    asyncio.run(run())


def test_the_scope_is_in_the_sql() -> None:
    """The rewrite is real SQL: the criterion is in the statement the driver gets."""
    from bridge.store._tenancy import _scoped

    sql = str(_scoped(sa.select(D.c.id).where(D.c.status == "accepted")))
    assert "devices.tenant_id = :meshota_tenant" in sql
    assert "devices.tenant_id" not in str(sa.select(D.c.id))
    nested = str(_scoped(sa.select(INV.c.name).where(INV.c.device_id.in_(sa.select(D.c.id)))))
    assert nested.count(":meshota_tenant") == 2
    # Select.join(isouter=True) builds its join only at compile time: the criterion joins its ON
    outer = str(_scoped(sa.select(D.c.id, INV.c.name).join(INV, INV.c.device_id == D.c.id, isouter=True)))
    assert "ON inventory.device_id = devices.id AND inventory.tenant_id = :meshota_tenant" in outer
    assert "WHERE devices.tenant_id = :meshota_tenant" in outer


def test_select_join_outer_stays_outer_and_nested_joins_are_scoped(db: Db) -> None:
    """``select(...).join(t, on, isouter=True)`` keeps its joins in ``_setup_joins`` (no Join
    object in the tree): the tenant criterion goes into their ON clauses, so a row whose only
    match belongs to another organisation comes back NULL-extended (a WHERE criterion, even a
    NULL-tolerant one, drops it); and a subquery's ``.join()`` right side is scoped too."""

    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            with tenant_scope("org-a"):
                async with store.transaction() as conn:
                    await _device(conn, "a1", "g")
                    await conn.execute(sa.delete(INV).where(INV.c.device_id == "a1"))  # no group
            with tenant_scope("org-b"):
                async with store.transaction() as conn:
                    await _device(conn, "b1", "g")
            # a1 has no inventory row; b1's inventory row (org B) names a1 as if it were its own
            with cross_tenant():
                async with store.transaction() as conn:
                    await conn.execute(sa.update(INV).where(INV.c.device_id == "b1").values(device_id="a1"))
            outer = sa.select(D.c.id, INV.c.value).join(INV, INV.c.device_id == D.c.id, isouter=True)
            inner_in_sub = sa.select(D.c.id).where(
                D.c.id.in_(sa.select(D.c.id).join(INV, INV.c.device_id == D.c.id))
            )
            with tenant_scope("org-a"):
                async with store.read() as conn:
                    assert [tuple(r) for r in await conn.execute(outer)] == [("a1", None)]
                    assert list(await conn.execute(inner_in_sub)) == []
        finally:
            await store.close()

    asyncio.run(run())
