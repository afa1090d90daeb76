"""Tenant scoping of every statement, by construction.

Every table with a ``tenant_id`` column belongs to one organisation per row. A hook on the engine
(``before_execute``) rewrites each Core statement that touches such a table before it runs:

- every SELECT (nested ones too: subqueries, EXISTS, scalar subqueries, CTEs) gets
  ``<table>.tenant_id = :meshota_tenant`` for each tenant table in its FROM list (in the ON clause
  of a join's right side, so an outer join stays an outer join);
- every UPDATE and DELETE gets the same criterion on its target table;
- every INSERT into a tenant table gets ``tenant_id = :meshota_tenant`` (a row that names
  another tenant is refused).

The tenant comes from :func:`tenant_scope` (a context variable the service layer sets per unit of
work, so requests sharing one group-commit transaction each run in their own tenant). A statement
on a tenant table with no tenant in scope raises :class:`TenantScopeError` instead of running:
no handler can forget the scope. :func:`cross_tenant` is the explicit escape for code that works
across organisations (``meshota admin``, migrations, the organisation lookup at enrolment).

The rewritten statement holds the tenant as a bound parameter, not a value, so it is built once
per statement object (memoized; the module-level prebuilt statements pay nothing after the first
call) and hits SQLAlchemy's compiled cache like the original. Text statements pass unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import Delete, Insert, Update
from sqlalchemy.sql.selectable import Alias, FromClause, Join, Select

__all__ = [
    "TENANT_COLUMN",
    "TENANT_PARAM",
    "TenantScopeError",
    "cross_tenant",
    "current_tenant",
    "install_tenancy",
    "is_tenant_table",
    "reset_tenant",
    "set_tenant",
    "tenant_scope",
]

TENANT_COLUMN = "tenant_id"
TENANT_PARAM = "meshota_tenant"

_TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("meshota_tenant", default=None)
_CROSS: contextvars.ContextVar[bool] = contextvars.ContextVar("meshota_cross_tenant", default=False)


class TenantScopeError(RuntimeError):
    """A statement on a tenant-owned table ran without a tenant in scope (a server bug), or an
    insert named another tenant than the one in scope."""


@contextlib.contextmanager
def tenant_scope(tenant_id: str) -> Iterator[None]:
    """Run the block's statements as ``tenant_id`` (nests; the inner scope wins)."""
    if not tenant_id:
        raise TenantScopeError("empty tenant id")
    token = _TENANT.set(tenant_id)
    cross = _CROSS.set(False)
    try:
        yield
    finally:
        _CROSS.reset(cross)
        _TENANT.reset(token)


@contextlib.contextmanager
def cross_tenant() -> Iterator[None]:
    """Run the block's statements unscoped: every organisation's rows. Admin and migration code only."""
    token = _CROSS.set(True)
    try:
        yield
    finally:
        _CROSS.reset(token)


def current_tenant() -> str | None:
    return None if _CROSS.get() else _TENANT.get()


def set_tenant(tenant_id: str | None) -> contextvars.Token[str | None]:
    """Set the tenant for the rest of the current context (the router resets it per request)."""
    return _TENANT.set(tenant_id)


def reset_tenant(token: contextvars.Token[str | None]) -> None:
    _TENANT.reset(token)


def is_tenant_table(table: Any) -> bool:
    return isinstance(table, sa.Table) and TENANT_COLUMN in table.c


# statement object -> its scoped form (None: it touches no tenant table)
_SCOPED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_NONE = object()


def _criterion(from_: FromClause) -> Any | None:
    """``from_.tenant_id = :meshota_tenant`` if ``from_`` is a tenant table or an alias of one."""
    if is_tenant_table(from_):
        return from_.c[TENANT_COLUMN] == sa.bindparam(TENANT_PARAM)
    if isinstance(from_, Alias) and is_tenant_table(from_.element):
        return from_.c[TENANT_COLUMN] == sa.bindparam(TENANT_PARAM)
    return None


def _scope_froms(froms: Any) -> list[Any]:
    """Criteria for the WHERE clause; joins get theirs in the ON clause (mutated: clones only)."""
    where: list[Any] = []
    for from_ in froms:
        base = from_
        while isinstance(base, Join):
            base = base.left
        crit = _criterion(base)
        if crit is not None:
            where.append(crit)
    return where


def _visit_join(join: Join) -> None:
    crit = _criterion(join.right)
    if crit is not None:
        join.onclause = sa.and_(join.onclause, crit) if join.onclause is not None else crit


def _outer(flags: Any) -> bool:
    return bool(flags.get("isouter") or flags.get("full"))


def _scope_setup_joins(select: Select[Any]) -> list[Any]:
    """``select(...).join(t, on)`` keeps its joins in ``_setup_joins`` (no Join object until
    compiled, so the ``join`` visitor never sees them): each joined tenant table's criterion goes
    into its ON clause (an outer join stays outer). Returns WHERE criteria for inner joins
    without an ON clause (the foreign key's, made at compile time)."""
    where: list[Any] = []
    joins = []
    changed = False
    for target, onclause, from_, flags in select._setup_joins:
        crit = _criterion(target) if isinstance(target, FromClause) else None
        if crit is not None:
            if onclause is not None:
                onclause = sa.and_(onclause, crit)  # type: ignore[arg-type]
                changed = True
            elif _outer(flags):
                raise TenantScopeError(f"an outer join to {target} needs an explicit ON clause")
            else:
                where.append(crit)
        joins.append((target, onclause, from_, flags))
    if changed:
        select._setup_joins = tuple(joins)
    return where


