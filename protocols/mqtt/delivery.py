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

import logging
from typing import TYPE_CHECKING, Any

from mqemu.broker.queue import Consumer
from mqemu.protocols.session_base import READ_PAUSE_BYTES

from .node_state import node_state
from .mapping import (
    PUBLISHER,
    RETAINED_FOR,
    mqtt_string,
    outgoing_properties,
    publish_qos,
    remaining_expiry,
    was_retained,
)
from .packets import encode_publish, encode_publish_qos0, topic_field
from .properties import encode_properties
from .sessions import Inflight, SessionState, Subscription
from .topics import key_to_topic

if TYPE_CHECKING:
    from mqemu.broker.message import Message, QueueEntry
    from mqemu.broker.queue import Queue

_CACHE_LIMIT = 1024
MAX_PACKET_SIZE = 268435455  # the largest the Remaining Length allows (5.0 1.5.5)

log = logging.getLogger("mqemu.protocols.mqtt")


class Route:
    """What one routing key means for one consumer's subscriptions."""

    __slots__ = ("local", "qos", "rap", "sub_ids", "topic", "topic_bytes", "topic_field")

    def __init__(self, topic: str, subs: list[Subscription], topic_bytes: bytes) -> None:
        self.topic = topic
        self.topic_bytes = topic_bytes
        self.topic_field = topic_field(topic_bytes)  # length prefix and bytes, as a PUBLISH has it
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


