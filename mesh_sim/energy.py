"""Radio-state energy, applied to every method alike (issue 21).

A node's radio is in one of four states: transmitting, receiving, idle listening (on, nothing to
decode: it must stay on to hear its parent) and asleep. Over one horizon ``[0, T]`` (seconds after
the stream started, ``T`` = the slowest method's completion, the same for every method), each node
spends

    tx time × I_tx + rx time × I_rx + (awake − tx − rx) × I_listen + (T − awake) × I_sleep

times the supply voltage. A node is awake from the start until nothing more is needed of it: it
holds the image and every node of its routing subtree does too (a relay must stay up to serve its
children). The group stream has per-node completion times from the simulation; the baselines'
models (mesh_sim.baselines) are fluid (every chunk flows over every link at once, completion = the
busiest neighbourhood's airtime), so their every node is awake until the method's completion.

Currents (datasheets): nRF52840 at 0 dBm 6.4 mA tx, 6.3 mA rx and idle listening (the receiver is
on either way), 3 µA asleep (System ON, RTC, RAM retained); ESP32 190 mA tx, 100 mA rx, 100 mA idle
listening (ESP-WIFI-MESH keeps the modem on: no power save while forwarding), 0.8 mA light sleep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .election import MeshTree
from .radio import RadioProfile

__all__ = ["STATE_CURRENTS", "EnergyReport", "StateCurrents", "awake_until", "node_energy"]


@dataclass(frozen=True, slots=True)
class StateCurrents:
    tx_ma: float
    rx_ma: float
    listen_ma: float
    sleep_ma: float


STATE_CURRENTS: dict[str, StateCurrents] = {
    "802.15.4": StateCurrents(6.4, 6.3, 6.3, 0.003),
    "wifi-mesh": StateCurrents(190.0, 100.0, 100.0, 0.8),
}


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """Energy of one method over the common horizon: the sum over nodes and the busiest node, in mJ."""

    sum_mj: float
    max_mj: float
    max_node: int
    per_node_mj: tuple[float, ...]


def awake_until(tree: MeshTree, done: Sequence[float | None], horizon: float) -> list[float]:
    """Per node: when it may sleep, the latest completion in its subtree (itself included); a node
    that never completed (or has an incomplete descendant) stays awake to the horizon."""
    n = len(done)
    out = [min(horizon, t) if t is not None else horizon for t in done]
    for v in reversed(tree.order):  # children before parents
        p = tree.parent[v]
        if p >= 0 and out[v] > out[p]:
            out[p] = out[v]
    seen = set(tree.order)
    for v in range(n):  # a node outside every tree (cut off) is awake throughout
        if v not in seen:
            out[v] = horizon
    return out


def node_energy(
    profile: RadioProfile,
    tx_s: Sequence[float],
    rx_s: Sequence[float],
    awake_s: Sequence[float],
    horizon: float,
) -> EnergyReport:
    """Energy per node from its tx and rx airtime and how long it was awake, over ``horizon``."""
    c = STATE_CURRENTS.get(profile.name) or StateCurrents(
        profile.tx_current_ma, profile.rx_current_ma, profile.rx_current_ma, 0.0
    )
    per: list[float] = []
    for tx, rx, awake in zip(tx_s, rx_s, awake_s, strict=True):
        awake = max(awake, tx + rx)  # a node busy past the horizon is awake for all of it
        span = max(horizon, awake)
        listen = awake - tx - rx
        per.append(
            (tx * c.tx_ma + rx * c.rx_ma + listen * c.listen_ma + (span - awake) * c.sleep_ma)
            * profile.voltage
        )
    best = max(range(len(per)), key=per.__getitem__) if per else -1
    return EnergyReport(round(sum(per), 1), round(per[best], 1) if per else 0.0, best, tuple(per))