def _visit_select(select: Select[Any]) -> None:
    where = _scope_setup_joins(select) if select._setup_joins else []
    where += _scope_froms(select.get_final_froms())
    if where:
        select._where_criteria += tuple(where)


def _visit_dml(stmt: Update | Delete) -> None:
    crit = _criterion(stmt.table)
    if crit is not None:
        stmt._where_criteria += (crit,)


_VISITORS: dict[str, Any] = {
    "select": _visit_select,
    "join": _visit_join,
    "update": _visit_dml,
    "delete": _visit_dml,
}


def _survey(stmt: Any) -> tuple[bool, bool]:
    """(touches a tenant table?, needs the full rewrite: a SELECT nested in it, or an outer join
    made by ``Select.join`` — its criterion belongs in the ON clause, see _scope_setup_joins)"""
    touches = nested = False
    for element in visitors.iterate(stmt):
        if is_tenant_table(element):
            touches = True
        elif (
            (isinstance(element, Select) and element is not stmt)
            or (isinstance(element, Join) and element.isouter)
            or (isinstance(element, Select) and any(_outer(j[3]) for j in element._setup_joins))
        ):
            nested = True
    return touches, nested


def _scoped(stmt: Any) -> Any:
    """The scoped form of ``stmt`` (memoized per object), or _NONE if it needs none."""
    try:
        found = _SCOPED.get(stmt)
    except TypeError:  # not weak-referenceable: compute every time
        found = None
    if found is not None:
        return found
    touches, nested = _survey(stmt)
    if not touches:
        result: Any = _NONE
    elif isinstance(stmt, Insert) and stmt.select is None:
        # a plain insert has nothing to filter: it only gets the tenant column
        result = stmt
        if is_tenant_table(stmt.table) and not _names_tenant(stmt):
            result = stmt.values({TENANT_COLUMN: sa.bindparam(TENANT_PARAM)})
    elif nested:
        # the general case (cloning the whole tree costs ~0.5 ms; memoized per statement object)
        result = visitors.cloned_traverse(stmt, {}, _VISITORS)
    elif isinstance(stmt, Select):
        # one level: each tenant table's criterion in WHERE; the right side of an outer join may
        # be absent (NULL-extended), so there the criterion also lets NULL through
        result = stmt.where(*_join_criteria(stmt.get_final_froms()))
    else:
        crit = _criterion(stmt.table)
        result = stmt.where(crit) if crit is not None else stmt
    with contextlib.suppress(TypeError):
        _SCOPED[stmt] = result
    return result


def _join_criteria(froms: Any, optional: bool = False) -> list[Any]:
    """WHERE criteria for every tenant table in ``froms`` (joins built by ``Select.join`` exist
    only here, in ``get_final_froms()``, not in the statement's tree)."""
    out: list[Any] = []
    for from_ in froms:
        if isinstance(from_, Join):
            out += _join_criteria((from_.left,), optional)
            out += _join_criteria((from_.right,), optional or from_.isouter or from_.full)
            continue
        crit = _criterion(from_)
        if crit is not None:
            out.append(sa.or_(crit, from_.c[TENANT_COLUMN].is_(None)) if optional else crit)
    return out


def _names_tenant(stmt: Insert) -> bool:
    values: Any = stmt._values or {}
    return any(getattr(k, "key", k) == TENANT_COLUMN for k in values)


def _check_rows(rows: Any, tenant: str) -> None:
    for row in rows:
        value = row.get(TENANT_COLUMN, tenant)
        if value != tenant:
            raise TenantScopeError(f"insert names tenant {value!r} inside the scope of {tenant!r}")


def _before_execute(
    conn: Any, clauseelement: Any, multiparams: Any, params: Any, execution_options: Any
) -> tuple[Any, Any, Any]:
    if not isinstance(clauseelement, (Select, Insert, Update, Delete)) or _CROSS.get():
        return clauseelement, multiparams, params
    scoped = _scoped(clauseelement)
    if scoped is _NONE:
        return clauseelement, multiparams, params
    tenant = _TENANT.get()
    if tenant is None:
        raise TenantScopeError(f"statement on a tenant table without a tenant: {str(clauseelement)[:120]}")
    if isinstance(clauseelement, Insert) and clauseelement._values:
        _check_rows(
            ({getattr(k, "key", k): getattr(v, "value", v) for k, v in clauseelement._values.items()},),
            tenant,
        )
    if multiparams:
        _check_rows(multiparams, tenant)
        multiparams = [{**row, TENANT_PARAM: tenant} for row in multiparams]
    else:
        if params:
            _check_rows((params,), tenant)
        params = {**(params or {}), TENANT_PARAM: tenant}
    return scoped, multiparams, params


def install_tenancy(engine: AsyncEngine) -> None:
    """Scope every statement ``engine`` runs (see the module docstring)."""
    event.listen(engine.sync_engine, "before_execute", _before_execute, retval=True)
