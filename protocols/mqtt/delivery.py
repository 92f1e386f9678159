"""Deliveries to an MQTT client: the consumer owner half of a connection.

``Queue.dispatch`` calls ``deliver(consumer, entry)``; it decides, with the local matcher,
which of the client's subscriptions the message matches (the binding in the core is only a
superset: ``$`` topics [MQTT-4.7.2-1], literal ``*`` levels), then encodes one PUBLISH
straight into the connection's outbound buffer:

- granted QoS = min(publish QoS, the highest QoS of the matching subscriptions)
  [MQTT-3.8.4-8] (3.1.1 [MQTT-3.8.4-6]), one PUBLISH per message however many match
  (5.0 3.3.4: "the Server MAY send one message"), with every matching subscription's
  identifier in it [MQTT-3.3.4-3], [MQTT-3.3.4-4];
- no-local subscriptions skip the client's own messages [MQTT-3.8.3-3];
- retain-as-published keeps the RETAIN flag, otherwise it is 0 for live messages
  [MQTT-3.3.1-12], [MQTT-3.3.1-13];
- the remaining message expiry is sent [MQTT-3.3.2-6];
- a PUBLISH larger than the client's Maximum Packet Size is dropped as if delivered
  [MQTT-3.1.2-25];
- with a Topic Alias Maximum from the client, topics get aliases (5.0 3.3.2.3.4).

What a message resolves to per routing key is cached per consumer (``Route``), with the
topic's encoded bytes, so the common delivery is a dict hit and one ``encode_publish``.
QoS 0 deliveries to consumers with only QoS 0 subscriptions are no-ack in the core; QoS 1/2
deliveries are acked in the core at PUBACK / PUBCOMP.

A client that does not read: past the outbound high-water mark a QoS 0 PUBLISH is queued
only while fewer than ``[mqtt] max_queued_messages`` (default 1000) have been since, and
dropped after that (``drop_qos0``; Mosquitto's ``max_queued_messages``); the drops are
counted per connection and in ``Broker.messages_dropped``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mqemu.broker.queue import Consumer

from .mapping import (
    PUBLISHER,
    RETAINED_FOR,
    mqtt_string,
    outgoing_properties,
    publish_qos,
    remaining_expiry,
    was_retained,
)
from .packets import encode_publish
from .properties import encode_properties
from .sessions import Inflight, Subscription
from .topics import key_to_topic

if TYPE_CHECKING:
    from mqemu.broker.message import Message, QueueEntry
    from mqemu.broker.queue import Queue

_CACHE_LIMIT = 1024


class Route:
    """What one routing key means for one consumer's subscriptions."""

    __slots__ = ("local", "qos", "rap", "sub_ids", "topic", "topic_bytes")

    def __init__(self, topic: str, subs: list[Subscription], topic_bytes: bytes) -> None:
        self.topic = topic
        self.topic_bytes = topic_bytes
        self.qos = max(s.qos for s in subs)
        self.sub_ids = tuple(sorted({s.sub_id for s in subs if s.sub_id}))
        self.rap = any(s.rap for s in subs)
        self.local: Route | None = self  # the route for the client's own messages
        if any(s.no_local for s in subs):
            rest = [s for s in subs if not s.no_local]
            self.local = Route(topic, rest, topic_bytes) if rest else None


class MqttConsumer(Consumer):
    """A core consumer that knows which subscriptions it serves."""

    __slots__ = ("routes", "subs")

    def __init__(self, queue: Queue, tag: str, owner: Any, prefetch: int) -> None:
        super().__init__(queue, tag, owner, no_ack=True, prefetch=prefetch)
        self.subs: list[Subscription] = []
        self.routes: dict[str, Route | None] = {}

    def set_subs(self, subs: list[Subscription]) -> None:
        self.subs = subs
        self.routes = {}
        # QoS 0-only consumers are no-ack; flipping is safe: acks already owed still arrive.
        self.no_ack = all(s.qos == 0 for s in subs)

    def route(self, key: str) -> Route | None:
        """None when no subscription matches, or when the routing key (from AMQP or STOMP)
        has no MQTT topic form: then the message is settled as if delivered, like a PUBLISH
        over the client's maximum packet size."""
        topic = key_to_topic(key)
        subs = [s for s in self.subs if s.filter.matches(topic)]
        topic_bytes = _topic_bytes(topic) if subs else None
        r = Route(topic, subs, topic_bytes) if topic_bytes is not None else None
        if len(self.routes) >= _CACHE_LIMIT:
            self.routes.clear()
        self.routes[key] = r
        return r


