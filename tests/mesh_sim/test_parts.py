"""mesh_sim building blocks the scale work changed: the shared-slot flash read path and the
indexed in-memory broker of the control plane."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_proto.testing.flash import MemoryFlash
from mesh_sim.control import IndexedBroker
from mesh_sim.flash import SharedSlotFlash
from mqttsn import BrokerConnect, BrokerDisconnect, BrokerSubscribe, BrokerUnsubscribe


@pytest.mark.parametrize("seed", range(4))
def test_slot_reads_match_a_plain_byte_array(seed: int) -> None:
    """Overlapping writes (same offsets too) trim older pieces; reads join pieces, erased gaps."""
    rng = random.Random(seed)
    for _ in range(2000):
        flash = SharedSlotFlash(1000, {})
        ref = bytearray(b"\xff" * 1000)
        for _ in range(rng.randint(0, 8)):
            off = rng.randint(0, 990)
            length = rng.randint(0, 1000 - off)
            if rng.random() < 0.7:  # chunk-aligned writes, like a streamed image
                off, length = off // 100 * 100, min(100, 1000 - off // 100 * 100)
            data = rng.randbytes(length)
            flash.write_slot(0, off, data)
            ref[off : off + length] = data
        start = rng.randint(0, 999)
        if rng.random() < 0.3:
            start = start // 100 * 100
        length = rng.randint(0, 1000 - start)
        assert flash.read_slot(0, start, length) == bytes(ref[start : start + length])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 15), st.integers(1, 16), st.sampled_from([None, 0x00, 0x5A])),
        max_size=24,
    ),
    st.integers(0, 15),
    st.integers(0, 16),
)
def test_any_writes_same_offsets_included_read_like_memory_flash(
    writes: list[tuple[int, int, int | None]], start: int, parts: int
) -> None:
    """Writes in 64-byte units at any offsets, the same offset again with a shorter or longer
    piece included (a burst's joined parts, then one part of it again), reads of ranges that are
    whole pieces (merged into one) between them: every read equals the product's plain
    byte-array flash, and pieces never overlap."""
    flash = SharedSlotFlash(32 * 64, {})
    ref = MemoryFlash(32 * 64)
    for n, (at, units, fill) in enumerate(writes):
        data = bytes([fill if fill is not None else n]) * (units * 64)
        flash.write_slot(0, at * 64, data)
        ref.write_slot(0, at * 64, data)
        length = min(parts * 64, 32 * 64 - start * 64)  # a range read (whole pieces: merged)
        assert flash.read_slot(0, start * 64, length) == ref.read_slot(0, start * 64, length)
        assert flash.read_slot(0, 0, 32 * 64) == ref.read_slot(0, 0, 32 * 64)
        starts = flash._starts[0]
        assert starts == sorted(flash._slots[0])
        assert all(a + len(flash._slots[0][a]) <= b for a, b in itertools.pairwise(starts))
    length = min(parts * 64, 32 * 64 - start * 64)
    assert flash.read_slot(0, start * 64, length) == ref.read_slot(0, start * 64, length)


def test_a_shorter_write_at_a_piece_start_keeps_the_piece_tail() -> None:
    flash = SharedSlotFlash(1000, {})
    flash.write_slot(0, 100, b"a" * 300)  # a run of parts written at once
    flash.write_slot(0, 100, b"b" * 100)  # one part of it again
    assert flash.read_slot(0, 100, 300) == b"b" * 100 + b"a" * 200


@pytest.mark.parametrize("seed", range(4))
def test_parts_in_any_order_with_gaps_read_like_a_byte_array(seed: int) -> None:
    """Parts of blocks, in any order, some missing: reads by bisection, erased bytes in the gaps."""
    rng = random.Random(seed)
    for _ in range(300):
        flash = SharedSlotFlash(2000, {})
        ref = bytearray(b"\xff" * 2000)
        cuts = sorted({0, 2000, *(rng.randint(1, 1999) for _ in range(rng.randint(0, 30)))})
        pieces = [(a, b) for a, b in itertools.pairwise(cuts) if rng.random() < 0.8]
        rng.shuffle(pieces)
        for a, b in pieces:
            data = rng.randbytes(b - a)
            flash.write_slot(0, a, data)
            ref[a:b] = data
            for _ in range(3):
                start = rng.choice(cuts[:-1]) if rng.random() < 0.5 else rng.randint(0, 1999)
                length = rng.randint(0, 2000 - start)
                assert flash.read_slot(0, start, length) == bytes(ref[start : start + length])
        starts = flash._starts[0]
        assert all(a + len(flash._slots[0][a]) <= b for a, b in itertools.pairwise(starts))  # no overlap


def test_whole_streamed_image_reads_back_joined() -> None:
    image = random.Random(1).randbytes(10_000)
    flash = SharedSlotFlash(12_000, {})
    for off in range(0, len(image), 1430):
        flash.write_slot(1, off, image[off : off + 1430])
    assert flash.read_slot(1, 0, len(image)) == image
    assert flash.read_slot(1, 0, 12_000) == image + b"\xff" * 2000  # the unwritten tail reads erased
    with pytest.raises(ValueError):
        flash.read_slot(1, 11_000, 2000)


class _GatewayStub:
    """Records what the broker hands the gateway."""

    def __init__(self) -> None:
        self.delivered: list[tuple[object, str, int]] = []

    def broker_message(
        self, conn: object, topic: str, payload: bytes, qos: int, retain: bool, now: float
    ) -> None:
        self.delivered.append((conn, topic, qos))

    def broker_connected(self, *args: object) -> None:
        pass

    def broker_subscribed(self, *args: object) -> None:
        pass

    def broker_unsubscribed(self, *args: object) -> None:
        pass


def test_indexed_broker_routes_only_to_subscribers() -> None:
    gw = _GatewayStub()
    broker = IndexedBroker()
    run = broker._run
    for conn in ("a", "b", "c"):
        run(gw, BrokerConnect(conn, f"id-{conn}", 60, True, None), 0.0)  # type: ignore[arg-type]
    run(gw, BrokerSubscribe("b", "meshota/#", 1, 1), 0.0)  # type: ignore[arg-type]
    run(gw, BrokerSubscribe("c", "other/+", 2, 1), 0.0)  # type: ignore[arg-type]
    broker.route(gw, "meshota/want/x", b"1", 2, 0.0)  # type: ignore[arg-type]
    assert gw.delivered == [("b", "meshota/want/x", 1)]  # QoS min(publish, subscription)
    run(gw, BrokerUnsubscribe("b", "meshota/#", 2), 0.0)  # type: ignore[arg-type]
    broker.route(gw, "meshota/want/x", b"1", 1, 0.0)  # type: ignore[arg-type]
    run(gw, BrokerDisconnect("c"), 0.0)  # type: ignore[arg-type]
    broker.route(gw, "other/y", b"1", 1, 0.0)  # type: ignore[arg-type]
    assert gw.delivered == [("b", "meshota/want/x", 1)]


def test_a_block_read_back_whole_becomes_one_shared_piece() -> None:
    pool: dict[bytes, bytes] = {}
    flash = SharedSlotFlash(4096, pool)
    block = bytes(range(256)) * 6
    for at in range(0, len(block), 96):  # written part by part
        flash.write_slot(0, 1024 + at, block[at : at + 96])
    assert len(flash._starts[0]) == 16
    assert flash.read_slot(0, 1024, len(block)) == block
    assert flash._starts[0] == [1024] and flash._slots[0][1024] is pool[block]
    assert flash.read_slot(0, 1024, len(block)) is pool[block]  # a lookup now
    assert flash.read_slot(0, 1000, 100) == b"\xff" * 24 + block[:76]  # a gap: not merged
    assert flash._starts[0] == [1024]


def test_nodes_holding_the_same_pieces_join_them_once() -> None:
    """Flashes sharing a pool and a join memo: the second node reading back the same shared
    pieces whole gets the first one's joined object (no join, no hashing of the whole); other
    pieces (one byte differs) join to their own bytes; a node's own bytes are always what it
    wrote."""
    pool: dict[bytes, bytes] = {}
    joins: dict[tuple[int | bytes, ...], tuple[tuple[bytes, ...], bytes]] = {}
    image = bytes(range(256)) * 16
    tail = b"end"  # a small piece (< 64 B, not pooled) in the key by value
    flashes = [SharedSlotFlash(8192, pool, joins) for _ in range(3)]
    for n, flash in enumerate(flashes):
        data = image if n < 2 else image[:100] + b"\x00" + image[101:]
        for at in range(0, len(data), 512):
            flash.write_slot(0, at, bytes(data[at : at + 512]))
        flash.write_slot(0, len(data), bytes(tail))
    whole = len(image) + len(tail)
    a, b, c = (f.read_slot(0, 0, whole) for f in flashes)
    assert a == b == image + tail and a is b  # joined once, shared
    assert c == image[:100] + b"\x00" + image[101:] + tail and c != a
    assert len(joins) == 2
    flashes[1].write_slot(0, 0, b"\x01" * 64)  # node 1 writes over its copy: node 0's is untouched
    assert flashes[0].read_slot(0, 0, whole) == image + tail
    assert flashes[1].read_slot(0, 0, 64) == b"\x01" * 64
    for _ in range(2):  # the memo's keys keep their pieces alive: ids are never reused into a hit
        SharedSlotFlash(8192, {}, joins).read_slot(0, 0, 100)
    assert flashes[0].read_slot(0, 0, whole) is a