class Deliveries:
    """The consumer owner of a connection (``MqttConnection.deliveries``): the core's
    consumers of its queues, what the client allows (receive maximum, maximum packet size,
    topic aliases it receives) and the QoS 0 drops of a client that does not read. It owns
    these; the connection and its other parts reach it through ``open``, ``budget_changed``,
    ``detach`` and the consumer and acknowledgement methods below."""

    def __init__(self, conn: Any, max_inflight: int, max_queued: int) -> None:
        self.conn = conn
        self.send = conn.send
        self.broker = conn.broker
        self.last = node_state(conn.broker).last_publish  # the node's QoS 0 encode cache
        self.blocked = False  # the consumer owner flag: outbound over its budget
        self.over = False  # the connection's outbound buffer is past its high-water mark
        # Set at CONNECT (``open``); the connection's for its whole life.
        self.level = 4
        self.client_id = ""
        self.vhost: Any = None
        self.session: SessionState = None  # type: ignore[assignment]
        self.prefetch = max_inflight  # the client's receive maximum (3.x: [mqtt] max_inflight)
        self.max_out = MAX_PACKET_SIZE  # the client's Maximum Packet Size
        self.alias_out_max = 0
        self.aliases_out: dict[str, int] = {}
        self.consumers: dict[Queue, MqttConsumer] = {}
        self.session_consumer: MqttConsumer | None = None
        self.max_queued = max_queued
        self.queued_over = 0  # QoS 0 PUBLISH queued since the buffer passed its high water
        self.dropped = 0  # QoS 0 PUBLISH dropped for this connection (it did not read)
        self.dropping = False
        self._props_msg: Any = None
        self._props_val: dict[str, Any] = {}

    def open(self, level: int, client_id: str, vhost: Any, session: SessionState, prefetch: int | None,
             max_out: int, alias_out_max: int) -> None:
        """CONNECT accepted: what the client asked for, before any consumer exists."""
        self.level, self.client_id, self.vhost, self.session = level, client_id, vhost, session
        if prefetch is not None:
            self.prefetch = prefetch
        self.max_out, self.alias_out_max = max_out, alias_out_max

    def budget_changed(self, over: bool) -> None:
        """Outbound past ``OUTBOUND_HIGH_WATER``: no deliveries until the writer drained it,
        except for a client whose subscriptions are all QoS 0: it keeps receiving, and past
        ``max_queued_messages`` more its QoS 0 messages are dropped (``drop_qos0``), as
        Mosquitto drops them rather than queue them for a client that does not read."""
        self.over = over
        if over:
            self.blocked = not (self.max_queued and all(c.no_ack for c in self.consumers.values()))
            return
        self.blocked = False
        self.queued_over = 0
        if self.dropping:
            self.dropping = False
            log.debug("client reads again", extra={"conn": self.conn.conn_id, "client_id": self.client_id,
                                                   "dropped": self.dropped})
        for q in list(self.consumers):
            q.dispatch()

    def drop_qos0(self) -> bool:
        """A QoS 0 PUBLISH while the outbound buffer is past its high-water mark: True when
        it must be dropped (counted here and in ``Broker.messages_dropped``)."""
        if self.queued_over < self.max_queued and self.conn.outbound_bytes < READ_PAUSE_BYTES:
            self.queued_over += 1
            return False
        self.dropped += 1
        self.broker.messages_dropped += 1
        if not self.dropping:
            self.dropping = True
            # One line per connection at warning; later episodes of the same client at debug.
            (log.debug if self.dropped > 1 else log.warning)(
                "outgoing QoS 0 messages are being dropped: the client does not read",
                extra={"conn": self.conn.conn_id, "client_id": self.client_id,
                       "max_queued_messages": self.max_queued})
        return True

    # -- consumers ------------------------------------------------------------------------
    def consume_shared(self, q: Queue, sub: Subscription) -> None:
        """Serve shared subscription sub from its group's queue q."""
        c = self.consumers.get(q)
        if c is None:
            c = MqttConsumer(q, f"mqtt-{self.client_id}", self, self.prefetch)
            c.set_subs([sub])
            self.consumers[q] = c
            q.add_consumer(c)
        else:
            c.set_subs([sub])

    def refresh_session_consumer(self) -> None:
        """Give the session queue's consumer the current subscriptions (creating it)."""
        state = self.session
        q = self.vhost.queues.get(state.queue_name)
        if q is None:
            if not state.subs:
                return
            q = state.queue()
        c = self.session_consumer
        subs = list(state.subs.values())
        if c is None or c.queue is not q:
            c = MqttConsumer(q, f"mqtt-{self.client_id}", self, self.prefetch)
            c.set_subs(subs)
            # Deliveries still unacknowledged from an earlier connection count against the
            # receive maximum of this one.
            c.hold_credit(sum(1 for inf in state.inflight.values() if inf.queue is q))
            self.session_consumer = c
            self.consumers[q] = c
            q.add_consumer(c)
        else:
            c.set_subs(subs)
            self.conn.dirty_queues.add(q)

    def stop_shared(self, q: Queue) -> None:
        """No longer serve the shared queue q (UNSUBSCRIBE)."""
        c = self.consumers.pop(q, None)
        if c is not None:
            self._release_shared(q, c)
            q.remove_consumer(c)

    def _release_shared(self, q: Queue, c: MqttConsumer) -> None:
        """Give a shared queue's unacknowledged deliveries back to the group (5.0 4.8.2:
        another member may get them)."""
        inflight = self.session.inflight
        pids = [pid for pid, inf in inflight.items() if inf.queue is q and not inf.released]
        if pids:
            entries = [inflight.pop(pid).entry for pid in pids]
            q.release_consumer_entries(c, entries)

    def detach(self) -> None:
        """The connection leaves its session: drop every consumer (shared queues get their
        unacknowledged deliveries back)."""
        for q, c in list(self.consumers.items()):
            if c is not self.session_consumer:
                self._release_shared(q, c)
            q.remove_consumer(c)
        self.consumers.clear()
        self.session_consumer = None

    # -- the consumer owner interface ----------------------------------------------------
    def deliver(self, consumer: MqttConsumer, entry: QueueEntry) -> None:
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
        qos = route.qos
        if qos:  # QoS 0 subscriptions only: QoS 0, whatever the message was published with
            qos = min(qos, publish_qos(msg))
        retain = route.rap and was_retained(msg)
        if self.level < 5:
            if qos == 0:
                k = (retain, route.topic_bytes)  # the same bytes on 3.1 and 3.1.1
                last = self.last
                if msg is last.msg and k == last.key:
                    data = last.data
                else:
                    data = encode_publish_qos0(route.topic_field, msg.body, retain)
                    last.msg, last.key, last.data = msg, k, data
                if len(data) > self.max_out or (self.over and self.drop_qos0()):
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
        if self.over and self.drop_qos0():
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
        if len(data) > self.max_out or (self.over and self.drop_qos0()):
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
    def ack_inflight(self, inf: Inflight) -> None:
        """PUBACK (or PUBCOMP, or an error PUBREC) for inf: acked in its queue."""
        q = inf.queue
        if not q.deleted:
            q.ack(inf.entry, self.consumers.get(q))
            self.conn.dirty_queues.add(q)

    def received(self, inf: Inflight) -> None:
        """PUBREC for a QoS 2 delivery: settled in its queue, and its place in the receive
        maximum kept until PUBCOMP (``completed``)."""
        q = inf.queue
        if inf.entry is not None and not q.deleted:
            c = self.consumers.get(q)
            q.ack(inf.entry, c)
            if c is not None:
                c.hold_credit()
        inf.entry = None

    def completed(self, inf: Inflight) -> None:
        """PUBCOMP for a QoS 2 delivery settled at PUBREC: its place is free again."""
        q = inf.queue
        c = self.consumers.get(q) if q is not None else None
        if c is not None and c.return_credit():
            self.conn.dirty_queues.add(q)

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
