"""The audit log: append-only, one hash chain per organisation, written in the change's transaction.

Entry ``n`` stores ``prev_hash`` (entry ``n-1``'s hash, or 64 zeros for the first) and
``hash = SHA-256(canonical JSON of prev_hash and every other field)``; ``audit_heads`` holds each
organisation's last seq and hash, updated in the same transaction (on PostgreSQL its row lock
orders two writers of one organisation, so the chain never forks). Editing a row breaks its hash;
deleting one breaks the next entry's link; deleting the newest breaks the head.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.store import gov_tables as g

__all__ = ["GENESIS", "AuditBreak", "append_entry", "entry_hash", "verify_chain"]

GENESIS = "0" * 64
_FIELDS = (
    "id",
    "tenant_id",
    "ts",
    "actor_type",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
)

_HEAD = sa.select(g.audit_heads.c.seq, g.audit_heads.c.hash)
_HEAD_LOCKED = _HEAD.with_for_update()
_INSERT = sa.insert(g.audit_log)
_INSERT_HEAD = sa.insert(g.audit_heads)
_UPDATE_HEAD = sa.update(g.audit_heads).values(seq=sa.bindparam("b_seq"), hash=sa.bindparam("b_hash"))


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    doc = {k: entry[k] for k in _FIELDS}
    doc["change"] = entry["change"]
    doc["prev_hash"] = prev_hash
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append_entry(conn: AsyncConnection, entry: dict[str, Any]) -> str:
    """Append ``entry`` (fields of :data:`_FIELDS` but ``id`` and ``tenant_id``, plus ``change``)
    to the chain of the organisation in scope; returns its id."""
    dialect = conn.dialect.name
    head = (await conn.execute(_HEAD_LOCKED if dialect == "postgresql" else _HEAD)).first()
    prev = head.hash if head is not None else GENESIS
    entry = {**entry, "id": str(uuid.uuid4())}
    entry["hash"] = entry_hash(prev, entry)
    entry["prev_hash"] = prev
    # tenant_id named explicitly (the tenancy hook checks it is the organisation in scope)
    result = await conn.execute(_INSERT, entry)
    seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
    if head is None:
        await conn.execute(_INSERT_HEAD, {"seq": seq, "hash": entry["hash"], "tenant_id": entry["tenant_id"]})
    else:
        await conn.execute(_UPDATE_HEAD, {"b_seq": seq, "b_hash": entry["hash"]})
    return str(entry["id"])


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """The first entry whose hash or link does not check out (``seq`` None: the head)."""

    seq: int | None
    id: str | None
    reason: str


async def verify_chain(conn: AsyncConnection) -> tuple[int, AuditBreak | None]:
    """(entries checked, the first break or None) for the organisation in scope."""
    rows = await conn.execute(sa.select(g.audit_log).order_by(g.audit_log.c.seq))
    prev, count, last_seq = GENESIS, 0, None
    for row in rows:
        entry = row._asdict()
        if entry["prev_hash"] != prev:
            return count, AuditBreak(
                row.seq, row.id, "prev_hash does not match the previous entry (removed or reordered)"
            )
        if entry_hash(prev, entry) != row.hash:
            return count, AuditBreak(row.seq, row.id, "hash does not match the entry (edited)")
        prev, last_seq, count = row.hash, row.seq, count + 1
    head = (await conn.execute(_HEAD)).first()
    if (head is None and count) or (head is not None and (head.seq != last_seq or head.hash != prev)):
        return count, AuditBreak(
            None, None, "the chain head does not match the newest entry (entries removed)"
        )
    return count, None
