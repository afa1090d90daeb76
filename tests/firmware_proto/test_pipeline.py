"""Pipelined forwarding (issue 21): a relay forwards blocks it verified while it still downloads,
and nothing else."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_proto.block_source import ImageSource, ReceiverSource
from firmware_proto.chunk_receiver import ChunkReceiver
from firmware_proto.group_forwarder import GroupRelay
from firmware_proto.group_link import LinkOutbox
from firmware_proto.group_stream import RootConfig
from firmware_proto.testing.flash import MemoryFlash
from wire.chunk_map import build_chunk_map
from wire.frames import (
    NACK_DONE,
    NACK_NEED_HEAD,
    Data,
    Head,
    Nack,
    Part,
    Poll,
    Want,
    decode,
    encode,
    nack_bitmap,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
IMAGE = bytes((i * 7 + 3) % 251 for i in range(20_000))
CHILD = "child"


def _map():  # type: ignore[no-untyped-def]
    return build_chunk_map(IMAGE, artifact_id="a1", artifact_name="fw-2", chunk_size=256, sequence=5, key=KEY)


def _frames(out: LinkOutbox) -> list[object]:
    return [decode(f) for _dst, f in out.drain()]


def _run(relay: GroupRelay, t: float) -> float:
    t2 = relay.next_timer()
    assert t2 is not None
    t = max(t, t2)
    relay.handle_timer(t)
    return t


def _nack_all(relay: GroupRelay, sid: bytes, rnd: int, blocks: int, t: float) -> None:
    base, bits = nack_bitmap(list(range(blocks)), 128)
    relay.receive(encode(Nack(sid, rnd, 0, base, bits)), CHILD, t)


def test_relay_forwards_only_what_it_verified_while_downloading() -> None:
    cmap = _map()
    head = cmap.head
    sid = head.stream_id()
    full = ImageSource(IMAGE, cmap)
    flash = MemoryFlash(64 * 1024)
    rec = ChunkReceiver.start(flash, 1, head)
    # the node holds page 0 and its first 3 chunks; chunk 4 came tampered; page 1 not yet
    assert rec.accept_block(0, full.payload(0)).accepted
    for b in range(head.page_count, head.page_count + 3):
        assert rec.accept_block(b, full.payload(b)).accepted
    bad = head.page_count + 3
    assert not rec.accept_block(bad, b"\x00" * 256).accepted
    last = head.block_count - 1  # a chunk of a page not verified yet: parked, not held
    assert head.page_count > 1 and (last - head.page_count) // head.leaves_per_page > 0
    assert not rec.accept_block(last, full.payload(last)).accepted

    out = LinkOutbox()
    relay = GroupRelay(flash, out, RootConfig(collection_window=0.5, reply_window_ms=500))
    relay.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 0.0)
    t = _run(relay, 0.0)  # window closes: fetch waits for the node's download
    assert relay.busy and out.drain() == []
    relay.follow(ReceiverSource(rec), t)
    t = _run(relay, t)  # HEAD + POLL from the blocks it holds
    assert any(isinstance(f, Poll) for f in _frames(out))
    _nack_all(relay, sid, 0, head.block_count, t)
    t = _run(relay, t + 0.5)
    data: list[Data] = []
    for _ in range(20):
        data += [f for f in _frames(out) if isinstance(f, Data)]
        if relay.next_timer() is None:
            break
        t = _run(relay, t)
    # the round sent what was asked and held; the source has not grown since that POLL, so no
    # timer and no further POLL until it does (a POLL now could only repeat that round)
    assert relay.next_timer() is None and out.drain() == []
    held = [0, *range(head.page_count, head.page_count + 3)]
    # nothing unverified (tampered, parked, a page not verified) went out
    assert sorted({f.block for f in data}) == held
    assert all(f.payload == full.payload(f.block) for f in data)
    sent = [f.block for f in data]
    # the download goes on: the next rounds forward the newly verified blocks, not the old ones
    for b in range(head.block_count):
        rec.accept_block(b, full.payload(b))
    assert ReceiverSource(rec).complete
    assert relay.next_timer() is not None  # it grew: poll again
    for _ in range(200):
        frames = _frames(out)
        polls = [f for f in frames if isinstance(f, Poll)]
        sent += [f.block for f in frames if isinstance(f, Data)]
        if polls:
            missing = sorted(set(range(head.block_count)) - set(sent))
            if not missing:
                break
            base, bits = nack_bitmap(missing, 128)
            relay.receive(encode(Nack(sid, polls[-1].round, 0, base, bits)), CHILD, t)
        t = _run(relay, t)
    assert set(sent) == set(range(head.block_count))


def test_forwarded_payloads_are_the_signed_blocks() -> None:
    cmap = _map()
    full = ImageSource(IMAGE, cmap)
    flash = MemoryFlash(64 * 1024)
    rec = ChunkReceiver.start(flash, 1, cmap.head)
    for b in range(cmap.head.block_count):
        assert rec.accept_block(b, full.payload(b)).accepted
    src = ReceiverSource(rec)
    assert src.complete
    assert all(src.payload(b) == full.payload(b) for b in range(cmap.head.block_count))
    # after a power cut the receiver restores its bitmap but not the pages' paths: pages are not
    # held (never forwarded from a guess), chunks still are
    again = ChunkReceiver(flash, 1, cmap.head, restore=True)
    src2 = ReceiverSource(again)
    assert not src2.holds(0) and src2.holds(cmap.head.page_count)


def _following(config: RootConfig) -> tuple[ChunkReceiver, LinkOutbox, GroupRelay, float]:
    """A relay whose node holds page 0, asked by CHILD, following the node's download (its first
    HEAD and POLL sent); (the node's receiver, what the relay sent, the relay, the time)."""
    rec = ChunkReceiver.start(MemoryFlash(64 * 1024), 1, _map().head)
    assert rec.accept_block(0, ImageSource(IMAGE, _map()).payload(0)).accepted
    out = LinkOutbox()
    relay = GroupRelay(MemoryFlash(64 * 1024), out, config)
    relay.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 0.0)
    t = _run(relay, 0.0)
    relay.follow(ReceiverSource(rec), t)
    return rec, out, relay, _run(relay, t)


