"""SUBSCRIBE and UNSUBSCRIBE: subscriptions, bindings, consumers and retained messages.

A normal subscription binds the session queue to ``amq.topic`` (once per binding key) and is
served by the session's one consumer; a shared subscription ``$share/G/F`` adds this session
as a consumer of the group's queue, whose consumers the core serves round-robin
(MQTT 5.0 4.8.2). Retained messages are put in the session queue after the SUBACK, marked
with the field ``mapping.RETAINED_FOR`` (retain handling 0: always, 1: for a new subscription only,
2: never [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11]); shared subscriptions get none
(5.0 4.8.2).

Permissions (RabbitMQ flavour, as its MQTT plugin checks them): ``read`` on ``amq.topic``
and ``configure``, ``write`` and ``read`` on the queue that serves the subscription; a
refused one gets 0x80 (3.x) or 0x87 Not authorized (5.0) in the SUBACK.
"""

from __future__ import annotations

import logging
from typing import Any

from mqemu.broker.errors import BrokerError
from mqemu.broker.message import Message

from .mapping import RETAINED_FOR
from .packets import Suback, Subscribe, Unsuback, Unsubscribe, encode
from .persist import save_session
from .retained import retained_store
from .sessions import CLASSIC, Subscription
from .topics import filter_to_binding, parse_shared, valid_filter

log = logging.getLogger("mqemu.protocols.mqtt")

# SUBACK / UNSUBACK reason codes (5.0 3.9.3, 3.11.3); 3.x sends 0x80 for every failure.
UNSPECIFIED_ERROR = 0x80
NOT_AUTHORIZED = 0x87
TOPIC_FILTER_INVALID = 0x8F
NO_SUBSCRIPTION_EXISTED = 0x11


class Subscriber:
    """SUBSCRIBE and UNSUBSCRIBE (``MqttConnection.subscriber``): the session's subscriptions
    and bindings, the retained messages they get. Consumers are the ``Deliveries`` part's
    (``refresh_session_consumer``, ``consume_shared``, ``stop_shared``); permissions are
    the connection's ``connect.Access``. What it needs of the connection it copies at
    CONNECT (``open``)."""

    def __init__(self, conn: Any, deny_subscribe_code: int) -> None:
        self.conn = conn
        self.send = conn.send
        self.broker = conn.broker
        self.deliveries = conn.deliveries
        self.topic_guard = conn.broker.auth.guards_topics
        self.deny_subscribe_code = deny_subscribe_code
        self.level = 4
        self.session: Any = None
        self.vhost: Any = None
        self.access: Any = None

    def open(self, level: int, session: Any, vhost: Any, access: Any) -> None:
        """CONNECT accepted: whose subscriptions, checked by whom."""
        self.level, self.session, self.vhost, self.access = level, session, vhost, access

    def on_subscribe(self, p: Subscribe) -> None:
        sub_id = p.properties.get("subscription_identifier") if self.level >= 5 else None
        codes = []
        retained: list[tuple[Subscription, bool]] = []
        for s in p.subscriptions:
            code, sub, is_new = self._subscribe_one(s, sub_id)
            codes.append(code)
            if sub is not None and sub.group is None and (
                    s.retain_handling == 0 or (s.retain_handling == 1 and is_new)):
                retained.append((sub, is_new))
        self.send(encode(Suback(p.packet_id, tuple(codes)), self.level))
        self.deliveries.refresh_session_consumer()
        save_session(self.session)
        for sub, _ in retained:
            self._queue_retained(sub)

    def _subscribe_one(self, s: Any, sub_id: int | None) -> tuple[int, Subscription | None, bool]:
        text = s.topic_filter
        try:
            shared = parse_shared(text)
        except ValueError:
            return TOPIC_FILTER_INVALID, None, False
        group, inner = shared if shared is not None else (None, text)
        if not valid_filter(inner):
            return TOPIC_FILTER_INVALID, None, False  # [MQTT-4.7.1-2], [MQTT-4.7.1-3]
        if self.topic_guard and not self.access.may_read(filter_to_binding(inner)):
            # 5.0: 0x87 Not authorized, or ``[mqtt] deny_subscribe_code`` (e.g. 0x80, which is
            # all the Paho interoperability suite's client accepts); 3.x: 0x80.
            return self.deny_subscribe_code, None, False
        sub = Subscription(text, inner, s.qos, s.no_local, s.retain_as_published, sub_id, group)
        state = self.session
        if self.access.user is not None and not self.access.may_subscribe(sub.queue or state.queue_name):
            return (NOT_AUTHORIZED if self.level >= 5 else UNSPECIFIED_ERROR), None, False
        try:
            if group is not None:
                is_new = text not in state.shared
                self.serve_shared(sub)
                state.shared[text] = sub
            else:
                old = state.subs.get(text)
                is_new = old is None
                state.subs[text] = sub  # replaces the old one's options [MQTT-3.8.4-3]
                if is_new:
                    state.bind(sub.binding)
        except BrokerError:
            return UNSPECIFIED_ERROR, None, False
        return s.qos, sub, is_new  # granted QoS: as requested, mqemu supports QoS 2

    def serve_shared(self, sub: Subscription) -> None:
        """Consume the group queue of shared subscription sub (declared if it is gone)."""
        vh = self.vhost
        name = sub.queue
        q = vh.queues.get(name)
        if q is None:
            # Not auto-delete: it outlives its connected members while a session holds it.
            q = vh.declare_queue(name, durable=True, arguments=CLASSIC)
            vh.bind("amq.topic", name, sub.binding)
        self.deliveries.consume_shared(q, sub)

    def _queue_retained(self, sub: Subscription) -> None:
        store = retained_store(self.broker, self.vhost.name)
        if not store.by_topic:
            return
        q = self.vhost.queues.get(self.session.queue_name)
        if q is None:
            return
        now = self.vhost.clock()
        hidden = self.broker.auth.topic_unreadable if self.topic_guard else None
        for _topic, r in store.matching(sub.filter, now):
            m = r.message
            if hidden is not None and hidden(m.routing_key):
                continue  # a topic no one may read (kept from before the rule, or a will)
            copy = Message(m.exchange, m.routing_key, m.body, m.properties,
                           fields=RETAINED_FOR.add(None, sub.text))
            if r.expires_at is not None:
                # The queue's TTL (from ``expiration``) would restart; give it what is left.
                copy.properties = dict(m.properties, expiration=str(max(1, int((r.expires_at - now) * 1000))))
            q.publish(copy, now)

    def on_unsubscribe(self, p: Unsubscribe) -> None:
        state = self.session
        codes = []
        for text in p.topic_filters:
            sub = state.shared.pop(text, None)
            if sub is not None:
                self._unsubscribe_shared(sub)
                state.leave_group(sub)
                codes.append(0)
                continue
            sub = state.subs.pop(text, None)
            if sub is None:
                codes.append(NO_SUBSCRIPTION_EXISTED)
                continue
            state.unbind(sub.binding)
            codes.append(0)
        self.deliveries.refresh_session_consumer()
        save_session(state)
        self.send(encode(Unsuback(p.packet_id, tuple(codes) if self.level >= 5 else ()), self.level))

    def _unsubscribe_shared(self, sub: Subscription) -> None:
        q = self.vhost.queues.get(sub.queue or "")
        if q is not None:
            self.deliveries.stop_shared(q)
