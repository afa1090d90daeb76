"""What a transport adapter needs from the server besides the routing table.

The MQTT adapter runs many requests in one transaction (group commit) and keeps sealed-record
state (replay windows, bound tokens). Both are store operations; the adapter reaches them only
through :class:`AdapterServices`, never through ApiContext's fields, tables or SQL of its own.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from bridge.store import Batch, BatchFailed, SealedRecordState, Store

from ._context import ApiContext
from ._routing import Router

__all__ = ["AdapterServices", "Batch", "BatchFailed"]


class AdapterServices:
    def __init__(self, store: Store, *, replay_window: int = 64) -> None:
        self._store = store
        self.sealed = SealedRecordState(store, window=replay_window)

    @classmethod
    def of(cls, router: Router[Any]) -> AdapterServices | None:
        """The services behind a router built on an :class:`ApiContext`; None for any other."""
        ctx = router.context
        return cls(ctx.store) if isinstance(ctx, ApiContext) else None

    def group_commit(self) -> AbstractAsyncContextManager[Batch]:
        """Group commit: every handler this task runs inside the block shares ONE transaction.

        All or nothing (:meth:`bridge.store.Store.batch`): if ``batch.failed`` at the end, nothing
        was kept and the caller runs the requests again one by one.
        """
        return self._store.batch()
