"""Session lifecycle of the sans-I/O gateway: CONNECT and the will exchange, resuming and
waking sessions (also at a new address), sleep, DISCONNECT, the end of a transport or of a broker
connection — and who may do which (:mod:`._gateway_admission`).

Publish/subscribe handling and the datagram entry point live in ``_gateway.py``.
"""

from __future__ import annotations

from collections.abc import Hashable

from . import _packets as p
from ._gateway_base import GatewayBase
from ._gateway_events import (
    GATEWAY_CONN,
    BrokerDisconnect,
    ClientAsleep,
    ClientAwake,
    ClientConnected,
    WillSpec,
)
from ._gateway_session import GatewaySession, SessionState
from ._topics import validate_topic_name

__all__ = ["GatewayLifecycle"]


class GatewayLifecycle(GatewayBase):
    """Connection lifecycle handlers (the Gateway's packet table names them)."""

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
        old_peer = self._by_client_id.get(pkt.client_id)
        old = self._sessions.get(old_peer) if old_peer is not None else None
        if identity is None:
            # A keyless peer never touches a client id a verified identity holds or has held.
            why = self.admission.refuse_unverified_id(pkt.client_id, old.identity if old else None)
            if why is not None:
                self._send(peer, p.Connack(p.ReturnCode.NOT_SUPPORTED))
                self._refuse(s, peer, why)
                return
        else:
            self.admission.remember_verified(pkt.client_id)
        if old is not None and old is not s:
            if old.identity == identity:
                # The same identity (or, unverified, the same client id) resumes its session here.
                self._rebind(old, peer)
                s = old
            else:
                # Only a verified identity gets here: it replaces an unverified session of its id.
                self._close(old, "taken over by a verified identity", lost=False, notify_client=False)
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
        if identity is None:
            why = self.admission.refuse_new_unverified(peer, now)
            if why is not None:
                self._count("unverified_refused")
                self._send(peer, p.Connack(p.ReturnCode.CONGESTION))
                self._refuse(None, peer, why)
                return
        s = GatewaySession(
            peer,
            pkt.client_id,
            pkt.duration,
            pkt.clean_session,
            now,
            self.config.max_topics_per_session,
            identity,
            self._new_conn_key(peer),
        )
        self._sessions[peer] = s
        self._by_conn[s.conn] = s
        self._by_client_id[pkt.client_id] = peer
        if identity is None:
            self.admission.opened(peer)
        if carried is not None:
            # A persistent session keeps its topic ids and subscriptions.
            s.topics = carried.topics
            s.known_to_client = carried.known_to_client
            s.subscriptions = carried.subscriptions
            s.short_subs = carried.short_subs
            if self.config.mode == "aggregating":
                for name, qos in s.subscriptions.items():
                    self._agg_add(s.conn, name, qos, None)
        if pkt.will:
            s.state = SessionState.WAIT_WILL_TOPIC
            self._send(peer, p.WillTopicReq())
        else:
            self._connect_broker(s)

    def _rebind(self, s: GatewaySession, peer: Hashable) -> None:
        """Move ``s`` to ``peer`` (a sleeper woke, or a client reconnected, at a new address). Its
        conn key stays, so its broker connection, pending broker answers and timers follow it."""
        old_peer = s.peer
        if self._sessions.get(old_peer) is s:
            del self._sessions[old_peer]
        there = self._sessions.get(peer)
        if there is not None and there is not s:
            self._close(there, "another session moved to its address", lost=False, notify_client=False)
        if s.identity is None:
            self.admission.moved(old_peer, peer)
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
        self._now_hint = now
        s = self._by_conn.get(conn)
        if s is None or s.state != SessionState.WAIT_BROKER:
            if ok and s is None and conn is not GATEWAY_CONN:
                self._actions.append(BrokerDisconnect(conn))
            return
        if ok:
            self._connected(s)
            # a resumed broker session may resend what it had in flight before the CONNACK got here
            self._pump(s, now)
        else:
            self._send(s.peer, p.Connack(p.ReturnCode.CONGESTION))
            self._close(s, "broker refused the connection", lost=False, notify_client=False)
        if self._by_conn.get(s.conn) is s:
            self._schedule(s)

    def _on_pingreq(
        self, pkt: p.Pingreq, peer: Hashable, s: GatewaySession | None, now: float, identity: str | None
    ) -> None:
        if pkt.client_id is not None and (s is None or s.client_id != pkt.client_id):
            if identity is not None:
                self.admission.remember_verified(pkt.client_id)
            other = self._by_client_id.get(pkt.client_id)
            cand = self._sessions.get(other) if other is not None else None
            if cand is not None and cand.state in (SessionState.ASLEEP, SessionState.AWAKE):
                if cand.identity != identity:
                    # Only the identity that created a session may wake it (no keyless wake-up
                    # of a verified sleeper, whose buffered messages would leave in clear).
                    self._send(peer, p.Disconnect())
                    self._drop(peer, "PINGREQ(ClientId) of a session of another identity")
                    return
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
        self._now_hint = now
        s = self._sessions.get(peer)
        if s is None or (keep_sleeping and s.state in (SessionState.ASLEEP, SessionState.AWAKE)):
            return False
        self._close(s, reason, lost=True)
        return True

    def broker_connection_lost(self, conn: Hashable, now: float) -> None:
        """The broker closed a client's connection (transparent mode): end that session."""
        self._now_hint = now
        s = self._by_conn.get(conn)
        if s is not None:
            self._send(s.peer, p.Disconnect())
            self._close(s, "broker closed the connection", lost=False, notify_client=False, broker_gone=True)
