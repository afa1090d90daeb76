"""How frames the simulated radio carried reach a node's cores (mesh_sim/group.py's GroupSim).

The product's routing rules (:mod:`firmware_proto.group_forwarder`: ``relay_accepts`` and
``agent_accepts``), as a node's firmware runs them, applied per frame type once per broadcast: a
payload frame (DATA, CODED, PART) to every agent, no core; a WANT to the sender's parent core; a
NACK to that core and the agents of the sender's cell; a HEAD to every agent; POLL, END to the
agents of the sender's children. A burst of one block's parts (``Radio.send_burst``) goes to each
receiver's agent in one ``UpdateAgent.receive_burst`` call. ``GroupSim._deliver`` is the rule for
one receiver; tests/mesh_sim/test_sim_speed.py checks the shortcuts against it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

from firmware_proto.group_forwarder import agent_accepts, frame_type, relay_accepts
from firmware_proto.update_agent import AgentState
from wire.frames import T_CODED, T_DATA, T_HEAD, T_NACK, T_PART, T_WANT, burst_head

from .radio import BROADCAST

if TYPE_CHECKING:
    from .clock import EventClock
    from .election import MeshTree
    from .group_node import SimNode
    from .radio import Radio

__all__ = ["GroupDelivery"]

_KIND = {T_DATA: "data", T_CODED: "data", T_PART: "data", T_WANT: "feedback", T_NACK: "feedback"}
_LEARNED = AgentState.LEARNED
_RECEIVING = AgentState.RECEIVING
_FEEDBACK = frozenset({T_WANT, T_NACK})
_PAYLOAD = frozenset({T_DATA, T_CODED, T_PART})  # every agent takes them, from anyone; no core does


def _nobody(_s: Hashable) -> bool:
    return False


class GroupDelivery:
    """GroupSim's radio side: frames out (``transmit``, ``transmit_burst``) and in (``_deliver*``)."""

    clock: EventClock
    radio: Radio
    tree: MeshTree
    nodes: list[SimNode]

    if TYPE_CHECKING:

        def _pump(self, v: int) -> None: ...  # GroupSim's: carry out a node's actions, arm its timer

    # -- radio in and out -----------------------------------------------------------------------------
    def transmit(self, src: int, dst: int, frame: bytes) -> None:
        self.radio.send(src, dst, frame, kind=_KIND.get(frame_type(frame), "stream-control"))
        node = self.nodes[src]
        if node.root is not None:  # the root's own agent and core hear what the other one sends
            self.clock.after(0.0, self._deliver, src, src, frame)

    def transmit_burst(self, src: int, frames: tuple[bytes, ...]) -> None:
        """Payload frames (PART) back to back as one radio burst; anything else frame by frame."""
        if not all(frame_type(f) in _PAYLOAD for f in frames):
            for f in frames:
                self.transmit(src, BROADCAST, f)
            return
        self.radio.send_burst(src, frames, kind="data")
        if self.nodes[src].root is not None:  # the root's own agent hears what its core sends
            self.clock.after(0.0, self._deliver_burst, [(src, frames)], src, frames)

    def _cell(self, v: int) -> int:
        p = self.tree.parent[v]
        return p if p >= 0 else v

    def _deliver_all(self, receivers: list[int], sender: int, frame: bytes) -> None:
        """One broadcast's receivers, in order: :meth:`_deliver` for each, with the routing rules
        of a frame type applied once for the whole broadcast (``agent_accepts``/``relay_accepts``):
        a payload frame (DATA, CODED, PART) to every agent, no core; a WANT only to the sender's
        parent core (no agent takes WANT, a core only from its children); a NACK to that core and
        the agents of the sender's cell; a HEAD to every agent; anything else (POLL, END) to the
        agents of the sender's children. To every other receiver :meth:`_deliver` does nothing."""
        kind = frame_type(frame)
        nodes = self.nodes
        now = self.clock.now
        if kind not in _PAYLOAD:
            parent = self.tree.parent
            if kind == T_WANT:  # only the sender's parent core takes a WANT; no agent does
                for r in receivers:
                    if r == parent[sender]:
                        self._deliver(r, sender, frame)
                return
            if kind == T_NACK:  # the sender's parent core; the agents of its cell (siblings)
                self._deliver_nack(receivers, sender, frame)
                return
            for r in receivers:  # HEAD: every agent; POLL, END, anything else: the sender's children
                if kind != T_HEAD and parent[r] != sender:
                    continue
                node = nodes[r]
                agent = node.agent
                if (
                    not node.down
                    and agent is not None
                    and agent.state > _LEARNED
                    and agent.receive(frame, sender, now)
                ):
                    self._pump(r)
            return
        for r in receivers:
            node = nodes[r]
            if node.down:
                continue
            agent = node.agent
            # (a radio never delivers a broadcast to its own sender: sender != r)
            # (an agent that has not asked for the update ignores the group link: receive's first test)
            if agent is None or not agent.receive(frame, sender, now):
                continue
            if (
                node.relay is None
                and node.root is None
                and not agent.has_actions
                and (rec := agent.receiver) is not None
                and not rec.complete
                and agent.state is _RECEIVING  # (a payload frame never moves an agent into RECEIVING)
            ):
                continue  # a block stored at a node no core forwards from: nothing for _pump to do
            self._pump(r)

    def _deliver_nack(self, receivers: list[int], sender: int, frame: bytes) -> None:
        """:meth:`_deliver` of a NACK for each receiver: the sender's parent core takes it
        (``relay_accepts``), the agents of the sender's cell overhear it (``agent_accepts``)."""
        parent = self.tree.parent
        nodes = self.nodes
        now = self.clock.now
        ps = parent[sender]
        cell = ps if ps >= 0 else sender
        for r in receivers:
            node = nodes[r]
            if node.down:
                continue
            touched = False
            if r == ps:
                core = node.root if node.root is not None else node.relay
                if core is not None:
                    core.receive(frame, sender, now)
                    touched = True
            pr = parent[r]
            agent = node.agent
            if (pr if pr >= 0 else r) == cell and agent is not None and agent.state > _LEARNED:
                touched = agent.receive(frame, sender, now) or touched
            if touched:
                self._pump(r)

    def _deliver_burst(
        self, got: list[tuple[int, Sequence[bytes]]], sender: int, burst: tuple[bytes, ...]
    ) -> None:
        """A burst of payload frames (``transmit_burst``): each receiver's agent takes the frames
        it got in one call (``UpdateAgent.receive_burst``, the same as one ``receive`` each, in
        order; the burst's PART header checked once here for all of them, ``burst_head``); no
        relay or root core takes payload frames (``relay_accepts``)."""
        nodes = self.nodes
        now = self.clock.now
        head = burst_head(burst)
        for r, frames in got:
            node = nodes[r]
            if node.down:
                continue
            agent = node.agent
            if (
                agent is not None
                and (sender != r or node.root is not None)
                and agent.state > _LEARNED
                and agent.receive_burst(frames, sender, now, head)
            ):
                self._pump(r)

    def _deliver(self, receiver: int, sender: int, frame: bytes) -> None:
        node = self.nodes[receiver]
        if node.down:
            return
        # the product's routing rules (firmware_proto.group_forwarder), as a node's firmware runs them
        kind = frame_type(frame)
        now = self.clock.now
        touched = False
        parent = self.tree.parent
        # (the rules only ask who is a child for WANT/NACK, a sibling for NACK: no closure per DATA)
        if kind in _FEEDBACK:

            def is_child(s: Hashable) -> bool:  # itself too: a root's own agent (GroupLink.send_unicast)
                return s == receiver or (isinstance(s, int) and parent[s] == receiver)

            if relay_accepts(kind, sender, is_child):
                core = node.root if node.root is not None else node.relay
                if core is not None:
                    core.receive(frame, sender, now)
                    touched = True
        agent = node.agent
        # an agent that has not asked for the update yet ignores the group link (UpdateAgent.receive)
        if agent is not None and (sender != receiver or node.root is not None) and agent.state > _LEARNED:
            cell = parent[receiver]  # self._cell, inlined (per reception)
            if cell < 0:
                cell = receiver
            sibling = (lambda s: isinstance(s, int) and self._cell(s) == cell) if kind == T_NACK else _nobody
            if agent_accepts(kind, sender, cell, sibling) and agent.receive(frame, sender, now):
                touched = True  # (False: a duplicate or ignored frame, no action, no earlier timer)
        if touched:  # nothing ran: no new actions, no timer moved
            self._pump(receiver)
