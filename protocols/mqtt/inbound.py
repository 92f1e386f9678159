"""PUBLISH from the client and the acknowledgements of both directions (QoS 1 and 2).

Inbound QoS 2 uses the packet-id method of [MQTT-4.3.3-2]: the message is routed when the
PUBLISH arrives, its id is kept until PUBREL, and a PUBLISH with a kept id is acknowledged
again but not routed again. Outbound QoS 1/2 deliveries are acked in the core only at PUBACK
or PUBCOMP [MQTT-4.3.2-1], [MQTT-4.3.3-1]; an outgoing QoS 2 delivery is settled in its
queue at PUBREC (the client has it; only PUBREL/PUBCOMP remain [MQTT-4.3.3-3]) but keeps its
place in the client's receive maximum until PUBCOMP. With a publish pump
(``server.PublishPump``), routing waits for the end of the scheduler pass, unless the
connection's reader is the only task of its pass; without one (unit tests) it is immediate.

Acknowledgements wait until the message is safe (``acks.AckGate``): a PUBACK or PUBREC is
held until the core's promise is kept (``VirtualHost.publish_safe``: on disk for a durable
queue that took it; ``writes_safe`` for a retained message's record), as AMQP publisher
confirms are; acks behind a held one wait with it, so PUBACKs keep the order of the PUBLISH
packets.
"""

from __future__ import annotations

import logging
from typing import Any

from mqemu.broker.errors import AccessRefused, BrokerError
from mqemu.broker.message import Message
from mqemu.broker.promise import both

from .acks import AckGate
from .fastpath import ScanCache
from .mapping import PLAIN, to_message
from .packets import Puback, Pubcomp, Publish, Pubrec, Pubrel, encode
from .persist import QOS2_IN, QOS2_OUT, qos2_mark
from .retained import retained_store
from .topics import topic_to_key

log = logging.getLogger("mqemu.protocols.mqtt")

# Reason codes used here (5.0 Table 2-6).
PROTOCOL_ERROR = 0x82
NOT_AUTHORIZED = 0x87
PACKET_ID_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94

_PUBACK = b"\x40\x02"
_PUBREC = b"\x50\x02"
_PUBREL = b"\x62\x02"
_PUBCOMP = b"\x70\x02"


