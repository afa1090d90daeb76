"""Radio.send_burst: a block's PART frames as one queue entry and one channel reservation, each
frame lost or received on its own at each neighbour (loss drawn as gaps between losses)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from mesh_sim.clock import EventClock
from mesh_sim.radio import PROFILES, Radio
from mesh_sim.topology import Topology


def _star(loss: float, leaves: int = 4) -> Radio:
    topo = Topology.from_links(
        "star", [(0.0, 0.0)] * (leaves + 1), [(0, i, loss) for i in range(1, leaves + 1)]
    )
    return Radio(topo, PROFILES["802.15.4"], random.Random(7))


def _run(radio: Radio, bursts: int, n: int) -> list[list[tuple[int, Sequence[bytes]]]]:
    clock = EventClock()
    seen: list[list[tuple[int, Sequence[bytes]]]] = []
    radio.attach(
        clock, lambda r, s, d: None, lambda v: None, deliver_burst=lambda got, s, burst: seen.append(got)
    )
    frames = tuple(bytes([0x4F, 8, 0, 0, 0, 0, 0, 0, j, 1]) + b"p" * 80 for j in range(n))
    for _ in range(bursts):
        radio.send_burst(0, frames)
        clock.run()
    return seen


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.3])
def test_each_frame_is_lost_on_its_own_at_the_link_loss(loss: float) -> None:
    radio = _star(loss)
    seen = _run(radio, 2000, 16)
    got = [frames for burst in seen for _, frames in burst]
    received = sum(len(f) for f in got)
    total = 2000 * 4 * 16
    assert received + radio.frames_lost == total
    sigma = math.sqrt(total * loss * (1 - loss)) or 1.0
    assert abs((total - received) - total * loss) < 5 * sigma  # the link's loss, frame by frame
    whole = sum(len(f) == 16 for f in got)
    p_all = (1 - loss) ** 16
    assert abs(whole - 8000 * p_all) < 5 * math.sqrt(8000 * p_all * (1 - p_all)) + 1  # independent
    for frames in got:  # in order, no frame twice
        assert list(frames) == sorted(set(frames), key=lambda f: f[8])


def test_a_burst_holds_the_channel_for_its_frames_and_counts_them() -> None:
    radio = _star(0.0)
    _run(radio, 1, 5)
    p = radio.profile
    frame = 90 + p.net_header + p.mac_header
    assert radio.frames_tx[0] == 5
    assert radio.bytes_tx[0] == 5 * (frame + p.phy_overhead)
    assert radio.tx_time[0] == pytest.approx(5 * (p.airtime(frame) + p.slot))
    assert radio.rx_time[1] == pytest.approx(radio.tx_time[0])


def test_a_frame_too_big_for_one_link_frame_is_refused() -> None:
    radio = _star(0.0)
    clock = EventClock()
    radio.attach(clock, lambda r, s, d: None, lambda v: None)
    with pytest.raises(ValueError, match=r"does not fit one 802\.15\.4 frame"):
        radio.send_burst(0, (b"x" * 200,))
    assert radio.queued(0) == 0 and radio.frames_tx[0] == 0


@pytest.mark.parametrize("bursts", [True, False])
def test_stream_bursts_switch(bursts: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``[stream] bursts = false`` sends each part as its own datagram (the model before bursts):
    both install everywhere; only the burst model puts bursts on the radio."""
    from mesh_sim.runner import run_scenario
    from mesh_sim.scenario import ScenarioError, parse_scenario

    calls: list[int] = []
    send_burst = Radio.send_burst

    def counting(self: Radio, src: int, frames: tuple[bytes, ...], *, kind: str = "data") -> None:
        calls.append(len(frames))
        send_burst(self, src, frames, kind=kind)

    monkeypatch.setattr(Radio, "send_burst", counting)
    sc = {
        "topology": {"kind": "random", "nodes": 20, "loss": 0.05},
        "radio": {"profile": "802.15.4"},
        "image": {"size": 16 * 1024},
        "collection": {"window": 3.0},
        "stream": {"bursts": bursts},
    }
    res = run_scenario(parse_scenario(sc), 3)
    assert res.summary["installed"] == 20
    assert bool(calls) == bursts and all(1 <= n <= 16 for n in calls)
    with pytest.raises(ScenarioError, match="bursts"):
        parse_scenario({**sc, "stream": {"bursts": "yes"}})