def _topic_bytes(topic: str) -> bytes | None:
    """A Topic Name's UTF-8, U+0000 and bytes that were not UTF-8 made U+FFFD
    (``mqtt_string``); None for a topic MQTT cannot carry: empty or over 65535 bytes
    [MQTT-4.7.3-1]."""
    text = mqtt_string(topic) if topic else None
    return None if text is None else text.encode("utf-8")


_PUBLISHER = PUBLISHER.key
_RETAINED_FOR = RETAINED_FOR.key


# The last QoS 0 PUBLISH encoded without per-delivery properties: a fan-out dispatches one
# message to many consumers in a row, and they all get these same bytes.
_last_msg: Any = None
_last_key: tuple = ()
_last_data = b""


class DeliveryMixin:
    """Deliveries and their acknowledgements; mixed into ``MqttConnection``."""

    # -- the consumer owner interface ----------------------------------------------------
    def deliver(self, consumer: MqttConsumer, entry: QueueEntry) -> None:
        global _last_msg, _last_key, _last_data
        msg = entry.message
        fields = msg.fields
        if fields is not None and _RETAINED_FOR in fields:
            self._deliver_retained(consumer, entry, fields[_RETAINED_FOR])
            return
        key = msg.routing_key
        try:
            route = consumer.routes[key]
        except KeyError:
            route = consumer.route(key)
        if (route is not None and route.local is not route and fields is not None
                and fields.get(_PUBLISHER) == self.client_id):
            route = route.local
        if route is None:
            self._settle_unsent(consumer, entry)
            return
        pq = publish_qos(msg)
        qos = min(route.qos, pq)
        retain = route.rap and was_retained(msg)
        if self.level < 5:
            if qos == 0:
                k = (self.level, retain, route.topic_bytes)
                if msg is _last_msg and k == _last_key:
                    data = _last_data
                else:
                    data = encode_publish(route.topic_bytes, msg.body, 0, retain, False, None, None, self.level)
                    _last_msg, _last_key, _last_data = msg, k, data
                if len(data) > self.max_out or (self.over_budget and self.drop_qos0()):
                    self._settle_unsent(consumer, entry)
                    return
                self.send(data)
                if not consumer.no_ack:  # a QoS 0 delivery from a queue with QoS 1 subscriptions
                    consumer.queue.ack(entry, consumer)
                return
            self._send_qos(consumer, entry, route.topic_bytes, qos, retain, None)
            return
        self._deliver_v5(consumer, entry, route.topic, route.topic_bytes, qos, retain, route.sub_ids)

    def _deliver_retained(self, consumer: MqttConsumer, entry: QueueEntry, sub_text: Any) -> None:
        """A retained message queued at SUBSCRIBE for the subscription ``sub_text``: it goes
        out with RETAIN 1 [MQTT-3.3.1-8], or is settled unsent if that subscription is gone."""
        sub = self.session.subs.get(sub_text)
        if sub is None:
            self._settle_unsent(consumer, entry)
            return
        qos = min(publish_qos(entry.message), sub.qos)
        topic = key_to_topic(entry.message.routing_key)
        if self.level < 5:
            if qos == 0:
                self._send_or_drop(consumer, entry, encode_publish(topic, entry.message.body, 0, True, False,
                                                                   None, None, self.level))
            else:
                self._send_qos(consumer, entry, topic.encode(), qos, True, None)
            return
        sub_ids = (sub.sub_id,) if sub.sub_id else ()
        self._deliver_v5(consumer, entry, topic, topic.encode(), qos, True, sub_ids)

    def _deliver_v5(self, consumer: MqttConsumer, entry: QueueEntry, topic: str, topic_bytes: bytes,
                    qos: int, retain: bool, sub_ids: tuple[int, ...]) -> None:
        msg = entry.message
        props = self._message_props(msg)
        if sub_ids or entry.expires_at is not None:
            props = dict(props)
            if sub_ids:
                props["subscription_identifier"] = list(sub_ids)
            if entry.expires_at is not None:
                props["message_expiry_interval"] = remaining_expiry(entry.expires_at, self.vhost.clock())
        if qos:
            self._send_qos(consumer, entry, topic_bytes, qos, retain, props, topic)
            return
        if self.over_budget and self.drop_qos0():
            self._settle_unsent(consumer, entry)
            return
        if self._send_v5(consumer, entry, topic, topic_bytes, 0, retain, None, props, False) and not consumer.no_ack:
            consumer.queue.ack(entry, consumer)

    def _send_v5(self, consumer: MqttConsumer | None, entry: QueueEntry, topic: str, topic_bytes: bytes,
                 qos: int, retain: bool, pid: int | None, props: dict[str, Any], dup: bool) -> bool:
        """Encode a 5.0 PUBLISH with a topic alias when the client allows; False if too large."""
        alias_max = self.alias_out_max
        body = entry.message.body
        if alias_max:
            alias = self.aliases_out.get(topic)
            if alias is not None:
                data = encode_publish(b"", body, qos, retain, dup, pid,
                                      encode_properties(dict(props, topic_alias=alias)), 5)
            elif len(self.aliases_out) < alias_max:
                alias = len(self.aliases_out) + 1
                data = encode_publish(topic_bytes, body, qos, retain, dup, pid,
                                      encode_properties(dict(props, topic_alias=alias)), 5)
                if len(data) <= self.max_out:
                    self.aliases_out[topic] = alias
            else:
                data = encode_publish(topic_bytes, body, qos, retain, dup, pid, encode_properties(props), 5)
        else:
            data = encode_publish(topic_bytes, body, qos, retain, dup, pid,
                                  encode_properties(props) if props else None, 5)
        if len(data) > self.max_out:
            if consumer is not None:
                self._settle_unsent(consumer, entry)
            return False
        self.send(data)
        return True

    def _send_qos(self, consumer: MqttConsumer, entry: QueueEntry, topic_bytes: bytes, qos: int,
                  retain: bool, props: dict[str, Any] | None, topic: str | None = None) -> None:
        state = self.session
        pid = state.new_packet_id()
        dup = entry.redelivered  # RabbitMQ: DUP mirrors the queue's redelivered flag
        if props is None:
            data = encode_publish(topic_bytes, entry.message.body, qos, retain, dup, pid, None, self.level)
            if len(data) > self.max_out:
                self._settle_unsent(consumer, entry)
                return
            self.send(data)
        elif not self._send_v5(consumer, entry, topic, topic_bytes, qos, retain, pid, props, dup):
            return
        if consumer.no_ack:  # a QoS 0-only consumer got a QoS >= 1 retained copy: nothing to ack
            return
        state.inflight[pid] = Inflight(consumer.queue, entry, qos, topic_bytes, retain)

    def _send_or_drop(self, consumer: MqttConsumer, entry: QueueEntry, data: bytes) -> None:
        if len(data) > self.max_out or (self.over_budget and self.drop_qos0()):
            self._settle_unsent(consumer, entry)
        else:
            self.send(data)
            if not consumer.no_ack:
                consumer.queue.ack(entry, consumer)

    def _settle_unsent(self, consumer: MqttConsumer, entry: QueueEntry) -> None:
        if not consumer.no_ack:
            consumer.queue.ack(entry, consumer)

    def _message_props(self, msg: Message) -> dict[str, Any]:
        if msg is self._props_msg:
            return self._props_val
        props = outgoing_properties(msg)
        self._props_msg, self._props_val = msg, props
        return props

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The queue was deleted under us (e.g. by an AMQP client)."""
        self.consumers.pop(consumer.queue, None)
        if self.session_consumer is consumer:
            self.session_consumer = None

    # -- acknowledgements from the client ------------------------------------------------
    def _ack_inflight(self, inf: Inflight) -> None:
        q = inf.queue
        if not q.deleted:
            q.ack(inf.entry, self.consumers.get(q))
            self.dirty_queues.add(q)

    def resend_inflight(self) -> None:
        """[MQTT-4.4.0-1]: on a resumed session resend unacknowledged PUBLISH (DUP 1) and
        PUBREL packets with their original packet identifiers, in order."""
        for pid, inf in list(self.session.inflight.items()):
            if inf.released:
                self.send(b"\x62\x02" + pid.to_bytes(2, "big"))
                continue
            if inf.queue.deleted:
                del self.session.inflight[pid]
                continue
            entry = inf.entry
            if self.level < 5:
                self.send(encode_publish(inf.topic, entry.message.body, inf.qos, inf.retain, True, pid,
                                         None, self.level))
            else:
                topic = inf.topic.decode("utf-8")
                props = self._message_props(entry.message)
                self._send_v5(None, entry, topic, inf.topic, inf.qos, inf.retain, pid, props, True)