class ProtocolViolation(Exception):
    """A packet the session refuses: 5.0 gets DISCONNECT with ``code``, 3.x a close."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class Inbound:
    """PUBLISH from the client and the acks of both directions (``MqttConnection.inbound``).
    It owns the publishes deferred to the pump, the topic caches (routing keys, allowed
    topics, incoming topic aliases) and the held acknowledgements (``acks.AckGate``); what it
    needs of the connection it copies at CONNECT (``open``). Acks for deliveries go to the
    connection's ``Deliveries`` part (``ack_inflight``, ``received``, ``completed``)."""

    def __init__(self, conn: Any, pump: Any, receive_maximum: int, alias_in_max: int) -> None:
        self.conn = conn
        self.send = conn.send
        self.broker = broker = conn.broker
        self.deliveries = conn.deliveries
        self.pump = pump  # defers routing of PUBLISH to the end of the scheduler pass
        self.pending: list[tuple] = []  # (topic, message, qos, retain, packet id, properties)
        self.receive_maximum = receive_maximum
        self.alias_in_max = alias_in_max
        # Topic rules on amq.topic (deny lists, ActiveMQ's authorization entries): the core's
        # AuthRegistry.check_topic; publishes test this flag first, then a per-topic cache.
        self.topic_guard = broker.auth.guards_topics
        self.publish_allowed: dict[str, bool] = {}
        self.keys: dict[str, str] = {}  # topic -> routing key cache
        self.scan_cache = ScanCache()  # the fast path's checked topics and last header
        self.aliases_in: dict[int, str] = {}
        # PUBACK/PUBREC/PUBCOMP held until what they acknowledge is safe (the core's promise).
        self.acks = AckGate(conn.send,
                            lambda: conn.closing or conn.linger_until is not None, conn.publish_lost)
        # Set at CONNECT (``open``).
        self.level = 4
        self.session: Any = None
        self.vhost: Any = None
        self.user: Any = None
        self.publisher_fields: Any = None  # Message.fields of its PUBLISH packets (mapping.PUBLISHER)
        self.publish_refused = False
        self.guarded = self.topic_guard

    def open(self, level: int, session: Any, vhost: Any, user: Any, publisher_fields: Any,
             publish_refused: bool) -> None:
        """CONNECT accepted: who publishes, to which session."""
        self.level, self.session, self.vhost, self.user = level, session, vhost, user
        self.publisher_fields, self.publish_refused = publisher_fields, publish_refused
        self.guarded = publish_refused or self.topic_guard  # a PUBLISH needs _admit

    def drop_pending(self) -> None:
        """The pump failed routing them: the connection is closing."""
        self.pending = []

    def on_publish(self, p: Publish) -> None:
        topic = p.topic
        props = p.properties
        if props:
            props = self._publish_props(p)
            topic = self._alias_topic(topic, p.properties)
        self.publish(topic, p.payload, p.qos, p.retain, p.packet_id, props)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool, pid: int | None,
                 props: dict[str, Any] | None) -> None:
        """A PUBLISH from the client (also called by the fast path, ``fastpath.scan``, with
        ``props`` None). The common case (QoS 0 or 1, no topic rules, no properties) makes
        one test before the routing key and builds its ``Message`` without a call."""
        if (qos == 2 or self.guarded) and not self._admit(topic, qos, pid):
            return
        key = self.keys.get(topic)
        if key is None:
            key = self._key(topic)
        if props:
            msg = to_message(key, payload, qos, retain, props)
            msg.fields = self.publisher_fields
        else:
            msg = Message("amq.topic", key, payload, PLAIN[qos][retain], None, self.publisher_fields)
        if qos == 2:
            self.session.awaiting_rel.add(pid)
            qos2_mark(self.session, QOS2_IN, pid, True)  # type: ignore[arg-type]
        pending = self.pending
        if not pending:
            pump = self.pump
            if pump is None or pump.flusher.runnable == 1:  # no pump, or no other task in this pass
                self._route(topic, msg, qos, retain, pid, props)
                return
            pump.defer(self.conn)
        pending.append((topic, msg, qos, retain, pid, props))

    def _admit(self, topic: str, qos: int, pid: int | None) -> bool:
        """The checks of a QoS 2 PUBLISH and of a publisher with topic rules: False when
        the PUBLISH is answered here and not routed."""
        if qos == 2:
            awaiting = self.session.awaiting_rel
            if pid in awaiting:
                # Already received and not yet released: no second delivery [MQTT-4.3.3-2]
                self.acks.send(_PUBREC + pid.to_bytes(2, "big"))  # type: ignore[union-attr]
                return False
            if self.level >= 5 and len(awaiting) >= self.receive_maximum:
                raise ProtocolViolation(RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")  # [MQTT-3.3.4-8]
        if self.publish_refused or (self.topic_guard and not self.may_publish(topic)):
            # Mosquitto acknowledges a denied publish and drops it (3.x has no code for it);
            # so does ActiveMQ (its MQTT converter acks a publish its broker refused).
            self._ack_denied(qos, pid)
            return False
        return True

    def flush(self) -> None:
        """Route the PUBLISH packets deferred to the pump (see ``server.PublishPump``)."""
        pending = self.pending
        if pending:
            self.pending = []
            route = self._route
            for item in pending:
                route(*item)
            self.conn.after_routing()

    def _route(self, topic: str, msg: Any, qos: int, retain: bool, pid: int | None,
               props: dict[str, Any] | None) -> None:
        recorded = False
        if retain and not (self.topic_guard and self.broker.auth.topic_unreadable(msg.routing_key)):
            expiry = props.get("message_expiry_interval") if props else None
            recorded = retained_store(self.broker, self.vhost.name).put(
                topic, msg, qos, None if expiry is None else self.vhost.clock() + expiry)
        try:
            _, _, safe = self.vhost.publish_safe("amq.topic", msg.routing_key, msg)
        except BrokerError as e:
            log.warning("publish failed: %s", e, extra={"conn": self.conn.conn_id})
            safe = None
        if qos:
            if recorded or (qos == 2 and self.session.persistent):  # a record: retained, or the QoS 2 id
                safe = both(safe, self.vhost.writes_safe())
            self.acks.send_after(safe, (_PUBACK if qos == 1 else _PUBREC) + pid.to_bytes(2, "big"))  # type: ignore[union-attr]

    def _ack_denied(self, qos: int, pid: int | None) -> None:
        if qos == 0:
            return
        if self.level >= 5:  # 0x87 Not authorized ends a QoS 2 exchange too
            self.acks.send(encode((Puback if qos == 1 else Pubrec)(pid, NOT_AUTHORIZED), 5))
        elif qos == 1:
            self.acks.send(_PUBACK + pid.to_bytes(2, "big"))  # type: ignore[union-attr]
        else:
            self.session.awaiting_rel.add(pid)  # type: ignore[arg-type]
            self.acks.send(_PUBREC + pid.to_bytes(2, "big"))  # type: ignore[union-attr]

    def may_publish(self, topic: str) -> bool:
        """The core's topic rules for a PUBLISH (``AuthRegistry.check_topic``), remembered
        per topic for the connection (as ActiveMQ remembers authorised destinations)."""
        ok = self.publish_allowed.get(topic)
        if ok is None:
            key = self.keys.get(topic) or self._key(topic)
            try:
                self.broker.auth.check_topic(self.user, self.vhost.name, "write", key)
                ok = True
            except AccessRefused as e:
                log.info("%s", e.text, extra={"conn": self.conn.conn_id})
                ok = False
            if len(self.publish_allowed) >= 1024:
                self.publish_allowed.clear()
            self.publish_allowed[topic] = ok
        return ok

    def _key(self, topic: str) -> str:
        key = topic_to_key(topic)
        if len(self.keys) >= 1024:
            self.keys.clear()
        self.keys[topic] = key
        return key

    def _publish_props(self, p: Publish) -> dict[str, Any]:
        props = p.properties
        if "subscription_identifier" in props:
            raise ProtocolViolation(PROTOCOL_ERROR, "subscription identifier in PUBLISH")  # [MQTT-3.3.4-6]
        if "topic_alias" in props:
            props = {k: v for k, v in props.items() if k != "topic_alias"}
        return props

    def _alias_topic(self, topic: str, props: dict[str, Any]) -> str:
        alias = props.get("topic_alias")
        if alias is None:
            return topic
        if alias == 0 or alias > self.alias_in_max:
            raise ProtocolViolation(TOPIC_ALIAS_INVALID, f"topic alias {alias}")  # [MQTT-3.3.2-8], [MQTT-3.3.2-9]
        if topic:
            self.aliases_in[alias] = topic
            return topic
        known = self.aliases_in.get(alias)
        if known is None:
            raise ProtocolViolation(PROTOCOL_ERROR, f"unknown topic alias {alias}")  # 5.0 3.3.4
        return known

    def on_puback(self, p: Puback) -> None:
        self.on_puback_id(p.packet_id)

    def on_puback_id(self, pid: int) -> None:
        inflight = self.session.inflight
        inf = inflight.get(pid)
        if inf is not None and inf.qos == 1:
            del inflight[pid]
            self.deliveries.ack_inflight(inf)

    def on_pubrec(self, p: Pubrec) -> None:
        pid = p.packet_id
        inf = self.session.inflight.get(pid)
        if inf is None or inf.qos != 2:
            if self.level >= 5:
                self.send(encode(Pubrel(pid, PACKET_ID_NOT_FOUND), 5))
            return
        if p.reason_code >= 0x80:  # 5.0 4.3.3: an error PUBREC ends the exchange
            del self.session.inflight[pid]
            self.deliveries.ack_inflight(inf)
            return
        if not inf.released:
            # The client owns the message now: settle it in its queue, keep the packet id
            # (and the receive-maximum slot) until PUBCOMP, and remember it on disk.
            inf.released = True
            self.deliveries.received(inf)
            qos2_mark(self.session, QOS2_OUT, pid, True)
        self.send(_PUBREL + pid.to_bytes(2, "big"))  # [MQTT-4.3.3-4]

    def on_pubcomp(self, p: Pubcomp) -> None:
        inf = self.session.inflight.get(p.packet_id)
        if inf is not None and inf.qos == 2:
            del self.session.inflight[p.packet_id]
            if not inf.released:
                self.deliveries.ack_inflight(inf)
                return
            qos2_mark(self.session, QOS2_OUT, p.packet_id, False)
            self.deliveries.completed(inf)

    def on_pubrel(self, p: Pubrel) -> None:
        awaiting = self.session.awaiting_rel
        if p.packet_id in awaiting or self.level < 5:
            if p.packet_id in awaiting:
                awaiting.discard(p.packet_id)
                qos2_mark(self.session, QOS2_IN, p.packet_id, False)
            self.acks.send(_PUBCOMP + p.packet_id.to_bytes(2, "big"))  # [MQTT-4.3.3-11]
        else:
            self.acks.send(encode(Pubcomp(p.packet_id, PACKET_ID_NOT_FOUND), 5))
