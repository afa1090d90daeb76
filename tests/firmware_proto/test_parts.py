"""Blocks sent as one-frame PART frames (SPEC.md §3.2): nodes keep the parts they got, NACK the
missing ones, a tampered part costs its block (re-requested, never installed), state is capped."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_proto import boot as bootmod
from firmware_proto.chunk_receiver import ChunkReceiver
from firmware_proto.part_nack import parts_nack
from firmware_proto.testing.flash import MemoryFlash
from tests.support.update import SERVER_KEY, Artifacts, all_final, harness
from wire.chunk_map import build_chunk_map
from wire.frames import NACK_PARTS, PARTS_ALL, Data, Nack, Part, decode, encode, nack_parts, part_bounds

ROOM = 100  # PART payload bytes per frame in these tests


def _running(h, node) -> str:  # type: ignore[no-untyped-def]
    booted = bootmod.read_boot(h.nodes[node].flash)
    info = bootmod.read_slot_info(h.nodes[node].flash, booted.active)
    return info.artifact_name if info else ""


def _parts_harness(artifacts: Artifacts, **kw):  # type: ignore[no-untyped-def]
    h = harness(artifacts, **kw)
    h.root_config = dataclasses.replace(h.root_config, part_room=ROOM)
    return h


def _record(h) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Every frame any member sends (the medium's taps see them all)."""
    seen: list[bytes] = []

    def tap(frame: bytes) -> bytes:
        seen.append(frame)
        return frame

    for name in [*h.nodes, *h.roots]:
        h.medium.taps.setdefault(name, tap)
    return seen


def test_lossy_group_completes_with_parts_and_part_nacks(artifacts: Artifacts) -> None:
    h = _parts_harness(artifacts, nodes=5, loss=0.1, fallback_timeout=1000)
    root = h.add_root("root")
    sent = _record(h)
    for n in h.nodes:
        h.learn(n, "d2", "a2", "mem://a2")
    h.run(600, stop=lambda: all_final(h))
    for n in h.nodes:
        assert h.service.final_status(n, "d2") == "success"
        assert _running(h, n) == "v2"
    assert h.service.range_bytes == {}  # no fallback
    frames = [decode(f) for f in sent]
    parts = [f for f in frames if isinstance(f, Part)]
    assert parts and not any(isinstance(f, Data) for f in frames)  # every block went as parts
    assert all(len(p.payload) <= ROOM for p in parts)
    part_nacks = [f for f in frames if isinstance(f, Nack) and f.flags & NACK_PARTS]
    assert part_nacks  # nodes named missing parts of partly held blocks
    # repair resent single parts, not whole blocks: some block went out with fewer than all parts
    per_block: dict[int, int] = {}
    for p in parts:
        per_block[p.block] = per_block.get(p.block, 0) + 1
    assert any(n % p.count for p in parts for n in [per_block[p.block]])
    # (this medium loses whole frames whatever their size: parts only pay off where a DATA datagram
    # is several link frames, as on 802.15.4 in mesh_sim; here the bound is loose)
    assert root.bytes_sent < 3 * len(artifacts.v2)


def test_tampered_part_fails_its_block_which_is_rerequested_never_installed(artifacts: Artifacts) -> None:
    h = _parts_harness(artifacts, nodes=3)
    h.add_root("root")
    flipped: list[int] = []

    def tamper(frame: bytes) -> bytes:
        f = decode(frame)
        if isinstance(f, Part) and f.block == 5 and f.index == 1 and not flipped:
            flipped.append(f.block)
            payload = bytearray(f.payload)
            payload[3] ^= 0x01
            return encode(Part(f.tag, f.block, f.index, f.count, bytes(payload)))
        return frame

    h.medium.taps["root"] = tamper
    for n in h.nodes:
        h.learn(n, "d2", "a2", "mem://a2")
    h.run(300, stop=lambda: all_final(h))
    assert flipped
    for n, rig in h.nodes.items():
        events = rig.events + (rig.agent.events if rig.agent else [])
        assert any("block 5 rejected: chunk hash mismatch" in e for e in events)
        assert h.service.final_status(n, "d2") == "success"
        assert _running(h, n) == "v2"
    assert h.service.range_bytes == {}  # the repair round re-sent the block's parts


