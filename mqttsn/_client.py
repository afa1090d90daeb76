"""Sans-I/O MQTT-SN v1.2 client session.

The session takes datagrams and ``now`` and returns datagrams, events and its next timer; it never
touches a socket or a clock, so a simulator can drive it on virtual time (aioquic style):

    session.receive_datagram(data, now) / session.handle_timer(now) / session.connect(now) ...
    for d in session.datagrams_to_send(now): sock.send(d)
    for e in session.events(): ...
    loop.call_at(session.get_timer(), ...)

Requests that expect an answer (CONNECT, REGISTER, PUBLISH QoS 1/2, PUBREL, SUBSCRIBE,
UNSUBSCRIBE, PINGREQ, DISCONNECT, WILL*UPD) go out stop-and-wait: one in flight, the rest queued in
call order. QoS 0/-1 publishes whose topic id is already known skip the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._client_base import ClientBase
from ._client_events import (
    Connected,
    ConnectionRefused,
    Disconnected,
    GatewayFound,
    MessageReceived,
    PingResponse,
    ProtocolViolation,
    PublishAcked,
    Registered,
    Subscribed,
    Unsubscribed,
    WakeCompleted,
    WillUpdated,
)
from ._client_requests import Request, RequestKind
from ._client_state import ONLINE, ClientState, ClientStats, Will
from ._client_topics import RESERVED_TOPIC_IDS, check_topic_name
from ._codec import decode
from ._errors import DecodeError, LocalProtocolError, MqttSnError
from ._packets import (
    Advertise,
    Connack,
    Connect,
    Disconnect,
    GwInfo,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Regack,
    Register,
    ReturnCode,
    SearchGw,
    Suback,
    Subscribe,
    TopicIdType,
    Unsuback,
    Unsubscribe,
    WillMsg,
    WillMsgReq,
    WillMsgResp,
    WillMsgUpd,
    WillTopic,
    WillTopicReq,
    WillTopicResp,
    WillTopicUpd,
    short_topic_id,
)

__all__ = ["ClientSession", "ClientState", "ClientStats", "Will"]

_S = ClientState
_Kind = RequestKind


def _rc(value: int) -> int:
    try:
        return ReturnCode(value)
    except ValueError:
        return value


class ClientSession(ClientBase):
    """One MQTT-SN v1.2 client talking to one gateway."""

    # ------------------------------------------------------------------ commands

    def connect(self, now: float) -> None:
        self._require("connect", allow_leaving=True)
        self._drop_queue()
        if self.clean_session:
            self.topics.clear()
            self._qos2_in.clear()
        self._transition("connect")
        pkt = Connect(self.client_id, self.keep_alive, self.clean_session, self.will is not None)
        self._enqueue(Request(_Kind.CONNECT, pkt), now)

    def register(self, topic: str, now: float) -> int:
        self._require("register")
        check_topic_name(topic)
        msg_id = self._queue.alloc_msg_id()
        self._enqueue(Request(_Kind.REGISTER, Register(0, msg_id, topic), msg_id, topic), now)
        return msg_id

    def publish(
        self,
        topic: str | int,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        *,
        now: float,
        short: bool = False,
    ) -> int:
        if qos not in (-1, 0, 1, 2) or isinstance(qos, bool):
            raise LocalProtocolError(f"qos must be -1, 0, 1 or 2, got {qos!r}")
        if not isinstance(payload, bytes):
            raise LocalProtocolError(f"payload must be bytes, got {type(payload).__name__}")
        kind, ref = self.topics.reference(topic, short)
        if kind == TopicIdType.NORMAL:
            assert isinstance(ref, str)
            check_topic_name(ref)
        elif kind == TopicIdType.SHORT:
            assert isinstance(ref, str)
            ref = short_topic_id(ref)
        if qos == -1:
            if kind == TopicIdType.NORMAL:
                raise LocalProtocolError("QoS -1 needs a predefined topic id or a short topic name")
            assert isinstance(ref, int)
            self._send(Publish(ref, payload, -1, 0, retain, topic_id_type=kind), now, alive=False)
            return 0
        self._require("publish")
        if qos == 0:
            tid = ref if isinstance(ref, int) else self.topics.registered(ref)
            if tid is not None:  # nothing to wait for: skip the queue
                self._send(Publish(tid, payload, 0, 0, retain, topic_id_type=kind), now)
                return 0
        msg_id = self._queue.alloc_msg_id() if qos > 0 else 0
        self._enqueue(Request(_Kind.PUBLISH, None, msg_id, ref, kind, payload, qos, retain), now)
        return msg_id

    def subscribe(self, topic: str | int, qos: int = 0, *, now: float, short: bool = False) -> int:
        self._require("subscribe")
        kind, ref = self.topics.reference(topic, short)
        msg_id = self._queue.alloc_msg_id()
        try:
            pkt = Subscribe(msg_id, ref, qos, False, kind)
        except LocalProtocolError:
            self._queue.release(msg_id)
            raise
        self._enqueue(Request(_Kind.SUBSCRIBE, pkt, msg_id, topic, kind, qos=qos), now)
        return msg_id

    def unsubscribe(self, topic: str | int, *, now: float, short: bool = False) -> int:
        self._require("unsubscribe")
        kind, ref = self.topics.reference(topic, short)
        msg_id = self._queue.alloc_msg_id()
        try:
            pkt = Unsubscribe(msg_id, ref, kind)
        except LocalProtocolError:
            self._queue.release(msg_id)
            raise
        self._enqueue(Request(_Kind.UNSUBSCRIBE, pkt, msg_id, topic, kind), now)
        return msg_id

    def ping(self, now: float) -> None:
        self._require("ping")
        self._enqueue(Request(_Kind.PINGREQ, Pingreq()), now)

    def sleep(self, duration: int, now: float) -> None:
        self._require("sleep")
        pkt = Disconnect(duration)  # validates 0..65535
        self._leaving = True
        self._enqueue(Request(_Kind.DISCONNECT, pkt), now)

    def wake(self, now: float) -> None:
        self._require("wake")
        self._transition("wake")
        self._enqueue(Request(_Kind.PINGREQ, Pingreq(self.client_id)), now)

    def disconnect(self, now: float) -> None:
        self._require("disconnect")
        self._leaving = True
        self._enqueue(Request(_Kind.DISCONNECT, Disconnect()), now)

    def update_will(self, will: Will | None, now: float) -> None:
        self._require("update_will")
        self.will = will
        if will is None:  # an empty WILLTOPICUPD deletes topic and message
            self._enqueue(Request(_Kind.WILLTOPICUPD, WillTopicUpd()), now)
            return
        pkt = WillTopicUpd(will.topic, will.qos, will.retain)
        self._enqueue(Request(_Kind.WILLTOPICUPD, pkt), now)
        self._enqueue(Request(_Kind.WILLMSGUPD, WillMsgUpd(will.message)), now)

    def search_gateway(self, now: float, radius: int = 0) -> None:
        # The random 0..T_SEARCHGW delay belongs to the driver: this module has no randomness.
        self._send(SearchGw(radius), now, alive=False)

    # ------------------------------------------------------------------ sans-I/O plumbing

    def receive_datagram(self, data: bytes, now: float) -> None:
        self.stats.datagrams_in += 1
        try:
            packet = decode(data)
        except DecodeError as exc:
            self.stats.decode_errors += 1
            self._events.append(ProtocolViolation(f"undecodable datagram: {exc}"))
            return
        handler = _HANDLERS.get(type(packet))
        if handler is None:
            self.stats.violations += 1
            name = packet.msg_type.name
            self._events.append(ProtocolViolation(f"a gateway does not send {name} to a client"))
            return
        try:
            handler(self, packet, now)
        except MqttSnError as exc:  # defensive: the peer must never make us raise
            self.stats.violations += 1
            self._events.append(ProtocolViolation(f"{packet.msg_type.name}: {exc}"))

    # ------------------------------------------------------------------ internals: inbound

    def _on_connack(self, p: Connack, now: float) -> None:
        if self._state is not _S.CONNECTING or self._queue.in_flight(_Kind.CONNECT) is None:
            self._ignore()
            return
        self._queue.pop_head()
        rc = _rc(p.return_code)
        if rc == ReturnCode.ACCEPTED:
            self._transition("connack")
            self._events.append(Connected(rc))
            self._pump(now)
        else:
            self._drop_queue()
            self._transition("refused")
            self._events.append(ConnectionRefused(rc))

    def _on_willtopicreq(self, p: WillTopicReq, now: float) -> None:
        head = self._queue.in_flight(_Kind.CONNECT)
        if head is None:
            self._ignore()
            return
        w = self.will
        self._send(WillTopic(w.topic, w.qos, w.retain) if w else WillTopic(), now)
        head.deadline = now + self.retry_interval  # the gateway is answering: restart the wait

    def _on_willmsgreq(self, p: WillMsgReq, now: float) -> None:
        head = self._queue.in_flight(_Kind.CONNECT)
        if head is None:
            self._ignore()
            return
        self._send(WillMsg(self.will.message if self.will else b""), now)
        head.deadline = now + self.retry_interval

    def _on_register(self, p: Register, now: float) -> None:
        if self._state not in ONLINE:
            self._ignore()
            return
        if p.topic_id in RESERVED_TOPIC_IDS:
            self._send(Regack(p.topic_id, p.msg_id, ReturnCode.INVALID_TOPIC_ID), now)
            return
        self.topics.learn_inbound(p.topic_id, p.topic_name)
        self._send(Regack(p.topic_id, p.msg_id, ReturnCode.ACCEPTED), now)

    def _on_regack(self, p: Regack, now: float) -> None:
        head = self._queue.in_flight(_Kind.REGISTER, p.msg_id)
        if head is None:
            self._ignore()
            return
        self._queue.pop_head()
        assert isinstance(head.topic, str)
        rc = _rc(p.return_code)
        ok = rc == ReturnCode.ACCEPTED and p.topic_id not in RESERVED_TOPIC_IDS
        if ok:
            self.topics.learn_own(head.topic, p.topic_id)
        self._events.append(Registered(head.topic, p.topic_id, p.msg_id, rc))
        nxt = self._queue.head
        if not ok and head.auto and nxt is not None and nxt.kind is _Kind.PUBLISH:
            # The PUBLISH this REGISTER was for cannot go out: report it instead of looping.
            self._queue.pop_head()
            if nxt.qos > 0:
                fail = rc if rc != ReturnCode.ACCEPTED else ReturnCode.INVALID_TOPIC_ID
                self._events.append(PublishAcked(nxt.msg_id, fail))
        self._pump(now)

    def _on_publish(self, p: Publish, now: float) -> None:
        if self._state not in ONLINE:
            self._ignore()
            return
        topic = self.topics.resolve(p.topic_id, p.topic_id_type)
        if topic is None and p.topic_id_type == TopicIdType.NORMAL and p.qos > 0:
            # v1.2 §6.7: reject an unknown topic id; QoS 0 is delivered with topic=None.
            self._send(Puback(p.topic_id, p.msg_id, ReturnCode.INVALID_TOPIC_ID), now)
            return
        msg = MessageReceived(topic, p.topic_id, p.topic_id_type, p.data, p.qos, p.retain, p.dup)
        if p.qos == 2:
            if p.msg_id in self._qos2_in:
                self.stats.duplicates += 1
            else:
                self._qos2_in.add(p.msg_id)
                self._events.append(msg)
            self._send(Pubrec(p.msg_id), now)
            return
        self._events.append(msg)
        if p.qos == 1:
            self._send(Puback(p.topic_id, p.msg_id, ReturnCode.ACCEPTED), now)

    def _on_pubrel(self, p: Pubrel, now: float) -> None:
        if self._state not in ONLINE:
            self._ignore()
            return
        self._qos2_in.discard(p.msg_id)
        self._send(Pubcomp(p.msg_id), now)  # also for a repeated PUBREL: our PUBCOMP was lost

    def _on_puback(self, p: Puback, now: float) -> None:
        rc = _rc(p.return_code)
        head = self._queue.in_flight(_Kind.PUBLISH, p.msg_id) if p.msg_id else None
        if head is None:
            # An error answer to a QoS 0 publish, or a late duplicate.
            if rc == ReturnCode.ACCEPTED:
                self._ignore()
                return
            if rc == ReturnCode.INVALID_TOPIC_ID:
                self.topics.forget_id(p.topic_id)
            self._events.append(PublishAcked(p.msg_id, rc))
            return
        self._queue.pop_head()
        if rc == ReturnCode.INVALID_TOPIC_ID and head.topic_id_type == TopicIdType.NORMAL:
            self.topics.forget_id(p.topic_id)
        self._events.append(PublishAcked(head.msg_id, rc))
        self._pump(now)

    def _on_pubrec(self, p: Pubrec, now: float) -> None:
        head = self._queue.in_flight(_Kind.PUBLISH, p.msg_id)
        if head is not None and head.qos == 2:
            head.kind, head.packet = _Kind.PUBREL, Pubrel(p.msg_id)
            self._send(head.packet, now)
            head.sends = 1
            head.deadline = now + self.retry_interval
            return
        rel = self._queue.in_flight(_Kind.PUBREL, p.msg_id)
        if rel is not None and rel.packet is not None:  # PUBREC again: our PUBREL was lost
            self._send(rel.packet, now)
            return
        self._ignore()

    def _on_pubcomp(self, p: Pubcomp, now: float) -> None:
        if self._queue.in_flight(_Kind.PUBREL, p.msg_id) is None:
            self._ignore()
            return
        self._queue.pop_head()
        self._events.append(PublishAcked(p.msg_id, ReturnCode.ACCEPTED))
        self._pump(now)

    def _on_suback(self, p: Suback, now: float) -> None:
        head = self._queue.in_flight(_Kind.SUBSCRIBE, p.msg_id)
        if head is None:
            self._ignore()
            return
        self._queue.pop_head()
        rc = _rc(p.return_code)
        topic = head.topic
        if (
            rc == ReturnCode.ACCEPTED
            and head.topic_id_type == TopicIdType.NORMAL
            and isinstance(topic, str)
            and p.topic_id not in RESERVED_TOPIC_IDS
            and "#" not in topic
            and "+" not in topic
        ):
            self.topics.learn_inbound(p.topic_id, topic)
        self._events.append(Subscribed(p.msg_id, topic, p.topic_id, p.qos, rc))
        self._pump(now)

    def _on_unsuback(self, p: Unsuback, now: float) -> None:
        if self._queue.in_flight(_Kind.UNSUBSCRIBE, p.msg_id) is None:
            self._ignore()
            return
        self._queue.pop_head()
        self._events.append(Unsubscribed(p.msg_id))
        self._pump(now)

    def _on_pingreq(self, p: Pingreq, now: float) -> None:
        if self._state not in ONLINE:
            self._ignore()
            return
        self._send(Pingresp(), now)

    def _on_pingresp(self, p: Pingresp, now: float) -> None:
        if self._queue.in_flight(_Kind.PINGREQ) is None:
            self._ignore()
            return
        self._queue.pop_head()
        if self._state is _S.AWAKE:
            self._transition("woken")
            self._events.append(WakeCompleted())
        else:
            self._events.append(PingResponse())
        self._pump(now)

    def _on_disconnect(self, p: Disconnect, now: float) -> None:
        head = self._queue.in_flight(_Kind.DISCONNECT)
        if head is None and self._state not in ONLINE:
            self._ignore()
            return
        self._drop_queue()
        if head is not None and isinstance(head.packet, Disconnect):
            duration = head.packet.duration
            if duration is not None:  # the answer to our sleep()
                self._transition("slept")
                self._events.append(Disconnected(duration))
                return
        self._transition("disconnected")  # our disconnect(), or the gateway ends the session
        self._events.append(Disconnected(None))

    def _on_willtopicresp(self, p: WillTopicResp, now: float) -> None:
        self._on_will_resp(_Kind.WILLTOPICUPD, "topic", p.return_code, now)

    def _on_willmsgresp(self, p: WillMsgResp, now: float) -> None:
        self._on_will_resp(_Kind.WILLMSGUPD, "message", p.return_code, now)

    def _on_will_resp(self, kind: RequestKind, name: str, return_code: int, now: float) -> None:
        if self._queue.in_flight(kind) is None:
            self._ignore()
            return
        self._queue.pop_head()
        self._events.append(WillUpdated(name, _rc(return_code)))
        self._pump(now)

    def _on_advertise(self, p: Advertise, now: float) -> None:
        self._events.append(GatewayFound(p.gw_id, b"", p.duration))

    def _on_gwinfo(self, p: GwInfo, now: float) -> None:
        self._events.append(GatewayFound(p.gw_id, p.gw_add, None))

    def _on_searchgw(self, p: SearchGw, now: float) -> None:
        self._ignore()  # another client looking for a gateway; we do not answer for gateways


# Packets a gateway may send to a client; any other type is a ProtocolViolation.
_HANDLERS: dict[type[Packet], Callable[[ClientSession, Any, float], None]] = {
    Advertise: ClientSession._on_advertise,
    GwInfo: ClientSession._on_gwinfo,
    SearchGw: ClientSession._on_searchgw,
    Connack: ClientSession._on_connack,
    WillTopicReq: ClientSession._on_willtopicreq,
    WillMsgReq: ClientSession._on_willmsgreq,
    Register: ClientSession._on_register,
    Regack: ClientSession._on_regack,
    Publish: ClientSession._on_publish,
    Puback: ClientSession._on_puback,
    Pubrec: ClientSession._on_pubrec,
    Pubrel: ClientSession._on_pubrel,
    Pubcomp: ClientSession._on_pubcomp,
    Suback: ClientSession._on_suback,
    Unsuback: ClientSession._on_unsuback,
    Pingreq: ClientSession._on_pingreq,
    Pingresp: ClientSession._on_pingresp,
    Disconnect: ClientSession._on_disconnect,
    WillTopicResp: ClientSession._on_willtopicresp,
    WillMsgResp: ClientSession._on_willmsgresp,
}
