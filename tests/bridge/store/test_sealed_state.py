"""bridge.store.SealedRecordState: the sealed-record state the MQTT adapter keeps through the store
(replay windows by compare-and-swap, bound tokens), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.store import SealedRecordState, Store
from tests.support.mender import Db
from wire.sealed import ReplayWindow

_devices = itertools.count()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.lists(st.integers(0, 200), max_size=30),
    second=st.lists(st.integers(0, 200), max_size=30),
)
def test_two_bridges_accept_a_sequence_number_once(db: Db, first: list[int], second: list[int]) -> None:
    """Two bridges (two stores on one database) racing on one device's window: every sequence
    number is accepted at most once, and the result is what one window would have accepted."""

    async def run() -> None:
        stores = [Store.open(db.url, schema=db.schema) for _ in range(2)]
        try:
            await stores[0].migrate()
            a, b = (SealedRecordState(s, window=64) for s in stores)
            device = f"node-{next(_devices)}"
            got_a, got_b = await asyncio.gather(
                a.accept_sequence_numbers(device, first), b.accept_sequence_numbers(device, second)
            )
            accepted = [s for s, ok in zip(first, got_a, strict=True) if ok]
            accepted += [s for s, ok in zip(second, got_b, strict=True) if ok]
            assert len(accepted) == len(set(accepted))  # never twice
            # whichever order the two transactions took, one window alone would agree
            orders = []
            for batches in ((first, second), (second, first)):
                window, out = ReplayWindow(size=64), []
                for seqs in batches:
                    for seq in seqs:
                        if window.check(seq):
                            window.accept(seq)
                            out.append(seq)
                orders.append(sorted(out))
            assert sorted(accepted) in orders
            # and a replay of everything is refused afterwards
            assert not any(await a.accept_sequence_numbers(device, accepted))
        finally:
            for store in stores:
                await store.close()

    asyncio.run(run())


def test_bound_token_is_replaced_and_read_with_the_batch(db: Db) -> None:
    async def run() -> None:
        store = Store.open(db.url, schema=db.schema)
        try:
            await store.migrate()
            state = SealedRecordState(store)
            assert await state.bound_token("node-t") is None
            await state.bind_token("node-t", "first")
            await state.bind_token("node-t", "second")
            assert await state.bound_token("node-t") == "second"
            fresh, tokens = await state.accept_batch({"node-t": [5, 5, 6], "node-u": [1]})
            assert fresh == {"node-t": [True, False, True], "node-u": [True]}
            assert tokens == {"node-t": "second", "node-u": None}
        finally:
            await store.close()

    asyncio.run(run())