def _receiver(max_partial: int = 256):  # type: ignore[no-untyped-def]
    image = bytes((i * 13 + 7) & 0xFF for i in range(4000))
    cmap = build_chunk_map(
        image, artifact_id="a", artifact_name="n", chunk_size=256, sequence=1, key=SERVER_KEY
    )
    rec = ChunkReceiver.start(MemoryFlash(8192), 1, cmap.head)
    rec.max_partial = max_partial
    return rec, cmap, image


def _parts(payload: bytes, count: int) -> list[bytes]:
    return [payload[slice(*part_bounds(len(payload), count, j))] for j in range(count)]


def test_receiver_rebuilds_verifies_and_forgets_a_tampered_block() -> None:
    rec, cmap, image = _receiver()
    head = cmap.head
    for page in range(head.page_count):
        assert rec.accept_block(page, cmap.page_payload(page)).accepted
    block = head.page_count + 2
    good = image[2 * 256 : 3 * 256]
    parts = _parts(good, 3)
    assert rec.accept_part(block, 0, 3, parts[0]).reason == "part kept"
    assert rec.missing_parts(block) == 0x6000  # parts 1 and 2 missing
    assert rec.accept_part(block, 0, 3, parts[0]).reason == "duplicate"
    assert rec.accept_part(block, 1, 3, parts[1][:-1]).reason == "part has a wrong length"
    assert rec.accept_part(block, 1, 3, parts[1]).reason == "part kept"
    bad = bytes([parts[2][0] ^ 0x80]) + parts[2][1:]
    assert rec.accept_part(block, 2, 3, bad).reason == "chunk hash mismatch"
    assert block in rec.missing() and rec.missing_parts(block) == PARTS_ALL  # every part forgotten
    for j, p in enumerate(parts):
        result = rec.accept_part(block, j, 3, p)
    assert result.accepted and block not in rec.missing()
    assert rec.block_payload(block) == good


def test_receiver_parts_of_a_page_and_a_chunk_before_its_page() -> None:
    rec, cmap, image = _receiver()
    head = cmap.head
    chunk_block = head.page_count  # chunk 0: its page is not verified yet, it is parked
    for j, p in enumerate(_parts(image[:256], 4)):
        result = rec.accept_part(chunk_block, j, 4, p)
    assert result.reason == "page not verified yet"
    page = cmap.page_payload(0)
    for j, p in enumerate(_parts(page, 5)):
        result = rec.accept_part(0, j, 5, p)
    assert result.accepted
    assert 0 not in rec.missing() and chunk_block not in rec.missing()  # the parked chunk verified


def test_receiver_caps_partly_held_blocks_and_restarts_on_another_count() -> None:
    rec, cmap, image = _receiver(max_partial=2)
    first = cmap.head.page_count
    for i in range(2):
        assert rec.accept_part(first + i, 0, 2, image[i * 256 : i * 256 + 128]).reason == "part kept"
    assert rec.accept_part(first + 2, 0, 2, image[512 : 512 + 128]).reason == "too many partly held blocks"
    assert len(rec.partial) == 2
    # the same block cut in 4: the parts kept for a cut in 2 are dropped
    assert rec.accept_part(first, 0, 4, image[:64]).reason == "part kept"
    assert rec.missing_parts(first) == 0x7000


def test_nack_names_missing_parts_and_is_cut_after_the_cap() -> None:
    rec, cmap, image = _receiver()
    head = cmap.head
    for page in range(head.page_count):
        rec.accept_block(page, cmap.page_payload(page))
    first = head.page_count
    chunks = head.chunk_count
    for c in range(chunks):  # part 0 of every chunk
        assert (
            rec.accept_part(first + c, 0, 2, _parts(image[c * 256 : (c + 1) * 256], 2)[0]).reason
            == "part kept"
        )
    base, bits = rec.bitmap.nack(128)
    plain = Nack(head.stream_id(), 1, 0, base, bits)
    frame, everything = parts_nack(rec, plain, False, 8)
    assert frame.flags & NACK_PARTS
    decoded = decode(encode(frame))
    asks = nack_parts(decoded)  # type: ignore[arg-type]
    assert asks == {first + c: 0x4000 for c in range(8)}  # 8 named, the bitmap cut before the 9th
    assert everything == {first + c: 0x4000 for c in range(chunks)}  # cut: all it misses, for suppression


