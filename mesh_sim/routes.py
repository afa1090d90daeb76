"""Routed datagrams of the simulated radio (:meth:`mesh_sim.radio.Radio.send_path`), and the up
frames relays pack on their way to the root (SPEC.md §5.1, ``firmware_proto.sealed_uplink``).

A route is one modelled datagram forwarded hop by hop; a :class:`Hop` is its entry in a node's
transmit queue. A route that carries sealed records (``lengths``: each record's length) is an up
frame: when it reaches a node whose own up frame for the same next hop and root still waits in the
queue (not yet on air), it joins that frame — the relay's next frame to its parent carries the
records of both, as ``UplinkPacker.take`` packs them when the link is free — if the packed frame
still fits the link's datagram (``packed_frame_len``) and holds at most ``MAX_PACKED`` records.
Every record's ``done`` is then called with the packed frame's outcome.

A route with a ``pace`` also waits at each relay the way ``UplinkRelayUdp`` holds it (``hold``): the
relay's up frame leaves ``pace`` s after its first record arrived, carrying every record that
arrived meanwhile and fits; one that does not fit leaves ``pace`` after that frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from firmware_proto.sealed_uplink import MAX_PACKED, packed_frame_len

__all__ = ["Hop", "Route", "hold", "pack", "release"]


class Route:
    """A modelled datagram forwarded hop by hop (:meth:`Radio.send_path`)."""

    __slots__ = ("done", "dones", "lengths", "pace", "path")

    def __init__(
        self,
        path: Sequence[int],
        done: Callable[[bool], None],
        lengths: list[int] | None = None,
        pace: float = 0.0,
    ) -> None:
        self.path = path
        self.done = done
        self.lengths = lengths  # an up frame's records (lengths): it may be packed (module doc)
        self.pace = pace  # an up frame: how long each relay on the way holds it (module doc)
        self.dones: list[Callable[[bool], None]] | None = None  # packed: every record's done

    def all_done(self, ok: bool) -> None:
        """A packed up frame's outcome, told to every record it carries."""
        assert self.dones is not None
        for done in self.dones:
            done(ok)


class Hop:
    """One hop of a :class:`Route` in a transmit queue (the ``on_done`` of its entry): called with
    False when the queue is dropped (its sender died), the route's ``done(False)``."""

    __slots__ = ("i", "route")

    def __init__(self, route: Route, i: int) -> None:
        self.route = route
        self.i = i

    def __call__(self, ok: bool) -> None:
        self.route.done(ok)


def pack(queue: Any, entry: tuple[Any, ...], room: int) -> bool:
    """Join the up frame of ``entry`` (a :class:`Hop` whose route has ``lengths``) to one waiting
    in ``queue`` for the same next hop and root, if the packed frame fits ``room``; True if it did
    (``entry`` is then not queued: its records ride in the other frame)."""
    dst, kind, hop = entry[0], entry[3], entry[4]
    route: Route = hop.route
    assert route.lengths is not None
    for i, e in enumerate(queue):
        h = e[4]
        if type(h) is not Hop or e[0] != dst or e[3] != kind:
            continue
        other = h.route
        if other.lengths is None or other.path[-1] != route.path[-1]:
            continue
        lengths = other.lengths + route.lengths
        if len(lengths) > MAX_PACKED or (size := packed_frame_len(lengths)) > room:
            continue
        other.lengths = lengths
        if other.dones is None:
            other.dones = [other.done]
            other.done = other.all_done
        other.dones.extend(route.dones if route.dones is not None else [route.done])
        queue[i] = (dst, None, size, kind, h, e[5])
        return True
    return False


def hold(radio: Any, node: int, entry: tuple[Any, ...]) -> None:
    """``entry`` (an up frame's hop, ready at ``entry[5]``) waits at relay ``node`` for its pace: it
    joins the frame the relay holds if it arrives before that leaves and fits (``pack``), else it
    starts the next frame, leaving ``pace`` after it arrived or after the frame before it left."""
    pace = entry[4].route.pace
    ready = entry[5]
    held: dict[int, list[list[Any]]] = radio.held
    frames = held.get(node)
    if frames is None:
        frames = held[node] = []
        leave = ready + pace
    else:
        last = frames[-1]
        if ready <= last[0] and pack(last[1], entry, radio._room):
            return
        leave = max(ready, last[0]) + pace
    frames.append([leave, [entry]])
    radio._clock.at(leave, release, radio, node)


def release(radio: Any, node: int) -> None:
    """The relay's oldest held frame leaves now: into its transmit queue (where it may still join a
    frame for the same parent that waits for the channel), or failed if the relay died meanwhile."""
    frames = radio.held[node]
    leave, entries = frames.pop(0)
    if not frames:
        del radio.held[node]
    for e in entries:
        if radio.alive[node]:
            radio._enqueue(node, (e[0], e[1], e[2], e[3], e[4], leave))
        else:
            e[4](False)