def test_following_relay_polls_again_when_its_source_or_group_grows() -> None:
    cmap = _map()
    head = cmap.head
    sid = head.stream_id()
    full = ImageSource(IMAGE, cmap)
    rec, out, relay, t = _following(RootConfig(collection_window=0.5, reply_window_ms=500, follow_push=False))

    def polls_until_idle(t: float, need_head: bool = False) -> tuple[int, int, float]:
        polls = heads = 0
        for _ in range(50):
            for f in _frames(out):
                heads += isinstance(f, Head)
                if isinstance(f, Poll):
                    polls += 1
                    if need_head:  # a child that has no head: NEED_HEAD (asks for everything)
                        relay.receive(encode(Nack(sid, f.round, NACK_NEED_HEAD, 0, b"")), CHILD, t)
                    else:
                        _nack_all(relay, sid, f.round, head.block_count, t)
            if relay.next_timer() is None:
                return polls, heads, t
            t = _run(relay, t + 0.1)
        raise AssertionError("the relay never stopped polling a source that does not grow")

    # the first POLL comes after the HEAD; the round sends what was asked and held, then quiet
    assert polls_until_idle(t)[:2] == (1, 1)
    # a new block verified: one more POLL (and its round), no HEAD (the children have it), quiet
    assert rec.accept_block(head.page_count, full.payload(head.page_count)).accepted
    polls, heads, t = polls_until_idle(t)
    assert (polls, heads) == (1, 0)
    # a new member asked: a POLL after a HEAD again
    relay.receive(encode(Want("a1", "fw-2", "mem://a1")), "child-2", t)
    polls, heads, t = polls_until_idle(t)
    assert (polls, heads) == (1, 1)
    # a child that lost the head says so: the HEAD goes again before that round's blocks
    assert rec.accept_block(head.page_count + 1, full.payload(head.page_count + 1)).accepted
    polls, heads, t = polls_until_idle(t, need_head=True)
    assert (polls, heads) == (1, 1)


