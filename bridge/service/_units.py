"""Units of work: ``ctx.gov.unit(principal, permission)`` — the one door every write goes through.

A unit authorizes once (:func:`authorize`, deny by default), scopes every statement to the
principal's organisation (bridge/store/_tenancy.py), opens one transaction, and lets the
operation add audit entries to that same transaction: the change and its audit entry commit or
roll back together. Reads use ``ctx.gov.read(...)``: the same check and scope, a read snapshot.
Every adapter reaches the store this way: the HTTP and MQTT handlers, ``meshota admin`` (as the
operator principal), bundle import and the UI.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import Store, tenant_scope

from ._audit import append_entry
from ._permissions import BUILTIN_ROLES, PERMISSIONS, Grant, Principal, Role, authorize

__all__ = ["Governance", "UnitOfWork", "operator", "system"]


def operator(tenant_id: str, name: str = "meshota-admin") -> Principal:
    """``meshota admin``: the operator principal, with every permission in one organisation."""
    return Principal.of("operator", name, name, tenant_id, (BUILTIN_ROLES["RBAC_ROLE_PERMIT_ALL"],))


def system(tenant_id: str, name: str, permissions: Iterable[str]) -> Principal:
    """A server job (the rollout ticker) acting in one organisation, with only the permissions it
    needs; audited as actor type ``system``."""
    perms = frozenset(permissions)
    assert perms <= PERMISSIONS.keys(), perms - PERMISSIONS.keys()
    role = Role(f"system:{name}", f"server job {name}", perms, builtin=True)
    return Principal.of("system", name, name, tenant_id, (role,))


@dataclass(slots=True)
class UnitOfWork:
    conn: AsyncConnection
    principal: Principal
    grant: Grant

    async def audit(
        self, action: str, object_type: str, object_id: str, change: Mapping[str, Any] | None = None
    ) -> str:
        """An audit entry in this unit's transaction (``change``: a short summary, never secrets)."""
        p = self.principal
        return await append_entry(
            self.conn,
            {
                "tenant_id": p.tenant_id,
                "ts": time.time(),
                "actor_type": p.kind,
                "actor_id": p.id,
                "actor_name": p.name,
                "action": action,
                "object_type": object_type,
                "object_id": object_id,
                "change": dict(change or {}),
            },
        )


class Governance:
    """The service layer's entry: ``unit`` (write) and ``read``; both run :func:`authorize`."""

    def __init__(self, store: Store, *, enforce: bool = True) -> None:
        self.store = store
        # False only for benchmarks measuring what the checks cost (--compare-scoping)
        self.enforce = enforce

    def _grant(self, principal: Principal, permission: str, groups: Iterable[str] | None) -> Grant:
        if not self.enforce:
            return Grant(permission, None)
        return authorize(principal, permission, groups)

    @contextlib.asynccontextmanager
    async def unit(
        self, principal: Principal, permission: str, groups: Iterable[str] | None = None
    ) -> AsyncIterator[UnitOfWork]:
        grant = self._grant(principal, permission, groups)
        with tenant_scope(principal.tenant_id):
            async with self.store.transaction() as conn:
                yield UnitOfWork(conn, principal, grant)

    @contextlib.asynccontextmanager
    async def read(
        self, principal: Principal, permission: str, groups: Iterable[str] | None = None
    ) -> AsyncIterator[UnitOfWork]:
        grant = self._grant(principal, permission, groups)
        with tenant_scope(principal.tenant_id):
            async with self.store.read() as conn:
                yield UnitOfWork(conn, principal, grant)
