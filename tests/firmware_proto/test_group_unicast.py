"""Small cells get link-ACKed unicast DATA; END(complete) to a node left out of the group; codec memos."""

from __future__ import annotations

import random

from firmware_proto import boot as bootmod
from firmware_proto.group_link import LinkOutbox
from firmware_proto.group_stream import GroupStreamRoot, RootConfig
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import install_initial_image
from firmware_proto.update_agent import AgentConfig, FetchMap, FetchRange, UpdateAgent
from tests.support.update import SERVER_KEY
from wire.chunk_map import build_chunk_map, leaf_hash
from wire.frames import (
    END_COMPLETE,
    END_GAVE_UP,
    NACK_DONE,
    T_DATA,
    T_WANT,
    Data,
    End,
    Head,
    Nack,
    Want,
    decode,
    encode,
)

IMAGE = random.Random(7).randbytes(3000)
CMAP = build_chunk_map(
    IMAGE, artifact_id="a2", artifact_name="v2", chunk_size=512, sequence=5, key=SERVER_KEY
)


def _root(unicast_max: int, members: list[int]) -> tuple[GroupStreamRoot, LinkOutbox]:
    out = LinkOutbox()
    root = GroupStreamRoot(out, RootConfig(collection_window=1.0, chunk_size=512, unicast_max=unicast_max))
    for m in members:
        root.receive(encode(Want("a2", "v2", "mem://a2")), m, 0.0)
    root.handle_timer(1.0)
    root.artifact_fetched("a2", IMAGE, CMAP.encode(), 1.0)
    root.handle_timer(1.0)  # HEAD + POLL
    sid = CMAP.head.stream_id()
    for m in members:
        root.receive(encode(Nack(sid, 0, 0, 0, b"\xff" * 2)), m, 1.1)
    for _ in range(3):  # one block per tick (RootConfig.frames_per_tick = 1)
        root.handle_timer(2.0)
    return root, out


def _data(out: LinkOutbox) -> list[tuple[object, int]]:
    return [(to, decode(f).block) for to, f in out.drain() if f[1] == T_DATA]  # type: ignore[union-attr]


def test_small_group_gets_unicast_copies_large_group_a_broadcast() -> None:
    _, out = _root(2, [4, 3])
    sent = _data(out)
    assert sent[:4] == [(3, 0), (4, 0), (3, 1), (4, 1)]  # every block once per member, in order
    assert all(to is not None for to, _ in sent)
    _, out = _root(2, [4, 3, 5])
    sent = _data(out)
    assert sent[:2] == [(None, 0), (None, 1)]  # three members: one broadcast per block


def test_members_that_said_done_get_no_more_copies() -> None:
    root, out = _root(2, [4, 3])
    out.drain()
    root.receive(encode(Nack(CMAP.head.stream_id(), 0, NACK_DONE, 0, b"")), 4, 2.0)
    for _ in range(3):
        root.handle_timer(3.0)
    assert {to for to, _ in _data(out)} == {3}


def _agent() -> tuple[UpdateAgent, LinkOutbox]:
    flash = MemoryFlash(8192)
    install_initial_image(flash, b"old" * 100, "v1", 1)
    out = LinkOutbox()
    cfg = AgentConfig(map_key=SERVER_KEY.public_key(), image_ok=lambda _: True)
    agent = UpdateAgent(flash, out, cfg, random.Random(1), bootmod.boot(flash))
    agent.deployment_learned("d2", "a2", "v2", "mem://a2", 0.0)
    agent.receive(encode(Head(CMAP.head.stream_id(), CMAP.head.encode())), "root", 0.5)
    out.drain()
    return agent, out


def test_end_complete_without_me_asks_again_end_gave_up_falls_back() -> None:
    sid = CMAP.head.stream_id()
    agent, out = _agent()
    agent.receive(encode(End(sid, END_COMPLETE)), "root", 1.0)
    sent = [decode(f) for _, f in out.drain()]
    assert sent and isinstance(sent[0], Want) and sent[0].stream_id == sid  # resumes its bitmap
    assert not any(isinstance(a, FetchMap | FetchRange) for a in agent.actions())
    assert not any("fallback" in e for e in agent.events)
    agent.receive(encode(End(sid, END_GAVE_UP)), "root", 2.0)
    assert any(isinstance(a, FetchMap) for a in agent.actions())
    assert any("fallback: root ended the stream" in e for e in agent.events)


def test_decode_and_leaf_hash_memos_follow_the_bytes() -> None:
    frame = encode(Data(CMAP.head.stream_id(), 3, b"x" * 40))
    assert decode(frame) is decode(frame)  # one broadcast, many receivers: parsed once
    mutable = bytearray(frame)
    assert decode(mutable) == decode(frame)
    mutable[-1] ^= 0xFF  # a buffer that changes is parsed again
    changed = decode(mutable)
    assert isinstance(changed, Data) and changed.payload[-1] == ord("x") ^ 0xFF
    want = encode(Want("a", "b", "c"))
    assert want[1] == T_WANT and decode(want) == Want("a", "b", "c")  # another frame: parsed anew
    chunk = bytearray(b"c" * 64)
    first = leaf_hash(bytes(chunk))
    chunk[0] = 0
    assert leaf_hash(bytes(chunk)) != first


def test_receive_says_when_a_driver_may_skip_actions_and_timers() -> None:
    sid = CMAP.head.stream_id()
    agent, out = _agent()
    page = encode(Data(sid, 0, CMAP.page_payloads()[0]))
    chunk = encode(Data(sid, CMAP.head.page_count, IMAGE[:512]))
    assert agent.receive(page, "root", 1.0) is True  # a new block: the driver runs actions/timers
    assert agent.receive(chunk, "root", 1.1) is True
    assert agent.chunks_verified == 1
    agent.actions()
    out.drain()
    before = agent.next_timer()
    assert before is not None
    assert agent.receive(chunk, "root", 2.0) is False  # a duplicate: nothing for the driver to do
    assert agent.receive(page, "root", 2.5) is False
    head = encode(Head(sid, CMAP.head.encode()))
    assert agent.receive(head, "other", 2.6) is False  # a HEAD while a stream is held: ignored
    assert agent.chunks_verified == 1 and not agent.actions() and not out.drain()
    after = agent.next_timer()
    assert after is not None and after >= before  # progress only: no timer moved earlier
    flash = MemoryFlash(8192)
    install_initial_image(flash, b"old" * 100, "v1", 1)
    cfg = AgentConfig(map_key=SERVER_KEY.public_key(), image_ok=lambda _: True)
    idle = UpdateAgent(flash, LinkOutbox(), cfg, random.Random(1), bootmod.boot(flash))
    assert idle.receive(page, "root", 1.0) is False  # never asked: the group link is ignored