def test_following_relay_pushes_what_was_asked_as_it_verifies_it() -> None:
    """follow_push: between POLLs (two reply windows apart at least) each block the last POLL's
    NACKs asked for goes out as soon as the relay verified it, with no POLL or NACK of its own;
    a block nobody asked for is not pushed; a new member or the wait's end brings a POLL again."""
    cmap = _map()
    head = cmap.head
    sid = head.stream_id()
    full = ImageSource(IMAGE, cmap)
    rec, out, relay, t = _following(RootConfig(collection_window=0.5, reply_window_ms=500))
    first = _frames(out)
    assert [type(f) for f in first] == [Head, Poll]
    polled_at = t
    # the child asks for every block but one chunk of page 0 (it overheard that one elsewhere)
    c0, c1, c2 = head.page_count, head.page_count + 1, head.page_count + 2
    base, bits = nack_bitmap([b for b in range(head.block_count) if b != c1], 128)
    relay.receive(encode(Nack(sid, first[1].round, 0, base, bits)), CHILD, t)
    t = _run(relay, t + 0.5)
    assert [f.block for f in _frames(out) if isinstance(f, Data)] == [0]  # the round: what it held

    def step(t: float) -> tuple[list[object], float]:
        """Run the timers due by ``t`` (or the next one, if later), as a driver would."""
        due = relay.next_timer()
        if due is None:
            return [], t
        t = max(t, due)
        while (due := relay.next_timer()) is not None and due <= t:
            relay.handle_timer(t)
        return _frames(out), t

    # within the wait (two reply windows): a verified block that was asked for goes out at once,
    # no POLL
    assert rec.accept_block(c0, full.payload(c0)).accepted
    sent, t = step(t + 0.1)
    assert [type(f) for f in sent] == [Data] and sent[0].block == c0
    assert relay.next_timer() is None  # nothing more held: it waits for the source
    assert t < polled_at + 1.0
    # a block it verified that nobody asked for is not pushed
    assert rec.accept_block(c1, full.payload(c1)).accepted
    sent, t = step(t + 0.05)
    assert sent == [] and relay.next_timer() is None
    # past the wait, the source grows: a POLL (the children say what they lost meanwhile)
    assert rec.accept_block(c2, full.payload(c2)).accepted
    sent, t = step(polled_at + 1.1)
    assert [type(f) for f in sent] == [Poll]
    # a new member: after the wait, a HEAD and a POLL for it
    relay.receive(encode(Nack(sid, sent[0].round, 0, base, bits)), CHILD, t)
    sent, t = step(t + 0.5)
    relay.receive(encode(Want("a1", "fw-2", "mem://a1")), "child-2", t)
    seen: list[object] = []
    for _ in range(20):
        got, t = step(t + 0.2)
        seen += got
        if any(isinstance(f, Poll) for f in got):
            break
    assert any(isinstance(f, Head) for f in seen) and isinstance(seen[-1], Poll)


def test_with_parts_a_following_relay_does_not_push_by_default() -> None:
    """``follow_push`` None (the default) pushes only where blocks go whole: with PART frames a
    verified block waits for the next POLL (a lost part's repair would wait two windows a hop)."""
    cmap = _map()
    head = cmap.head
    sid = head.stream_id()
    full = ImageSource(IMAGE, cmap)
    for push, expect in ((None, False), (True, True)):
        config = RootConfig(collection_window=0.5, reply_window_ms=500, part_room=64, follow_push=push)
        rec, out, relay, t = _following(config)
        poll = _frames(out)[-1]
        assert isinstance(poll, Poll)
        _nack_all(relay, sid, poll.round, head.block_count, t)
        t = _run(relay, t + 0.5)
        _frames(out)  # the round
        c0 = head.page_count
        assert rec.accept_block(c0, full.payload(c0)).accepted
        due = relay.next_timer()
        assert due is not None
        t = max(t + 0.1, due)
        while (due := relay.next_timer()) is not None and due <= t:
            relay.handle_timer(t)
        pushed = [f for f in _frames(out) if isinstance(f, (Part, Data))]
        assert bool(pushed) is expect
        assert all(f.block == c0 for f in pushed)


