"""Radio.send_path: a modelled datagram forwarded hop by hop with one clock event per hop; alone on
the air it is the chain of link-ACKed ``Radio.send`` hops it replaces (same times, frames, airtime,
random draws), and a lost hop or a dead forwarder ends it with ``done(False)``."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mesh_sim.clock import EventClock
from mesh_sim.radio import PROFILES, Radio
from mesh_sim.topology import Topology


def _line(n: int, loss: float, profile: str = "802.15.4", seed: int = 3) -> tuple[Radio, EventClock]:
    links = [(i, i + 1, loss) for i in range(n - 1)]
    topo = Topology.from_links("line", [(float(i), 0.0) for i in range(n)], links)
    radio = Radio(topo, PROFILES[profile], random.Random(seed))
    clock = EventClock()
    radio.attach(clock, lambda r, s, d: None, lambda v: None)
    return radio, clock


def _chain(radio: Radio, clock: EventClock, path: list[int], size: int, done: Callable[[bool], None]) -> None:
    """The model send_path replaces: each hop a Radio.send whose on_done queues the next one."""

    def hop(i: int, delay: float) -> None:
        if i >= len(path) - 1:
            clock.after(delay, done, True)
            return

        def next_hop(ok: bool) -> None:
            if ok:
                hop(i + 1, radio.profile.hop_latency)
            else:
                done(False)

        radio.send(path[i], path[i + 1], None, size=size, kind="control", on_done=next_hop, delay=delay)

    hop(0, 0.0)


@pytest.mark.parametrize("profile", ["802.15.4", "wifi-mesh"])
@pytest.mark.parametrize("size", [40, 300, 1200])
@pytest.mark.parametrize("loss", [0.0, 0.3])
def test_alone_on_air_it_is_the_chain_of_sends(profile: str, size: int, loss: float) -> None:
    if size > PROFILES[profile].datagram_room():
        pytest.skip("larger than one datagram of this radio")
    outcomes = []
    for seed in range(20):
        runs = []
        for model in ("path", "chain"):
            radio, clock = _line(6, loss, profile, seed)
            got: list[tuple[float, bool]] = []

            def done(ok: bool, got: list[tuple[float, bool]] = got, clock: EventClock = clock) -> None:
                got.append((clock.now, ok))

            path = [0, 1, 2, 3, 4, 5]
            if model == "path":
                radio.send_path(path, size, done)
            else:
                _chain(radio, clock, path, size, done)
            clock.run()
            r = radio
            runs.append((got, r.frames_tx, r.bytes_tx, r.tx_time, r.rx_time, r.frames_lost, clock.events_run))
        (p_got, *p_rest, p_events), (c_got, *c_rest, c_events) = runs
        assert len(p_got) == 1 and p_got[0][1] == c_got[0][1]
        assert p_got[0][0] == pytest.approx(c_got[0][0], abs=1e-9)
        assert p_rest[:2] == c_rest[:2] and p_rest[4] == c_rest[4]  # frames, bytes, lost
        assert p_rest[2] == pytest.approx(c_rest[2]) and p_rest[3] == pytest.approx(c_rest[3])
        if p_got[0][1]:
            assert p_events == 5 and c_events == 10  # one event per hop, not two
        outcomes.append(p_got[0][1])
    if loss == 0.0:
        assert all(outcomes)
    else:  # 30 % per attempt, 4 attempts per fragment, 5 hops: both outcomes happen in 20 tries
        assert any(outcomes)


def test_a_hop_that_runs_out_of_retries_ends_the_route_at_its_end() -> None:
    radio, clock = _line(3, 0.9)
    got: list[tuple[float, bool]] = []
    for _ in range(30):
        radio.send_path([0, 1, 2], 40, lambda ok: got.append((clock.now, ok)))
        clock.run()
    assert len(got) == 30 and not all(ok for _t, ok in got) and radio.frames_lost > 0
    assert radio.queued(0) == radio.queued(1) == 0 and not any(radio.busy)


def test_a_dead_forwarder_drops_what_it_holds_and_a_dead_sender_sends_nothing() -> None:
    radio, clock = _line(4, 0.0)
    got: list[bool] = []
    radio.send_path([0, 1, 2, 3], 40, got.append)
    radio.send_path([0, 1, 2, 3], 40, got.append)  # queued behind the first at node 0
    clock.run(until=radio.profile.airtime(60) * 0.5)  # the first hop is on air
    radio.alive[1] = False  # the next forwarder dies before the hop ends
    clock.run()
    assert got == [False, False]
    radio.alive[1] = True
    radio.alive[0] = False
    sent = radio.frames_tx[0]
    radio.send_path([0, 1], 40, got.append)
    clock.run()
    assert got == [False, False, False] and radio.frames_tx[0] == sent  # nothing more went on air


def test_routes_share_a_forwarder_in_order_and_a_one_node_path_is_done_at_once() -> None:
    radio, clock = _line(3, 0.0)
    got: list[tuple[str, float]] = []
    radio.send_path([0, 1, 2], 40, lambda ok: got.append(("a", clock.now)))
    radio.send_path([2, 1, 0], 40, lambda ok: got.append(("b", clock.now)))
    radio.send_path([1, 2], 40, lambda ok: got.append(("c", clock.now)))
    clock.run()
    assert sorted(n for n, _t in got) == ["a", "b", "c"]
    assert radio.frames_tx[1] == 3 * 2  # node 1 forwarded a and b and sent c (frame + ACK each)
    done: list[bool] = []
    radio.send_path([2], 40, done.append)
    assert done == [True]
