"""What a transport adapter needs from the server besides the routing table.

The MQTT adapter runs many requests in one transaction (group commit), keeps sealed-record
state (replay windows, bound tokens) and logs answered requests so that a redelivery reaching
another worker is answered once (the request log). All are store operations; the adapter
reaches them only through :class:`AdapterServices`, never through ApiContext's fields, tables
or SQL of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from bridge.store import (
    Batch,
    BatchFailed,
    Claim,
    RequestLog,
    SealedRecordState,
    SingletonJob,
    Store,
    request_key,
)

from ._context import ApiContext
from ._routing import Router

__all__ = ["AdapterServices", "Batch", "BatchFailed", "Claim"]


class AdapterServices:
    def __init__(self, store: Store, *, replay_window: int = 64, request_log_ttl: float = 600.0) -> None:
        self._store = store
        self.sealed = SealedRecordState(store, window=replay_window)
        self._log = RequestLog(store, ttl=request_log_ttl)

    @classmethod
    def of(cls, router: Router[Any], *, request_log_ttl: float = 600.0) -> AdapterServices | None:
        """The services behind a router built on an :class:`ApiContext`; None for any other."""
        ctx = router.context
        return cls(ctx.store, request_log_ttl=request_log_ttl) if isinstance(ctx, ApiContext) else None

    def group_commit(self) -> AbstractAsyncContextManager[Batch]:
        """Group commit: every handler this task runs inside the block shares ONE transaction.

        All or nothing (:meth:`bridge.store.Store.batch`): if ``batch.failed`` at the end, nothing
        was kept and the caller runs the requests again one by one.
        """
        return self._store.batch()

    async def claim_requests(self, requests: Sequence[tuple[str, str, bytes]]) -> list[Claim]:
        """Claim ``(device, request id, request digest)`` triples inside :meth:`group_commit`
        (:class:`bridge.store.RequestLog`)."""
        keys = [(request_key(device, rid), digest) for device, rid, digest in requests]
        return await self._log.claim(keys, time.time())

    async def record_replies(self, replies: Sequence[tuple[str, str, bytes]]) -> None:
        """Store ``(device, request id, reply)`` of the requests claimed in this :meth:`group_commit`."""
        await self._log.record([(request_key(device, rid), reply) for device, rid, reply in replies])

    def prune_job(self, every: float = 60.0) -> SingletonJob:
        """The job (run it in every worker: one of them prunes) deleting expired request-log rows."""

        async def prune_forever() -> None:
            while True:
                await self._log.prune(time.time())
                await asyncio.sleep(every)

        return SingletonJob(self._store, "request-log-prune", prune_forever, retry=max(1.0, every / 4))
