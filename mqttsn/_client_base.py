"""Sans-I/O MQTT-SN v1.2 client session, the half without packet handlers: state, queue, timers.

:class:`ClientBase` holds what a session is (configuration, state, the stop-and-wait request
queue, the datagram and event outboxes), its timers (retransmission, keep-alive) and the
outbound plumbing. The commands and the handlers of inbound packets live in ``_client.py``
(class :class:`~mqttsn.ClientSession`), as the gateway's do in ``_gateway.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ._client_events import ClientEvent, ConnectionLost
from ._client_requests import Request, RequestKind, RequestQueue
from ._client_state import COMMAND_STATES, TRANSITIONS, ClientState, ClientStats, Will
from ._client_topics import TopicTable
from ._codec import encode
from ._errors import LocalProtocolError
from ._packets import Packet, Pingreq, Publish, Register, Subscribe

__all__ = ["ClientBase"]

_MAX_CLIENT_ID = 23  # bytes, v1.2 §5.3.1
_S = ClientState
_Kind = RequestKind


class ClientBase:
    """State, queue, timers and outbound plumbing of one client session (see :class:`ClientSession`)."""

    def __init__(
        self,
        client_id: str,
        *,
        keep_alive: int = 60,
        clean_session: bool = True,
        will: Will | None = None,
        predefined: Mapping[str, int] | None = None,
        retry_interval: float = 10.0,
        max_retries: int = 5,
    ) -> None:
        if not isinstance(client_id, str) or not 1 <= len(client_id.encode()) <= _MAX_CLIENT_ID:
            raise LocalProtocolError(f"client_id must be 1..{_MAX_CLIENT_ID} bytes: {client_id!r}")
        if not isinstance(keep_alive, int) or not 0 <= keep_alive <= 0xFFFF:
            raise LocalProtocolError(f"keep_alive must be 0..65535 seconds, got {keep_alive!r}")
        if not retry_interval > 0:
            raise LocalProtocolError(f"retry_interval must be > 0, got {retry_interval!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise LocalProtocolError(f"max_retries must be >= 0, got {max_retries!r}")
        self.client_id = client_id
        self.keep_alive = keep_alive
        self.clean_session = clean_session
        self.retry_interval = float(retry_interval)
        self.max_retries = max_retries
        self.will = will
        self.topics = TopicTable(predefined)
        self.stats = ClientStats()

        self._state = ClientState.DISCONNECTED
        self._leaving = False  # sleep() or disconnect() queued: no new requests
        self._queue = RequestQueue()
        self._qos2_in: set[int] = set()  # inbound QoS 2 msg ids between PUBREC and PUBREL
        self._out: list[bytes] = []
        self._events: list[ClientEvent] = []
        self._last_sent: float | None = None

    # ------------------------------------------------------------------ public state

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def queued(self) -> int:
        """Requests waiting for (or in) their turn, the one in flight included."""
        return len(self._queue)

    # ------------------------------------------------------------------ sans-I/O plumbing

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[ClientEvent]:
        ev, self._events = self._events, []
        return ev

    def get_timer(self) -> float | None:
        head = self._queue.head
        if head is not None and head.deadline is not None:
            return head.deadline
        return self._keepalive_deadline()

    def handle_timer(self, now: float) -> None:
        head = self._queue.head
        if head is not None and head.deadline is not None:
            if now >= head.deadline:
                self._retransmit(head, now)
            return
        ka = self._keepalive_deadline()
        if ka is not None and now >= ka:
            self._enqueue(Request(_Kind.PINGREQ, Pingreq()), now)

    # ------------------------------------------------------------------ internals: outbound

    def _require(self, command: str, *, allow_leaving: bool = False) -> None:
        if self._state not in COMMAND_STATES[command]:
            raise LocalProtocolError(f"{command}() is not allowed in state {self._state.name}")
        if self._leaving and not allow_leaving:
            raise LocalProtocolError(f"{command}() after sleep()/disconnect() was requested")

    def _transition(self, trigger: str) -> None:
        nxt = TRANSITIONS.get((self._state, trigger))
        if nxt is None:  # pragma: no cover - callers check the state first
            raise LocalProtocolError(f"no transition from {self._state.name} on {trigger}")
        self._state = nxt

    def _enqueue(self, req: Request, now: float) -> None:
        self._queue.append(req)
        self._pump(now)

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._leaving = False

    def _pump(self, now: float) -> None:
        """Send the head of the queue unless it is already in flight."""
        while (head := self._queue.head) is not None and head.deadline is None:
            if head.packet is None:  # a PUBLISH: resolve its topic id only now
                tid = head.topic if isinstance(head.topic, int) else self.topics.registered(head.topic)
                if tid is None:
                    assert isinstance(head.topic, str)
                    msg_id = self._queue.alloc_msg_id()
                    reg = Request(
                        _Kind.REGISTER, Register(0, msg_id, head.topic), msg_id, head.topic, auto=True
                    )
                    self._queue.push_front(reg)
                    continue
                head.packet = Publish(
                    tid, head.payload, head.qos, head.msg_id, head.retain, topic_id_type=head.topic_id_type
                )
            self._send(head.packet, now)
            head.sends = 1
            if head.kind is _Kind.PUBLISH and head.qos == 0:
                self._queue.pop_head()  # nothing to wait for
                continue
            head.deadline = now + self.retry_interval

    def _retransmit(self, head: Request, now: float) -> None:
        if head.sends > self.max_retries:
            self._lose(f"no answer to {head.kind.value} after {head.sends} transmissions")
            return
        pkt = head.packet
        assert pkt is not None
        if isinstance(pkt, Publish | Subscribe):
            pkt = head.packet = dataclasses.replace(pkt, dup=True)
        self.stats.retransmissions += 1
        self._send(pkt, now)
        head.sends += 1
        head.deadline = now + self.retry_interval

    def _keepalive_deadline(self) -> float | None:
        if self._state is not _S.ACTIVE or self.keep_alive == 0 or len(self._queue):
            return None
        if self._leaving or self._last_sent is None:
            return None
        return self._last_sent + self.keep_alive

    def _send(self, packet: Packet, now: float, *, alive: bool = True) -> None:
        # alive=False: broadcasts and QoS -1 do not reset the keep-alive timer.
        self._out.append(encode(packet))
        self.stats.datagrams_out += 1
        if alive:
            self._last_sent = now

    def transport_lost(self, reason: str) -> None:
        """The transport under the session ended (e.g. the DTLS session closed): state LOST,
        queued requests dropped, ConnectionLost emitted, as when retries run out."""
        self._lose(reason)

    def _lose(self, reason: str) -> None:
        self._drop_queue()
        self._transition("lost")
        self._events.append(ConnectionLost(reason))

    def _ignore(self) -> None:
        self.stats.ignored += 1
