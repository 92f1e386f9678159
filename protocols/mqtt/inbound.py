"""PUBLISH from the client and the acknowledgements of both directions (QoS 1 and 2).

Inbound QoS 2 uses the packet-id method of [MQTT-4.3.3-2]: the message is routed when the
PUBLISH arrives, its id is kept until PUBREL, and a PUBLISH with a kept id is acknowledged
again but not routed again. Outbound QoS 1/2 deliveries are acked in the core only at PUBACK
or PUBCOMP [MQTT-4.3.2-1], [MQTT-4.3.3-1]. With a publish pump (``server.PublishPump``),
routing waits for the end of the scheduler pass; without one (unit tests) it is immediate.
"""

from __future__ import annotations

import logging
from typing import Any

from mqemu.broker.errors import BrokerError

from .mapping import to_message
from .packets import Puback, Pubcomp, Publish, Pubrec, Pubrel, encode
from .retained import retained_store
from .sessions import denied
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


class PublishMixin:
    """Mixed into ``MqttConnection``."""

    def _on_publish(self, p: Publish) -> None:
        topic = p.topic
        props = p.properties
        if props:
            props = self._publish_props(p)
            topic = self._alias_topic(topic, p.properties)
        self._publish(topic, p.payload, p.qos, p.retain, p.packet_id, props)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, pid: int | None,
                 props: dict[str, Any] | None) -> None:
        """A PUBLISH from the client (also called by the fast path, ``fastpath.scan``)."""
        if qos == 2:
            awaiting = self.session.awaiting_rel
            if pid in awaiting:
                # Already received and not yet released: no second delivery [MQTT-4.3.3-2]
                self.send(_PUBREC + pid.to_bytes(2, "big"))
                return
            if self.level >= 5 and len(awaiting) >= self.receive_maximum:
                raise ProtocolViolation(RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")  # [MQTT-3.3.4-8]
        if self.deny_publish and denied(self.deny_publish, topic):
            # Mosquitto acknowledges a denied publish and drops it (3.x has no code for it).
            self._ack_denied(qos, pid)
            return
        key = self.keys.get(topic)
        if key is None:
            key = self._key(topic)
        msg = to_message(key, payload, qos, retain, props)
        msg.origin = self.client_id
        if qos == 2:
            self.session.awaiting_rel.add(pid)
        if self.pump is None:
            self._route(topic, msg, qos, retain, pid, props)
            return
        if not self.pending:
            self.pump.defer(self)
        self.pending.append((topic, msg, qos, retain, pid, props))

    def flush_publishes(self) -> None:
        """Route the PUBLISH packets deferred to the pump (see ``server.PublishPump``)."""
        pending = self.pending
        if pending:
            self.pending = []
            route = self._route
            for item in pending:
                route(*item)
            self.end_of_batch()

    def _route(self, topic: str, msg: Any, qos: int, retain: bool, pid: int | None,
               props: dict[str, Any] | None) -> None:
        if retain:
            expiry = props.get("message_expiry_interval") if props else None
            retained_store(self.broker, self.vhost.name).put(
                topic, msg, qos, None if expiry is None else self.vhost.clock() + expiry)
        try:
            self.vhost.publish("amq.topic", msg.routing_key, msg)
        except BrokerError as e:
            log.warning("publish failed: %s", e, extra={"conn": self.conn_id})
        if qos == 1:
            self.send(_PUBACK + pid.to_bytes(2, "big"))  # type: ignore[union-attr]
        elif qos == 2:
            self.send(_PUBREC + pid.to_bytes(2, "big"))  # type: ignore[union-attr]

    def _ack_denied(self, qos: int, pid: int | None) -> None:
        if qos == 0:
            return
        if self.level >= 5:  # 0x87 Not authorized ends a QoS 2 exchange too
            self.send(encode((Puback if qos == 1 else Pubrec)(pid, NOT_AUTHORIZED), 5))
        elif qos == 1:
            self.send(_PUBACK + pid.to_bytes(2, "big"))  # type: ignore[union-attr]
        else:
            self.session.awaiting_rel.add(pid)  # type: ignore[arg-type]
            self.send(_PUBREC + pid.to_bytes(2, "big"))  # type: ignore[union-attr]

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

    def _on_puback(self, p: Puback) -> None:
        self._on_puback_id(p.packet_id)

    def _on_puback_id(self, pid: int) -> None:
        inflight = self.session.inflight
        inf = inflight.get(pid)
        if inf is not None and inf.qos == 1:
            del inflight[pid]
            self._ack_inflight(inf)

    def _publish_fast(self, topic: str, payload: bytes, qos: int, retain: bool, pid: int | None) -> None:
        self._publish(topic, payload, qos, retain, pid, None)

    def _on_pubrec(self, p: Pubrec) -> None:
        pid = p.packet_id
        inf = self.session.inflight.get(pid)
        if inf is None or inf.qos != 2:
            if self.level >= 5:
                self.send(encode(Pubrel(pid, PACKET_ID_NOT_FOUND), 5))
            return
        if p.reason_code >= 0x80:  # 5.0 4.3.3: an error PUBREC ends the exchange
            del self.session.inflight[pid]
            self._ack_inflight(inf)
            return
        inf.released = True
        self.send(b"\x62\x02" + pid.to_bytes(2, "big"))  # [MQTT-4.3.3-4]

    def _on_pubcomp(self, p: Pubcomp) -> None:
        inf = self.session.inflight.get(p.packet_id)
        if inf is not None and inf.qos == 2:
            del self.session.inflight[p.packet_id]
            self._ack_inflight(inf)

    def _on_pubrel(self, p: Pubrel) -> None:
        awaiting = self.session.awaiting_rel
        if p.packet_id in awaiting or self.level < 5:
            awaiting.discard(p.packet_id)
            self.send(_PUBCOMP + p.packet_id.to_bytes(2, "big"))  # [MQTT-4.3.3-11]
        else:
            self.send(encode(Pubcomp(p.packet_id, PACKET_ID_NOT_FOUND), 5))
