"""Sans-I/O MQTT-SN v1.2 gateway: a table of client sessions between datagrams and a broker.

Inputs: ``receive_datagram(data, peer, now)`` and the broker answers (``broker_connected``,
``broker_published``, ``broker_subscribed``, ``broker_unsubscribed``, ``broker_message``,
``broker_connection_lost``). Outputs: ``datagrams_to_send()`` → ``[(peer, bytes)]``,
``broker_actions()`` → ``[BrokerAction]``, ``events()`` → ``[GatewayEvent]``. Timers:
``get_timer()`` / ``handle_timer(now)``. Peers are any hashable the driver chooses (a UDP address,
``(relay address, wireless node id)``, a DTLS session key).

Per session (v1.2 §6): will exchange at connect; REGISTER both ways; PUBLISH QoS -1/0/1/2 with
acks sent only once the broker confirmed; stop-and-wait delivery toward the client with
retransmission (T_RETRY/N_RETRY) and DUP; keep-alive supervision at 1.5 × Duration publishing the
will when the client is lost; sleeping clients whose messages are buffered until PINGREQ(ClientId),
then flushed and followed by PINGRESP.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _packets as p
from ._codec import decode, encode, peek_header
from ._errors import DecodeError
from ._gateway_events import (
    BROADCAST,
    GATEWAY_CONN,
    BrokerAction,
    BrokerConnect,
    BrokerDisconnect,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
    ClientAsleep,
    ClientAwake,
    ClientConnected,
    ClientDisconnected,
    ClientLost,
    DatagramDropped,
    GatewayEvent,
    PacketRefused,
    WillSpec,
)
from ._gateway_session import GatewaySession, Inflight, OutboundMessage, SessionState
from ._topics import PredefinedTopics, topic_matches, validate_filter, validate_topic_name

__all__ = ["Gateway", "GatewayConfig"]

Mode = Literal["transparent", "aggregating"]


@dataclass(slots=True)
class GatewayConfig:
    gw_id: int = 1
    mode: Mode = "transparent"
    max_packet_size: int = 1500
    retry_interval: float = 10.0  # T_RETRY
    max_retries: int = 5  # N_RETRY
    keep_alive_factor: float = 1.5
    max_sessions: int = 100_000
    max_buffered: int = 1000  # messages kept per sleeping client
    max_topics_per_session: int = 1000
    advertise_interval: float | None = None  # T_ADV; None = no ADVERTISE
    predefined: PredefinedTopics = field(default_factory=PredefinedTopics)


class Gateway:
    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self._sessions: dict[Hashable, GatewaySession] = {}
        self._by_client_id: dict[str, Hashable] = {}
        self._out: list[tuple[Hashable, bytes]] = []
        self._actions: list[BrokerAction] = []
        self._events: list[GatewayEvent] = []
        self._timers: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._token = 0
        # token -> (peer, what, data) for broker answers
        self._pending: dict[int, tuple[Hashable, str, tuple[int, ...]]] = {}
        # aggregating mode: filter -> {peer: qos}, and the qos subscribed at the broker
        self._agg_subs: dict[str, dict[Hashable, int]] = {}
        self._agg_broker_qos: dict[str, int] = {}
        self._next_advertise: float | None = None
        self.stats: dict[str, int] = {}

    # --- outputs ------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[Hashable, bytes]]:
        out, self._out = self._out, []
        return out

    def broker_actions(self) -> list[BrokerAction]:
        out, self._actions = self._actions, []
        return out

    def events(self) -> list[GatewayEvent]:
        out, self._events = self._events, []
        return out

    def session(self, peer: Hashable) -> GatewaySession | None:
        return self._sessions.get(peer)

    def sessions(self) -> list[GatewaySession]:
        return list(self._sessions.values())

    # --- helpers ------------------------------------------------------------------------------

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def _send(self, peer: Hashable, packet: p.Packet) -> None:
        self._out.append((peer, encode(packet)))

    def _drop(self, peer: Hashable, reason: str) -> None:
        self._count("dropped")
        self._events.append(DatagramDropped(peer, reason))

    def _refuse(self, s: GatewaySession | None, peer: Hashable, reason: str) -> None:
        self._count("refused")
        self._events.append(PacketRefused(peer, s.client_id if s else None, reason))

    def _new_token(self, peer: Hashable, what: str, data: tuple[int, ...]) -> int:
        self._token += 1
        self._pending[self._token] = (peer, what, data)
        return self._token

    def _conn(self, s: GatewaySession) -> Hashable:
        return s.peer if self.config.mode == "transparent" else GATEWAY_CONN

    def _schedule(self, s: GatewaySession) -> None:
        d = s.next_deadline(self.config)
        if d is not None and (s.scheduled is None or d < s.scheduled):
            s.scheduled = d
            self._seq += 1
            heapq.heappush(self._timers, (d, self._seq, s.peer))

    # --- timers -------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start gateway-level timers (ADVERTISE)."""
        if self.config.advertise_interval:
            self._advertise(now)

    def _advertise(self, now: float) -> None:
        interval = self.config.advertise_interval
        assert interval
        self._out.append((BROADCAST, encode(p.Advertise(self.config.gw_id, min(int(interval), 0xFFFF)))))
        self._next_advertise = now + interval

    def get_timer(self) -> float | None:
        while self._timers:
            t, _, peer = self._timers[0]
            s = self._sessions.get(peer)
            if s is None or s.scheduled != t:
                heapq.heappop(self._timers)
                continue
            break
        best = self._timers[0][0] if self._timers else None
        if self._next_advertise is not None and (best is None or self._next_advertise < best):
            best = self._next_advertise
        return best

    def handle_timer(self, now: float) -> None:
        if self._next_advertise is not None and now >= self._next_advertise:
            self._advertise(now)
        while self._timers and self._timers[0][0] <= now:
            t, _, peer = heapq.heappop(self._timers)
            s = self._sessions.get(peer)
            if s is None or s.scheduled != t:
                continue
            s.scheduled = None
            self._session_timers(s, now)
            if peer in self._sessions:
                self._schedule(s)

    def _session_timers(self, s: GatewaySession, now: float) -> None:
        cfg = self.config
        if s.state in (SessionState.WAIT_WILL_TOPIC, SessionState.WAIT_WILL_MSG, SessionState.WAIT_BROKER):
            if now >= s.last_rx + cfg.retry_interval * cfg.max_retries:
                self._close(s, "connect did not complete", lost=False, notify_client=False)
            return
        supervision = s.supervision_deadline(cfg)
        if supervision is not None and now >= supervision:
            why = "sleep duration expired" if s.state == SessionState.ASLEEP else "keep-alive expired"
            self._close(s, why, lost=True)
            return
        inflight = s.inflight
        if inflight is not None and now >= inflight.sent_at + cfg.retry_interval:
            if inflight.retries >= cfg.max_retries:
                self._close(s, "no answer after retransmissions", lost=True)
                return
            inflight.retries += 1
            inflight.sent_at = now
            pkt = inflight.packet
            if isinstance(pkt, p.Publish):
                pkt = p.Publish(
                    pkt.topic_id, pkt.data, pkt.qos, pkt.msg_id, pkt.retain, True, pkt.topic_id_type
                )
                inflight.packet = pkt
            self._count("retransmitted")
            self._send(s.peer, pkt)

    # --- datagrams ----------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, peer: Hashable, now: float, *, identity: str | None = None
    ) -> None:
        """Handle one datagram from ``peer``. ``identity``: the verified transport identity."""
        self._count("datagrams_in")
        if len(data) > self.config.max_packet_size:
            self._refuse_oversize(data, peer)
            return
        try:
            packet = decode(data)
        except DecodeError as exc:
            self._drop(peer, f"malformed: {exc}")
            return
        s = self._sessions.get(peer)
        if s is not None:
            s.last_rx = now
            if identity is not None and s.identity is not None and identity != s.identity:
                self._drop(peer, "transport identity changed within a session")
                return
        handler = _HANDLERS.get(type(packet))
        if handler is None:
            self._drop(peer, f"{type(packet).__name__} is not accepted by a gateway")
            return
        handler(self, packet, peer, s, now, identity)
        s = self._sessions.get(peer)
        if s is not None:
            self._schedule(s)

    def _refuse_oversize(self, data: bytes, peer: Hashable) -> None:
        limit = self.config.max_packet_size
        reason = f"oversize: {len(data)} bytes > maximum {limit}"
        self._count("oversize")
        self._events.append(DatagramDropped(peer, reason))
        try:
            _, hdr, mtype = peek_header(data)
        except DecodeError:
            return
        s = self._sessions.get(peer)
        if mtype == p.MsgType.PUBLISH and s is not None and len(data) >= hdr + 5:
            topic_id = int.from_bytes(data[hdr + 1 : hdr + 3], "big")
            msg_id = int.from_bytes(data[hdr + 3 : hdr + 5], "big")
            # Tell the client instead of letting it time out (the reference gateway is silent).
            self._send(peer, p.Puback(topic_id, msg_id, p.ReturnCode.NOT_SUPPORTED))

    # --- connect ------------------------------------------------------------------------------

    def _on_connect(
        self, pkt: p.Connect, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if pkt.protocol_id != 0x01:
            self._send(peer, p.Connack(p.ReturnCode.NOT_SUPPORTED))
            self._refuse(s, peer, f"protocol id {pkt.protocol_id} not supported")
            return
        if identity is not None and pkt.client_id != identity:
            self._send(peer, p.Disconnect())
            self._refuse(s, peer, f"client id {pkt.client_id!r} != transport identity {identity!r}")
            if s is not None:
                self._close(s, "client id does not match identity", lost=False, notify_client=False)
            return
        # A sleeping/awake session resumes without a new broker connection.
        old_peer = self._by_client_id.get(pkt.client_id)
        if old_peer is not None and old_peer != peer:
            old = self._sessions[old_peer]
            if identity is None or old.identity == identity:
                self._rebind(old, peer)
                s = old
            else:
                self._close(old, "taken over", lost=False, notify_client=False)
        if s is not None and s.client_id != pkt.client_id:
            self._close(s, "new client id on the same address", lost=False, notify_client=False)
            s = None
        if (
            s is not None
            and s.state in (SessionState.ASLEEP, SessionState.AWAKE)
            and not pkt.clean_session
            and not pkt.will
        ):
            s.keep_alive = pkt.duration
            s.state = SessionState.ACTIVE
            self._send(peer, p.Connack())
            self._events.append(ClientConnected(peer, s.client_id))
            self._flush_sleep_buffer(s, now)
            return
        carried = None
        if s is not None:
            if not pkt.clean_session:
                carried = s
            self._close(s, "reconnect", lost=False, notify_client=False)
            s = None
        if len(self._sessions) >= self.config.max_sessions:
            self._send(peer, p.Connack(p.ReturnCode.CONGESTION))
            self._refuse(None, peer, "session table full")
            return
        s = GatewaySession(
            peer,
            pkt.client_id,
            pkt.duration,
            pkt.clean_session,
            now,
            self.config.max_topics_per_session,
            identity,
        )
        self._sessions[peer] = s
        self._by_client_id[pkt.client_id] = peer
        if carried is not None:
            # A persistent session keeps its topic ids and subscriptions.
            s.topics = carried.topics
            s.known_to_client = carried.known_to_client
            s.subscriptions = carried.subscriptions
            s.short_subs = carried.short_subs
            if self.config.mode == "aggregating":
                for name, qos in s.subscriptions.items():
                    self._agg_add(peer, name, qos, None)
        if pkt.will:
            s.state = SessionState.WAIT_WILL_TOPIC
            self._send(peer, p.WillTopicReq())
        else:
            self._connect_broker(s)

    def _rebind(self, s: GatewaySession, peer: Hashable) -> None:
        del self._sessions[s.peer]
        if self.config.mode == "aggregating":
            for subs in self._agg_subs.values():
                if s.peer in subs:
                    subs[peer] = subs.pop(s.peer)
        s.peer = peer
        s.scheduled = None
        self._sessions[peer] = s
        self._by_client_id[s.client_id] = peer

    def _on_willtopic(
        self, pkt: p.WillTopic, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None or s.state != SessionState.WAIT_WILL_TOPIC:
            self._drop(peer, "WILLTOPIC not expected")
            return
        if not pkt.topic:
            s.will = None
            self._connect_broker(s)
            return
        why = validate_topic_name(pkt.topic)
        if why:
            self._send(peer, p.Connack(p.ReturnCode.NOT_SUPPORTED))
            self._close(s, f"bad will topic: {why}", lost=False, notify_client=False)
            return
        s.will = WillSpec(pkt.topic, b"", pkt.qos, pkt.retain)
        s.state = SessionState.WAIT_WILL_MSG
        self._send(peer, p.WillMsgReq())

    def _on_willmsg(
        self, pkt: p.WillMsg, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None or s.state != SessionState.WAIT_WILL_MSG or s.will is None:
            self._drop(peer, "WILLMSG not expected")
            return
        s.will = WillSpec(s.will.topic, pkt.message, s.will.qos, s.will.retain)
        self._connect_broker(s)

    def _connect_broker(self, s: GatewaySession) -> None:
        if self.config.mode == "transparent":
            s.state = SessionState.WAIT_BROKER
            self._actions.append(
                BrokerConnect(s.peer, s.client_id, s.keep_alive, s.clean_session, s.will, s.identity)
            )
        else:
            self._connected(s)

    def _connected(self, s: GatewaySession) -> None:
        s.state = SessionState.ACTIVE
        self._send(s.peer, p.Connack())
        self._count("connects")
        self._events.append(ClientConnected(s.peer, s.client_id))

    def broker_connected(self, conn: Hashable, ok: bool, now: float) -> None:
        s = self._sessions.get(conn)
        if s is None or s.state != SessionState.WAIT_BROKER:
            if ok and s is None and conn is not GATEWAY_CONN:
                self._actions.append(BrokerDisconnect(conn))
            return
        if ok:
            self._connected(s)
        else:
            self._send(s.peer, p.Connack(p.ReturnCode.CONGESTION))
            self._close(s, "broker refused the connection", lost=False, notify_client=False)
        if s.peer in self._sessions:
            self._schedule(s)

    # --- topics -------------------------------------------------------------------------------

    def _resolve(self, s: GatewaySession | None, topic_id: int, tit: p.TopicIdType) -> str | None:
        if tit == p.TopicIdType.PREDEFINED:
            return self.config.predefined.name_for(s.client_id if s else None, topic_id)
        if tit == p.TopicIdType.SHORT:
            try:
                return p.short_topic_name(topic_id)
            except UnicodeDecodeError:
                return None
        return s.topics.name_for(topic_id) if s else None

    def _on_register(
        self, pkt: p.Register, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if not self._require_active(s, peer, "REGISTER"):
            return
        assert s is not None
        why = validate_topic_name(pkt.topic_name)
        if why:
            self._send(peer, p.Regack(0, pkt.msg_id, p.ReturnCode.NOT_SUPPORTED))
            self._refuse(s, peer, f"REGISTER {pkt.topic_name!r}: {why}")
            return
        tid = s.topics.assign(pkt.topic_name)
        if tid is None:
            self._send(peer, p.Regack(0, pkt.msg_id, p.ReturnCode.CONGESTION))
            self._refuse(s, peer, "topic table full")
            return
        s.known_to_client.add(tid)
        self._send(peer, p.Regack(tid, pkt.msg_id))

    def _on_regack(
        self, pkt: p.Regack, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "REGACK without a session")
            return
        inflight = s.inflight
        if (
            inflight is None
            or not isinstance(inflight.packet, p.Register)
            or inflight.packet.msg_id != pkt.msg_id
        ):
            self._drop(peer, "unexpected REGACK")
            return
        s.inflight = None
        if pkt.return_code == p.ReturnCode.ACCEPTED:
            s.known_to_client.add(inflight.packet.topic_id)
        elif s.queue:
            s.queue.popleft()  # the client refused the topic: drop the message that needed it
            self._count("dropped_outbound")
        self._pump(s, now)

    # --- publish from the client ----------------------------------------------------------------

    def _require_active(self, s: GatewaySession | None, peer: Hashable, what: str) -> bool:
        if s is not None and s.state in (SessionState.ACTIVE, SessionState.AWAKE):
            return True
        if s is None:
            # Tell a client whose session we do not know (e.g. after a gateway restart).
            self._send(peer, p.Disconnect())
            self._drop(peer, f"{what} without a session")
        else:
            self._drop(peer, f"{what} in state {s.state.name}")
        return False

    def _on_publish(
        self, pkt: p.Publish, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if pkt.qos == -1:
            self._publish_qos_m1(pkt, peer, s)
            return
        if not self._require_active(s, peer, "PUBLISH"):
            return
        assert s is not None
        topic = self._resolve(s, pkt.topic_id, pkt.topic_id_type)
        if topic is None:
            # Never forward with an empty topic (the reference gateway does at QoS 0).
            self._send(peer, p.Puback(pkt.topic_id, pkt.msg_id, p.ReturnCode.INVALID_TOPIC_ID))
            self._refuse(s, peer, f"PUBLISH to unknown topic id {pkt.topic_id}")
            return
        conn = self._conn(s)
        if pkt.qos == 0:
            self._count("published")
            self._actions.append(BrokerPublish(conn, topic, pkt.data, 0, pkt.retain))
            return
        if pkt.qos == 1:
            if pkt.msg_id in s.pending_in:
                return  # already forwarded; the PUBACK follows the broker's ack
            if pkt.dup and pkt.msg_id in s.recent_acked:
                self._send(peer, p.Puback(pkt.topic_id, pkt.msg_id))
                return
        else:
            state = s.qos2_in.get(pkt.msg_id)
            if state == "forwarding":
                return
            if state == "received":
                self._send(peer, p.Pubrec(pkt.msg_id))
                return
            s.qos2_in[pkt.msg_id] = "forwarding"
        s.pending_in.add(pkt.msg_id)
        token = self._new_token(s.peer, "publish", (pkt.msg_id, pkt.topic_id, pkt.qos))
        self._count("published")
        self._actions.append(BrokerPublish(conn, topic, pkt.data, pkt.qos, pkt.retain, token))

    def _publish_qos_m1(self, pkt: p.Publish, peer: Hashable, s: GatewaySession | None) -> None:
        topic = self._resolve(s, pkt.topic_id, pkt.topic_id_type)
        if topic is None:
            self._drop(peer, f"QoS -1 PUBLISH to unknown topic id {pkt.topic_id}")
            return
        self._count("published")
        conn = self._conn(s) if s is not None and s.state == SessionState.ACTIVE else GATEWAY_CONN
        self._actions.append(BrokerPublish(conn, topic, pkt.data, 0, pkt.retain))

    def broker_published(self, conn: Hashable, token: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        peer, what, (msg_id, topic_id, qos) = entry
        s = self._sessions.get(peer)
        if s is None or what != "publish":
            return
        s.pending_in.discard(msg_id)
        if qos == 1:
            s.remember_acked(msg_id)
            self._send(peer, p.Puback(topic_id, msg_id))
        else:
            s.qos2_in[msg_id] = "received"
            self._send(peer, p.Pubrec(msg_id))

    def _on_pubrel(
        self, pkt: p.Pubrel, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "PUBREL without a session")
            return
        if s.qos2_in.get(pkt.msg_id) == "forwarding":
            return  # PUBREC not sent yet: the client will retry
        s.qos2_in.pop(pkt.msg_id, None)
        self._send(peer, p.Pubcomp(pkt.msg_id))

    # --- acks from the client for our deliveries ------------------------------------------------

    def _on_puback(
        self, pkt: p.Puback, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "PUBACK without a session")
            return
        inflight = s.inflight
        if (
            inflight is None
            or not isinstance(inflight.packet, p.Publish)
            or inflight.packet.msg_id != pkt.msg_id
        ):
            self._drop(peer, "unexpected PUBACK")
            return
        if pkt.return_code == p.ReturnCode.INVALID_TOPIC_ID:
            # The client lost the id: register again and resend.
            s.known_to_client.discard(inflight.packet.topic_id)
            if inflight.message is not None:
                s.queue.appendleft(inflight.message)
        elif pkt.return_code != p.ReturnCode.ACCEPTED:
            self._count("dropped_outbound")
        s.inflight = None
        self._pump(s, now)

    def _on_pubrec(
        self, pkt: p.Pubrec, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "PUBREC without a session")
            return
        inflight = s.inflight
        if inflight is None:
            self._drop(peer, "unexpected PUBREC")
            return
        pkt_in = inflight.packet
        if isinstance(pkt_in, p.Publish) and pkt_in.qos == 2 and pkt_in.msg_id == pkt.msg_id:
            inflight.packet = p.Pubrel(pkt.msg_id)
            inflight.sent_at = now
            inflight.retries = 0
            self._send(peer, inflight.packet)
        elif isinstance(pkt_in, p.Pubrel) and pkt_in.msg_id == pkt.msg_id:
            self._send(peer, pkt_in)
        else:
            self._drop(peer, "unexpected PUBREC")

    def _on_pubcomp(
        self, pkt: p.Pubcomp, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "PUBCOMP without a session")
            return
        inflight = s.inflight
        if (
            inflight is None
            or not isinstance(inflight.packet, p.Pubrel)
            or inflight.packet.msg_id != pkt.msg_id
        ):
            self._drop(peer, "unexpected PUBCOMP")
            return
        s.inflight = None
        self._pump(s, now)

    # --- subscriptions ------------------------------------------------------------------------

    def _on_subscribe(
        self, pkt: p.Subscribe, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if not self._require_active(s, peer, "SUBSCRIBE"):
            return
        assert s is not None
        if pkt.topic_id_type == p.TopicIdType.PREDEFINED:
            assert isinstance(pkt.topic, int)
            name = self.config.predefined.name_for(s.client_id, pkt.topic)
            if name is None:
                self._send(peer, p.Suback(0, pkt.msg_id, 0, p.ReturnCode.INVALID_TOPIC_ID))
                self._refuse(s, peer, f"SUBSCRIBE to unknown predefined id {pkt.topic}")
                return
            topic_id = pkt.topic
        else:
            assert isinstance(pkt.topic, str)
            name = pkt.topic
            why = validate_filter(name)
            if why:
                self._send(peer, p.Suback(0, pkt.msg_id, 0, p.ReturnCode.NOT_SUPPORTED))
                self._refuse(s, peer, f"SUBSCRIBE {name!r}: {why}")
                return
            topic_id = 0
            if pkt.topic_id_type == p.TopicIdType.SHORT:
                s.short_subs.add(name)
                topic_id = p.short_topic_id(name)
            elif "+" not in name and "#" not in name:
                tid = s.topics.assign(name)
                if tid is None:
                    self._send(peer, p.Suback(0, pkt.msg_id, 0, p.ReturnCode.CONGESTION))
                    self._refuse(s, peer, "topic table full")
                    return
                topic_id = tid
        s.subscriptions[name] = pkt.qos
        data = (pkt.msg_id, topic_id, pkt.qos, int(pkt.topic_id_type))
        if self.config.mode == "transparent":
            token = self._new_token(peer, "subscribe", data)
            self._actions.append(BrokerSubscribe(peer, name, pkt.qos, token))
            return
        if not self._agg_add(peer, name, pkt.qos, data):
            self._suback(s, pkt.msg_id, topic_id, pkt.qos, int(pkt.topic_id_type))

    def _agg_add(self, peer: Hashable, name: str, qos: int, data: tuple[int, ...] | None) -> bool:
        """Aggregating mode: count a subscriber; True if a broker SUBSCRIBE was issued."""
        self._agg_subs.setdefault(name, {})[peer] = qos
        if self._agg_broker_qos.get(name, -1) >= qos:
            return False
        self._agg_broker_qos[name] = qos
        if data is None:
            token = self._new_token(GATEWAY_CONN, "resubscribe", ())
        else:
            token = self._new_token(peer, "subscribe", data)
        self._actions.append(BrokerSubscribe(GATEWAY_CONN, name, qos, token))
        return True

    def _suback(self, s: GatewaySession, msg_id: int, topic_id: int, qos: int, tit: int) -> None:
        if topic_id and tit == p.TopicIdType.NORMAL:
            s.known_to_client.add(topic_id)  # the client learns the id from the SUBACK
        self._send(s.peer, p.Suback(topic_id, msg_id, qos))

    def broker_subscribed(self, conn: Hashable, token: int, granted_qos: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        peer, what, data = entry
        s = self._sessions.get(peer)
        if s is None or what != "subscribe":
            return
        msg_id, topic_id, qos, tit = data
        if granted_qos not in (0, 1, 2):
            self._send(peer, p.Suback(0, msg_id, 0, p.ReturnCode.NOT_SUPPORTED))
            self._refuse(s, peer, "broker refused the subscription")
            return
        self._suback(s, msg_id, topic_id, min(granted_qos, qos), tit)

    def _on_unsubscribe(
        self, pkt: p.Unsubscribe, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if not self._require_active(s, peer, "UNSUBSCRIBE"):
            return
        assert s is not None
        if pkt.topic_id_type == p.TopicIdType.PREDEFINED:
            assert isinstance(pkt.topic, int)
            name = self.config.predefined.name_for(s.client_id, pkt.topic)
        else:
            assert isinstance(pkt.topic, str)
            name = pkt.topic
        if name is None or name not in s.subscriptions:
            self._send(peer, p.Unsuback(pkt.msg_id))
            return
        del s.subscriptions[name]
        s.short_subs.discard(name)
        if self.config.mode == "transparent":
            token = self._new_token(peer, "unsubscribe", (pkt.msg_id,))
            self._actions.append(BrokerUnsubscribe(peer, name, token))
            return
        self._agg_release(peer, name)
        self._send(peer, p.Unsuback(pkt.msg_id))

    def _agg_release(self, peer: Hashable, name: str) -> None:
        subs = self._agg_subs.get(name)
        if subs is None:
            return
        subs.pop(peer, None)
        if not subs:
            del self._agg_subs[name]
            self._agg_broker_qos.pop(name, None)
            token = self._new_token(GATEWAY_CONN, "unsubscribe", (0,))
            self._actions.append(BrokerUnsubscribe(GATEWAY_CONN, name, token))

    def broker_unsubscribed(self, conn: Hashable, token: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        peer, what, (msg_id,) = entry
        s = self._sessions.get(peer)
        if s is not None and what == "unsubscribe":
            self._send(peer, p.Unsuback(msg_id))

    # --- messages from the broker ---------------------------------------------------------------

    def broker_message(
        self, conn: Hashable, topic: str, payload: bytes, qos: int, retain: bool, now: float
    ) -> None:
        if conn is GATEWAY_CONN:
            targets: dict[Hashable, int] = {}
            for name, subs in self._agg_subs.items():
                if topic_matches(name, topic):
                    for peer, sub_qos in subs.items():
                        targets[peer] = max(targets.get(peer, -1), sub_qos)
            for peer, sub_qos in targets.items():
                s = self._sessions.get(peer)
                if s is not None:
                    self._deliver(s, OutboundMessage(topic, payload, min(qos, sub_qos), retain), now)
            return
        s = self._sessions.get(conn)
        if s is None:
            return
        self._deliver(s, OutboundMessage(topic, payload, qos, retain), now)

    def _deliver(self, s: GatewaySession, msg: OutboundMessage, now: float) -> None:
        self._count("delivered")
        if s.state == SessionState.ASLEEP:
            if len(s.sleep_buffer) >= self.config.max_buffered:
                self._count("buffer_overflow")
                self._events.append(PacketRefused(s.peer, s.client_id, "sleep buffer full; message dropped"))
                return
            s.sleep_buffer.append(msg)
            return
        s.queue.append(msg)
        self._pump(s, now)
        self._schedule(s)

    def _topic_ref(self, s: GatewaySession, topic: str) -> tuple[int, p.TopicIdType] | None:
        tid = self.config.predefined.id_for(s.client_id, topic)
        if tid is not None:
            return tid, p.TopicIdType.PREDEFINED
        if topic in s.short_subs:
            return p.short_topic_id(topic), p.TopicIdType.SHORT
        tid = s.topics.id_for(topic)
        if tid is not None and tid in s.known_to_client:
            return tid, p.TopicIdType.NORMAL
        return None

    def _pump(self, s: GatewaySession, now: float) -> None:
        """Send queued messages toward the client: QoS 0 at once, QoS 1/2 and REGISTER one at a time."""
        while s.inflight is None and s.queue and s.state in (SessionState.ACTIVE, SessionState.AWAKE):
            msg = s.queue[0]
            ref = self._topic_ref(s, msg.topic)
            if ref is None:
                tid = s.topics.assign(msg.topic)
                if tid is None:
                    s.queue.popleft()
                    self._count("dropped_outbound")
                    continue
                reg = p.Register(tid, s.next_msg_id(), msg.topic)
                s.inflight = Inflight(reg, now)
                self._send(s.peer, reg)
                return
            topic_id, tit = ref
            s.queue.popleft()
            if msg.qos <= 0:
                self._send(s.peer, p.Publish(topic_id, msg.payload, 0, 0, msg.retain, False, tit))
                continue
            pub = p.Publish(topic_id, msg.payload, msg.qos, s.next_msg_id(), msg.retain, False, tit)
            s.inflight = Inflight(pub, now, message=msg)
            self._send(s.peer, pub)
            return
        if s.state == SessionState.AWAKE and s.inflight is None and not s.queue:
            # Buffered messages delivered: tell the client to go back to sleep.
            self._send(s.peer, p.Pingresp())
            s.state = SessionState.ASLEEP

    # --- keep-alive, sleep, disconnect --------------------------------------------------------

    def _on_pingreq(
        self, pkt: p.Pingreq, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if pkt.client_id is not None and (s is None or s.client_id != pkt.client_id):
            other = self._by_client_id.get(pkt.client_id)
            if other is not None:
                cand = self._sessions[other]
                if cand.state in (SessionState.ASLEEP, SessionState.AWAKE) and (
                    identity is None or cand.identity == identity
                ):
                    self._rebind(cand, peer)  # the sleeper woke up at a new address
                    s = cand
                    s.last_rx = now
        if s is None:
            self._send(peer, p.Disconnect())
            self._drop(peer, "PINGREQ without a session")
            return
        if s.state == SessionState.ASLEEP and pkt.client_id is not None:
            s.state = SessionState.AWAKE
            n = len(s.sleep_buffer)
            self._events.append(ClientAwake(peer, s.client_id, n))
            s.queue.extend(s.sleep_buffer)
            s.sleep_buffer.clear()
            self._pump(s, now)
            return
        if s.state == SessionState.AWAKE:
            # A retransmitted wake-up PINGREQ: the PINGRESP follows the last buffered message.
            return
        if s.state in (SessionState.ACTIVE, SessionState.ASLEEP):
            self._send(peer, p.Pingresp())
        else:
            self._drop(peer, f"PINGREQ in state {s.state.name}")

    def _on_pingresp(
        self, pkt: p.Pingresp, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._drop(peer, "PINGRESP without a session")

    def _flush_sleep_buffer(self, s: GatewaySession, now: float) -> None:
        s.queue.extend(s.sleep_buffer)
        s.sleep_buffer.clear()
        self._pump(s, now)

    def _on_disconnect(
        self, pkt: p.Disconnect, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if s is None:
            self._send(peer, p.Disconnect())
            return
        if pkt.duration and s.state in (SessionState.ACTIVE, SessionState.AWAKE, SessionState.ASLEEP):
            s.sleep_duration = pkt.duration
            # Undelivered messages wait in the sleep buffer, in order.
            if s.inflight is not None and s.inflight.message is not None:
                s.sleep_buffer.append(s.inflight.message)
            s.inflight = None
            s.sleep_buffer.extend(s.queue)
            s.queue.clear()
            s.state = SessionState.ASLEEP
            self._send(peer, p.Disconnect())
            self._events.append(ClientAsleep(peer, s.client_id, pkt.duration))
            return
        self._send(peer, p.Disconnect())
        self._close(s, "client disconnected", lost=False, notify_client=False)

    def _on_willtopicupd(
        self, pkt: p.WillTopicUpd, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if not self._require_active(s, peer, "WILLTOPICUPD"):
            return
        assert s is not None
        if not pkt.topic:
            s.will = None
        elif validate_topic_name(pkt.topic):
            self._send(peer, p.WillTopicResp(p.ReturnCode.NOT_SUPPORTED))
            return
        else:
            s.will = WillSpec(pkt.topic, s.will.message if s.will else b"", pkt.qos, pkt.retain)
        self._send(peer, p.WillTopicResp())

    def _on_willmsgupd(
        self, pkt: p.WillMsgUpd, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if not self._require_active(s, peer, "WILLMSGUPD"):
            return
        assert s is not None
        if s.will is None:
            self._send(peer, p.WillMsgResp(p.ReturnCode.NOT_SUPPORTED))
            return
        s.will = WillSpec(s.will.topic, pkt.message, s.will.qos, s.will.retain)
        self._send(peer, p.WillMsgResp())

    def _on_searchgw(
        self, pkt: p.SearchGw, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        self._send(peer, p.GwInfo(self.config.gw_id))

    def broker_connection_lost(self, conn: Hashable, now: float) -> None:
        """The broker closed a client's connection (transparent mode): end that session."""
        s = self._sessions.get(conn)
        if s is not None:
            self._send(s.peer, p.Disconnect())
            self._close(s, "broker closed the connection", lost=False, notify_client=False, broker_gone=True)

    def _close(
        self,
        s: GatewaySession,
        reason: str,
        *,
        lost: bool,
        notify_client: bool = False,
        broker_gone: bool = False,
    ) -> None:
        self._sessions.pop(s.peer, None)
        if self._by_client_id.get(s.client_id) == s.peer:
            del self._by_client_id[s.client_id]
        for tok in [t for t, (peer, _, _) in self._pending.items() if peer == s.peer]:
            del self._pending[tok]
        conn = self._conn(s)
        will_published = False
        if (
            lost
            and s.will is not None
            and s.state
            not in (SessionState.WAIT_WILL_TOPIC, SessionState.WAIT_WILL_MSG, SessionState.WAIT_BROKER)
        ):
            self._actions.append(BrokerPublish(conn, s.will.topic, s.will.message, s.will.qos, s.will.retain))
            will_published = True
        if self.config.mode == "transparent":
            if not broker_gone and s.state not in (SessionState.WAIT_WILL_TOPIC, SessionState.WAIT_WILL_MSG):
                self._actions.append(BrokerDisconnect(s.peer))
        else:
            for name in list(s.subscriptions):
                self._agg_release(s.peer, name)
        if notify_client:
            self._send(s.peer, p.Disconnect())
        if lost:
            self._count("lost")
            self._events.append(ClientLost(s.peer, s.client_id, reason, will_published))
        else:
            self._events.append(ClientDisconnected(s.peer, s.client_id, reason))


_Handler = Callable[[Gateway, Any, Hashable, "GatewaySession | None", float, "str | None"], None]

_HANDLERS: dict[type[p.Packet], _Handler] = {
    p.Connect: Gateway._on_connect,
    p.WillTopic: Gateway._on_willtopic,
    p.WillMsg: Gateway._on_willmsg,
    p.Register: Gateway._on_register,
    p.Regack: Gateway._on_regack,
    p.Publish: Gateway._on_publish,
    p.Puback: Gateway._on_puback,
    p.Pubrec: Gateway._on_pubrec,
    p.Pubrel: Gateway._on_pubrel,
    p.Pubcomp: Gateway._on_pubcomp,
    p.Subscribe: Gateway._on_subscribe,
    p.Unsubscribe: Gateway._on_unsubscribe,
    p.Pingreq: Gateway._on_pingreq,
    p.Pingresp: Gateway._on_pingresp,
    p.Disconnect: Gateway._on_disconnect,
    p.WillTopicUpd: Gateway._on_willtopicupd,
    p.WillMsgUpd: Gateway._on_willmsgupd,
    p.SearchGw: Gateway._on_searchgw,
}