def test_a_held_image_is_streamed_after_the_held_window_without_a_fetch() -> None:
    """A group for an artifact the core holds (``hold``: the image the node runs, e.g. a root after
    its own install reboot) starts after ``held_window``, not a whole collection window, and fetches
    nothing; an artifact it does not hold still waits the collection window and is fetched."""
    from firmware_proto.group_stream import FetchArtifact, GroupStreamRoot

    cmap = _map()
    config = RootConfig(collection_window=600.0, held_window=5.0)
    out = LinkOutbox()
    root = GroupStreamRoot(out, config)
    root.hold(ImageSource(IMAGE, cmap))
    root.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 100.0)
    assert root.next_timer() == 105.0
    root.handle_timer(105.0)
    assert root.actions() == [] and root.fetches == 0  # streamed from what it holds
    sent = _frames(out)
    assert isinstance(sent[0], Head) and isinstance(sent[1], Poll)
    assert sent[0].stream_id == cmap.head.stream_id()
    # another artifact than the one held: the whole window
    other = GroupStreamRoot(LinkOutbox(), config)
    other.hold(ImageSource(IMAGE, cmap))
    other.receive(encode(Want("a2", "fw-3", "mem://a2")), CHILD, 200.0)
    assert other.next_timer() == 800.0
    # a held window longer than the collection window is capped by it
    short = GroupStreamRoot(LinkOutbox(), RootConfig(collection_window=2.0, held_window=5.0))
    short.hold(ImageSource(IMAGE, cmap))
    short.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 0.0)
    assert short.next_timer() == 2.0
    # without hold: the collection window and one fetch
    plain = GroupStreamRoot(LinkOutbox(), config)
    plain.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 0.0)
    assert plain.next_timer() == 600.0
    plain.handle_timer(600.0)
    assert plain.actions() == [FetchArtifact("a1", "mem://a1", config.chunk_size)]


def test_hold_takes_only_a_whole_image() -> None:
    import pytest

    from firmware_proto.group_stream import GroupStreamRoot

    cmap = _map()
    rec = ChunkReceiver.start(MemoryFlash(64 * 1024), 1, cmap.head)
    with pytest.raises(ValueError):
        GroupStreamRoot(LinkOutbox(), RootConfig()).hold(ReceiverSource(rec))


def test_a_member_that_asked_and_never_said_done_gets_twice_the_quiet_polls() -> None:
    """END by silence (``quiet_rounds`` polls nobody NACKed) comes after twice as many polls while
    a member whose last NACK asked for blocks has not said DONE (its NACKs may be the ones lost);
    at once when every member said DONE."""
    from firmware_proto.group_stream import GroupStreamRoot, StreamFinished

    cmap = _map()
    sid = cmap.head.stream_id()

    def polls_to_end(nack_first: bool, done_after: bool) -> int:
        out = LinkOutbox()
        root = GroupStreamRoot(out, RootConfig(collection_window=1.0, reply_window_ms=500, quiet_rounds=2))
        root.hold(ImageSource(IMAGE, cmap))
        root.receive(encode(Want("a1", "fw-2", "mem://a1")), CHILD, 0.0)
        t, polls = 0.0, 0
        for _ in range(40):
            due = root.next_timer()
            assert due is not None
            t = max(t, due)
            root.handle_timer(t)
            for f in _frames(out):
                if isinstance(f, Poll):
                    polls += 1
                    if polls == 1 and nack_first:  # it asks for block 3, then goes silent
                        base, bits = nack_bitmap([3], 128)
                        root.receive(encode(Nack(sid, f.round, 0, base, bits)), CHILD, t)
                    elif polls == 2 and done_after:
                        root.receive(encode(Nack(sid, f.round, NACK_DONE, 0, b"")), CHILD, t)
            finished = [a for a in root.actions() if isinstance(a, StreamFinished)]
            if finished:
                assert finished[0].complete
                return polls
        raise AssertionError("the stream never ended")

    assert polls_to_end(nack_first=False, done_after=False) == 2  # nobody ever asked: 2 quiet polls
    assert polls_to_end(nack_first=True, done_after=False) == 1 + 4  # the round's POLL, then 4
    assert polls_to_end(nack_first=True, done_after=True) == 2  # DONE: over after that POLL
