"""Device-group scope of a grant: which devices a group-limited role may see and touch.

:func:`bridge.service.authorize` answers once per operation with a :class:`bridge.service.Grant`;
its ``groups`` (None: every device) decide here which devices are in reach. A device out of
reach is answered as not found (404), so a scoped user learns nothing of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from bridge.service import Denied, UnitOfWork
from bridge.store import tables as t

__all__ = ["check_devices", "group_of_devices", "visible_devices"]

_GROUPS = sa.select(t.inventory.c.device_id, t.inventory.c.value).where(
    t.inventory.c.scope == "system", t.inventory.c.name == "group"
)


async def group_of_devices(uow: UnitOfWork) -> dict[str, str]:
    """device id -> its static group, for every grouped device of the organisation."""
    return {r.device_id: str(r.value) for r in await uow.conn.execute(_GROUPS)}


async def visible_devices(uow: UnitOfWork) -> set[str] | None:
    """The device ids the grant reaches (None: all of them)."""
    groups = uow.grant.groups
    if groups is None:
        return None
    return {d for d, g in (await group_of_devices(uow)).items() if g in groups}


_KNOWN = sa.select(t.devices.c.id).where(t.devices.c.id.in_(sa.bindparam("b_ids", expanding=True)))


async def check_devices(uow: UnitOfWork, device_ids: Iterable[str], what: str = "device not found") -> None:
    """404 unless every one of ``device_ids`` is a device of this organisation in reach of the
    grant (another organisation's device and an unknown id look the same)."""
    ids = set(device_ids)
    visible = await visible_devices(uow)
    if visible is not None:
        if not ids <= visible:
            raise Denied(what, 404)
        return
    known = set((await uow.conn.execute(_KNOWN, {"b_ids": sorted(ids)})).scalars())
    if known != ids:
        raise Denied(what, 404)