def test_power_cut_forgets_parts_kept_and_the_block_is_asked_for_whole() -> None:
    rec, cmap, image = _receiver()
    head = cmap.head
    for page in range(head.page_count):
        rec.accept_block(page, cmap.page_payload(page))
    block = head.page_count + 1
    assert rec.accept_part(block, 0, 2, image[256:384]).reason == "part kept"
    assert rec.missing_parts(block) == 0x4000
    after = ChunkReceiver(rec.flash, 1, head, restore=True)  # what a reboot reads back from flash
    assert block in after.missing() and after.missing_parts(block) == PARTS_ALL
    assert after.accept_part(block, 1, 2, image[384:512]).reason == "part kept"  # part 0 is not claimed
    assert after.accept_part(block, 0, 2, image[256:384]).accepted


_BURSTS = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3, 4]),  # a page, chunks (3 and 4: the page of 3's leaves is page 0)
        st.sampled_from([3, 3, 3, 4, 1]),  # how the block is cut (usually 3)
        st.lists(
            st.tuples(st.integers(0, 4), st.sampled_from(["good", "good", "good", "short", "flipped"])),
            min_size=1,
            max_size=6,
        ),
    ),
    max_size=14,
)


@pytest.mark.parametrize("flash_kind", ["memory", "shared-slot"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bursts=_BURSTS, max_partial=st.sampled_from([1, 2, 256]), pages_first=st.booleans())
def test_accept_parts_gives_what_accept_part_gives_for_each(  # type: ignore[no-untyped-def]
    flash_kind: str, bursts, max_partial: int, pages_first: bool
) -> None:
    """A burst stored in one call (contiguous parts in one flash write) ends in the same results,
    bitmap, parts kept, parked chunks and slot bytes as the same parts one call each: duplicates,
    wrong lengths, other cuts, tampered parts, the cap on partly held blocks included."""
    from mesh_sim.flash import SharedSlotFlash

    def receiver() -> ChunkReceiver:
        image = bytes((i * 13 + 7) & 0xFF for i in range(4000))
        cmap = build_chunk_map(
            image, artifact_id="a", artifact_name="n", chunk_size=256, sequence=1, key=SERVER_KEY
        )
        flash = MemoryFlash(8192) if flash_kind == "memory" else SharedSlotFlash(8192, {})
        rec = ChunkReceiver.start(flash, 1, cmap.head)
        rec.max_partial = max_partial
        return rec

    one, each = receiver(), receiver()
    image = bytes((i * 13 + 7) & 0xFF for i in range(4000))
    cmap = build_chunk_map(
        image, artifact_id="a", artifact_name="n", chunk_size=256, sequence=1, key=SERVER_KEY
    )
    pages = cmap.head.page_count
    assert pages < 3  # blocks 3 and 4 are chunks
    if pages_first:  # chunks are then checked against their leaves as their last part arrives
        for page in range(pages):
            assert one.accept_block(page, cmap.page_payload(page)).accepted
            assert each.accept_block(page, cmap.page_payload(page)).accepted
    for block, count, picks in bursts:
        payload = (
            cmap.page_payload(block)
            if block < pages
            else image[(block - pages) * 256 : (block - pages + 1) * 256]
        )
        cut = _parts(payload, count)
        parts = []
        for j, how in picks:
            data = cut[j] if j < count else b"x"
            if how == "short":
                data = data[:-1]
            elif how == "flipped" and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            parts.append((j, count, data))
        got = one.accept_parts(block, parts)
        want = [each.accept_part(block, j, c, d) for j, c, d in parts]
        assert got == want
        assert one.bitmap.to_bytes() == each.bitmap.to_bytes()
        assert {b: (s.count, s.held) for b, s in one.partial.items()} == {
            b: (s.count, s.held) for b, s in each.partial.items()
        }
        assert one.parked == each.parked and one.chunks_verified == each.chunks_verified
        assert one.flash.read_slot(1, 0, 8192) == each.flash.read_slot(1, 0, 8192)
