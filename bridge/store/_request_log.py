"""The request log: "this device's request id was answered, with these bytes", in the database.

Several bridge workers share one MQTT subscription; a QoS 1 redelivery (a node re-sending under
the same id, a broker redelivering a dead worker's session) may reach any of them. Each worker
first *claims* the request in the transaction that then runs its handler and stores its reply,
so the claim, the handler's writes and the reply commit together or not at all:

- a claim is ``INSERT .. ON CONFLICT DO NOTHING``: if another worker's transaction holds an
  uncommitted claim of the same key, PostgreSQL makes this insert wait for it; after its commit
  the insert does nothing and :meth:`RequestLog.claim` returns that worker's reply (answered once,
  run once); after its rollback the insert succeeds and this worker runs the request;
- the same id with a different request digest (a node cycling a small id space) replaces the
  row, by a conditional update that only one worker can win;
- rows older than ``ttl`` are deleted by :meth:`RequestLog.prune` (a :class:`SingletonJob` in the
  server runs it).

The key is a hash of (device, request id), so neither length nor alphabet of a stamped identity
matters here. SQLite has one writer at a time, so the same statements are trivially serial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Column, Float, Index, LargeBinary, Table
from sqlalchemy.dialects import postgresql, sqlite

from ._engine import Store
from ._tables import metadata

__all__ = ["Claim", "RequestLog", "request_log"]

request_log = Table(
    "request_log",
    metadata,
    Column("key", LargeBinary(16), primary_key=True),
    Column("digest", LargeBinary(16), nullable=False),
    Column("reply", LargeBinary(), nullable=True),
    Column("created", Float(), nullable=False),
    Index("ix_request_log_created", "created"),
)

_c = request_log.c
_RENEW = (  # a reused id carrying another request: only one worker's update can match
    sa.update(request_log)
    .where(_c.key == sa.bindparam("b_key"), _c.digest != sa.bindparam("b_digest"))
    .values(digest=sa.bindparam("b_digest"), reply=None, created=sa.bindparam("b_created"))
)
_REPLY = sa.update(request_log).where(_c.key == sa.bindparam("b_key")).values(reply=sa.bindparam("b_reply"))
_SELECT = sa.select(_c.key, _c.digest, _c.reply).where(_c.key.in_(sa.bindparam("b_keys", expanding=True)))


def request_key(device: str, request_id: str) -> bytes:
    return hashlib.blake2b(f"{device}\x00{request_id}".encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`RequestLog.claim` found for one request."""

    new: bool  # this transaction runs it
    reply: bytes | None  # not new: the stored reply (None: another worker's claim without one)


class RequestLog:
    def __init__(self, store: Store, *, ttl: float = 600.0) -> None:
        self.store = store
        self.ttl = ttl
        dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert(request_log).on_conflict_do_nothing().returning(_c.key)

    async def claim(self, requests: Sequence[tuple[bytes, bytes]], now: float) -> list[Claim]:
        """Claim ``(key, digest)`` pairs in the current transaction (:meth:`Store.batch`).

        Keys are claimed in sorted order, so two workers claiming overlapping groups wait for
        each other instead of deadlocking.
        """
        claims: dict[bytes, Claim] = {}
        order = sorted({key: digest for key, digest in requests}.items())
        async with self.store.transaction() as conn:
            rows = [{"key": k, "digest": d, "reply": None, "created": now} for k, d in order]
            inserted = {bytes(r[0]) for r in await conn.execute(self._insert, rows)}
            rest = [(k, d) for k, d in order if k not in inserted]
            for key, _ in order:
                if key in inserted:
                    claims[key] = Claim(True, None)
            if rest:
                found = {
                    bytes(k): (bytes(d), None if r is None else bytes(r))
                    for k, d, r in await conn.execute(_SELECT, {"b_keys": [k for k, _ in rest]})
                }
                for key, digest in rest:
                    old = found.get(key)
                    if old is not None and old[0] == digest:
                        claims[key] = Claim(False, old[1])
                        continue
                    renewed = await conn.execute(_RENEW, {"b_key": key, "b_digest": digest, "b_created": now})
                    if renewed.rowcount == 1:
                        claims[key] = Claim(True, None)
                    else:  # another worker renewed it for this very request first
                        again = (await conn.execute(_SELECT, {"b_keys": [key]})).first()
                        claims[key] = Claim(
                            False, None if again is None or again[2] is None else bytes(again[2])
                        )
        return [claims[key] for key, _ in requests]

    async def record(self, replies: Sequence[tuple[bytes, bytes]]) -> None:
        """Store the replies of claimed requests (same transaction as their claim)."""
        if not replies:
            return
        async with self.store.transaction() as conn:
            await conn.execute(_REPLY, [{"b_key": key, "b_reply": reply} for key, reply in replies])

    async def prune(self, now: float) -> int:
        """Delete rows older than ``ttl``; the number deleted."""
        async with self.store.transaction() as conn:
            done = await conn.execute(sa.delete(request_log).where(_c.created < now - self.ttl))
        return int(done.rowcount or 0)
