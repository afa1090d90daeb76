"""The agent's NACK bitmap and suppression test on whole integers equal the list/set forms."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_proto.flash_store import ChunkBitmap
from wire.frames import Nack, missing_from_nack, nack_bitmap, nack_covers

held_sets = st.integers(1, 1500).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1))))


def _bitmap(size: int, held: set[int]) -> ChunkBitmap:
    bm = ChunkBitmap(size)
    for i in held:
        bm.add(i)
    return bm


@given(held_sets, st.sampled_from([1, 3, 128]))
def test_bitmap_nack_equals_the_list_form(case: tuple[int, set[int]], max_bytes: int) -> None:
    bm = _bitmap(*case)
    assert bm.missing() == [i for i in range(case[0]) if i not in case[1]]
    assert bm.nack(max_bytes) == nack_bitmap(bm.missing(), max_bytes)


@given(held_sets, st.sets(st.integers(0, 1499)), st.sampled_from([2, 128]))
def test_nack_covers_equals_set_inclusion(
    case: tuple[int, set[int]], other: set[int], max_bytes: int
) -> None:
    size, held = case
    mine = Nack(bytes(8), 0, 0, *_bitmap(size, held).nack(max_bytes))
    theirs = Nack(bytes(8), 0, 0, *_bitmap(size, {i for i in other if i < size}).nack(max_bytes))
    assert nack_covers(theirs, mine) == (missing_from_nack(mine) <= missing_from_nack(theirs))
    assert nack_covers(mine, mine)


@given(
    size=st.integers(1, 300),
    held=st.sets(st.integers(0, 299)),
    asked=st.sets(st.integers(-5, 320)),
)
def test_set_of_is_the_asked_indexes_the_bitmap_holds(size: int, held: set[int], asked: set[int]) -> None:
    bm = ChunkBitmap(size)
    for i in held:
        if i < size:
            bm.add(i)
    assert all((i in bm) == (i in held and 0 <= i < size) for i in range(-3, size + 3))
    assert bm.set_of(asked) == sorted(i for i in asked if i in held and 0 <= i < size)
