"""WANT back-off (Trickle-like, RFC 6206): a node nobody streams to asks again less and less often.

The pause before the next WANT is the time since the node's last stream progress, at least
``want_interval`` and at most ``want_max``: 0, 5, 10, 20, 40, 80, then every ``want_max``; a
new deployment, a boot, or END(complete) without it start again at ``want_interval``."""

from __future__ import annotations

import random

from firmware_proto import boot as bootmod
from firmware_proto.group_link import LinkOutbox
from firmware_proto.testing.flash import MemoryFlash
from firmware_proto.testing.group import install_initial_image
from firmware_proto.update_agent import AgentConfig, UpdateAgent
from tests.support.update import SERVER_KEY
from wire.chunk_map import build_chunk_map
from wire.frames import END_COMPLETE, End, Head, Want, decode, encode

IMAGE = random.Random(3).randbytes(3000)
CMAP = build_chunk_map(
    IMAGE, artifact_id="a2", artifact_name="v2", chunk_size=512, sequence=5, key=SERVER_KEY
)


def _agent(want_max: float, flash: MemoryFlash | None = None) -> tuple[UpdateAgent, LinkOutbox, MemoryFlash]:
    if flash is None:
        flash = MemoryFlash(8192)
        install_initial_image(flash, b"old" * 100, "v1", 1)
    out = LinkOutbox()
    cfg = AgentConfig(
        map_key=SERVER_KEY.public_key(),
        image_ok=lambda _: True,
        want_interval=5.0,
        want_max=want_max,
        fallback_timeout=10_000.0,
    )
    return UpdateAgent(flash, out, cfg, random.Random(1), bootmod.boot(flash)), out, flash


def _wants(agent: UpdateAgent, out: LinkOutbox, until: float) -> list[float]:
    """Run the agent's timers up to ``until``; the times it sent WANT."""
    sent: list[float] = []
    while (t := agent.next_timer()) is not None and t <= until:
        agent.handle_timer(t)
        sent += [t for _, f in out.drain() if isinstance(decode(f), Want)]
    return sent


def test_wants_back_off_to_want_max_while_nobody_streams() -> None:
    agent, out, _ = _agent(want_max=40.0)
    agent.deployment_learned("d2", "a2", "v2", "mem://a2", 0.0)
    assert [isinstance(decode(f), Want) for _, f in out.drain()] == [True]  # at once
    assert _wants(agent, out, 300.0) == [5.0, 10.0, 20.0, 40.0, 80.0, 120.0, 160.0, 200.0, 240.0, 280.0]


def test_want_max_at_want_interval_keeps_the_fixed_interval() -> None:
    agent, out, _ = _agent(want_max=5.0)
    agent.deployment_learned("d2", "a2", "v2", "mem://a2", 0.0)
    out.drain()
    assert _wants(agent, out, 40.0) == [5.0 * k for k in range(1, 9)]


def test_end_complete_without_me_and_a_boot_start_again_at_want_interval() -> None:
    sid = CMAP.head.stream_id()
    agent, out, flash = _agent(want_max=60.0)
    agent.deployment_learned("d2", "a2", "v2", "mem://a2", 0.0)
    agent.receive(encode(Head(sid, CMAP.head.encode())), "root", 1.0)  # progress at 1 s
    out.drain()
    # (at 5 s the last progress is 4 s old: not yet) then the pause is the time since 1 s
    assert _wants(agent, out, 140.0) == [10.0, 19.0, 37.0, 73.0, 133.0]
    agent.receive(encode(End(sid, END_COMPLETE)), "root", 150.0)  # its group was done without me
    assert [decode(f).stream_id for _, f in out.drain()] == [sid]  # WANT at once, bitmap resumed
    assert _wants(agent, out, 200.0) == [155.0, 160.0, 170.0, 190.0]
    again, out2, _ = _agent(want_max=60.0, flash=flash)  # power cut: a new agent over the same flash
    again.start(500.0)
    assert [isinstance(decode(f), Want) for _, f in out2.drain()] == [True]
    assert _wants(again, out2, 530.0) == [505.0, 510.0, 520.0]
