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

from collections.abc import Callable, Hashable
from typing import Any

from . import _packets as p
from ._codec import decode, peek_header
from ._errors import DecodeError
from ._gateway_base import GatewayBase, GatewayConfig, _stamp
from ._gateway_events import (
    GATEWAY_CONN,
    BrokerDisconnect,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
    ClientAsleep,
    ClientAwake,
    ClientConnected,
    DatagramDropped,
    WillSpec,
)
from ._gateway_session import GatewaySession, OutboundMessage, SessionState
from ._topics import topic_matches, validate_filter, validate_topic_name

__all__ = ["Gateway", "GatewayConfig"]


class Gateway(GatewayBase):
    """The MQTT-SN gateway core: feed it datagrams and broker answers, drain its outputs."""

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
            self._actions.append(BrokerPublish(conn, topic, pkt.data, 0, pkt.retain, None, *_stamp(s)))
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
        self._actions.append(BrokerPublish(conn, topic, pkt.data, pkt.qos, pkt.retain, token, *_stamp(s)))

    def _publish_qos_m1(self, pkt: p.Publish, peer: Hashable, s: GatewaySession | None) -> None:
        topic = self._resolve(s, pkt.topic_id, pkt.topic_id_type)
        if topic is None:
            self._drop(peer, f"QoS -1 PUBLISH to unknown topic id {pkt.topic_id}")
            return
        self._count("published")
        active = s is not None and s.state == SessionState.ACTIVE
        conn = self._conn(s) if s is not None and active else GATEWAY_CONN
        stamp = _stamp(s) if s is not None and active else (None, False)
        self._actions.append(BrokerPublish(conn, topic, pkt.data, 0, pkt.retain, None, *stamp))

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

    def broker_unsubscribed(self, conn: Hashable, token: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        peer, what, (msg_id,) = entry
        s = self._sessions.get(peer)
        if s is not None and what == "unsubscribe":
            self._send(peer, p.Unsuback(msg_id))

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

    def transport_lost(self, peer: Hashable, now: float, reason: str, *, keep_sleeping: bool = True) -> bool:
        """The transport under ``peer`` ended (DTLS session closed, link gone): the client is lost,
        its will is published, its broker connection closed. A sleeping session is kept when
        ``keep_sleeping`` (MQTT-SN sleep outlives the transport). Returns True if a session ended."""
        s = self._sessions.get(peer)
        if s is None or (keep_sleeping and s.state in (SessionState.ASLEEP, SessionState.AWAKE)):
            return False
        self._close(s, reason, lost=True)
        return True

    def broker_connection_lost(self, conn: Hashable, now: float) -> None:
        """The broker closed a client's connection (transparent mode): end that session."""
        s = self._sessions.get(conn)
        if s is not None:
            self._send(s.peer, p.Disconnect())
            self._close(s, "broker closed the connection", lost=False, notify_client=False, broker_gone=True)


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
