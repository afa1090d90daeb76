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
from ._gateway_base import _stamp
from ._gateway_config import GatewayConfig
from ._gateway_events import (
    GATEWAY_CONN,
    BrokerAck,
    BrokerPublish,
    BrokerSubscribe,
    BrokerUnsubscribe,
    DatagramDropped,
)
from ._gateway_lifecycle import GatewayLifecycle
from ._gateway_session import BrokerReceipt, GatewaySession, OutboundMessage, SessionState
from ._topics import validate_filter, validate_topic_name

__all__ = ["Gateway", "GatewayConfig"]


class Gateway(GatewayLifecycle):
    """The MQTT-SN gateway core: feed it datagrams and broker answers, drain its outputs."""

    def receive_datagram(
        self, data: bytes, peer: Hashable, now: float, *, identity: str | None = None
    ) -> None:
        """Handle one datagram from ``peer``. ``identity``: the verified transport identity."""
        self._now_hint = now
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
            if identity != s.identity:
                # A session only ever hears from the identity it was created under.
                self._drop(peer, "transport identity changed within a session")
                return
            s.last_rx = now
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
            # the client refused the topic: drop the message that needed it
            self._settle(s, s.queue.popleft())
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
        token = self._new_token(s.conn, "publish", (pkt.msg_id, pkt.topic_id, pkt.qos))
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
        key, what, (msg_id, topic_id, qos) = entry
        s = self._by_conn.get(key)
        if s is None or what != "publish":
            return
        peer = s.peer
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
        else:
            if pkt.return_code != p.ReturnCode.ACCEPTED:
                self._count("dropped_outbound")
            self._settle(s, inflight.message)  # the node has it (or refused it for good)
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
            self._settle(s, inflight.message)  # PUBREC: the node holds the message now
            inflight.message = None
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
            token = self._new_token(s.conn, "subscribe", data)
            self._actions.append(BrokerSubscribe(s.conn, name, pkt.qos, token))
            return
        if not self._agg_add(s.conn, name, pkt.qos, data):
            self._suback(s, pkt.msg_id, topic_id, pkt.qos, int(pkt.topic_id_type))
            self._release_held(s, now)

    def broker_subscribed(self, conn: Hashable, token: int, granted_qos: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        key, what, data = entry
        s = self._by_conn.get(key)
        if s is None or what != "subscribe":
            return
        peer = s.peer
        msg_id, topic_id, qos, tit = data
        if granted_qos not in (0, 1, 2):
            self._send(peer, p.Suback(0, msg_id, 0, p.ReturnCode.NOT_SUPPORTED))
            self._refuse(s, peer, "broker refused the subscription")
            return
        self._suback(s, msg_id, topic_id, min(granted_qos, qos), tit)
        if self.config.mode == "aggregating":
            self._release_held(s, now)

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
            token = self._new_token(s.conn, "unsubscribe", (pkt.msg_id,))
            self._actions.append(BrokerUnsubscribe(s.conn, name, token))
            return
        self._agg_release(s.conn, name)
        self._send(peer, p.Unsuback(pkt.msg_id))

    def broker_unsubscribed(self, conn: Hashable, token: int, now: float) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:
            return
        key, what, (msg_id,) = entry
        s = self._by_conn.get(key)
        if s is not None and what == "unsubscribe":
            self._send(s.peer, p.Unsuback(msg_id))

    def broker_message(
        self,
        conn: Hashable,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        now: float,
        ack: Hashable | None = None,
    ) -> None:
        """A PUBLISH from the broker. ``ack`` (QoS 1/2): the driver's handle for acknowledging it
        to the broker; the gateway returns it in a :class:`BrokerAck` once the node(s) have the
        message (their PUBACK, or PUBREC at QoS 2). Without ``ack`` nothing is tracked."""
        self._now_hint = now
        receipt = BrokerReceipt(conn, ack) if ack is not None and qos > 0 else None
        if conn is GATEWAY_CONN:
            targets: dict[Hashable, int] = {}
            for name in self._agg_matching(topic):
                for key, sub_qos in self._agg_subs[name].items():
                    targets[key] = max(targets.get(key, -1), sub_qos)
            sessions = [
                (s, min(qos, q)) for k, q in targets.items() if (s := self._by_conn.get(k)) is not None
            ]
            if receipt is not None:
                receipt.pending = sum(1 for _, eff in sessions if eff > 0)
                if not sessions:  # nobody subscribes (yet): held, unacknowledged, for a while
                    self._hold(OutboundMessage(topic, payload, qos, retain), receipt)
                elif not receipt.pending:  # only QoS 0 subscribers
                    self._actions.append(BrokerAck(conn, receipt.ack))
            for s, eff in sessions:
                r = receipt if eff > 0 else None
                self._deliver(s, OutboundMessage(topic, payload, eff, retain, r), now)
            return
        s = self._by_conn.get(conn)
        if s is None:
            return  # not acknowledged: it stays in the client's broker session
        if receipt is not None:
            receipt.pending = 1
        self._deliver(s, OutboundMessage(topic, payload, qos, retain, receipt), now)


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
