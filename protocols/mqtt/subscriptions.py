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
from typing import TYPE_CHECKING, Any

from mqemu.broker.errors import AccessRefused, BrokerError
from mqemu.broker.message import Message

from .delivery import MqttConsumer
from .mapping import RETAINED_FOR
from .packets import Suback, Subscribe, Unsuback, Unsubscribe, encode
from .persist import save_session
from .retained import retained_store
from .sessions import CLASSIC, Subscription
from .topics import filter_to_binding, parse_shared, valid_filter

log = logging.getLogger("mqemu.protocols.mqtt")

if TYPE_CHECKING:
    from mqemu.broker.queue import Queue

# SUBACK / UNSUBACK reason codes (5.0 3.9.3, 3.11.3); 3.x sends 0x80 for every failure.
UNSPECIFIED_ERROR = 0x80
NOT_AUTHORIZED = 0x87
TOPIC_FILTER_INVALID = 0x8F
NO_SUBSCRIPTION_EXISTED = 0x11


class SubscribeMixin:
    """Mixed into ``MqttConnection``."""

    def _on_subscribe(self, p: Subscribe) -> None:
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
        self._refresh_session_consumer()
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
        if self.topic_guard and not self._may_read(filter_to_binding(inner)):
            # 5.0: 0x87 Not authorized, or ``[mqtt] deny_subscribe_code`` (e.g. 0x80, which is
            # all the Paho interoperability suite's client accepts); 3.x: 0x80.
            return self.deny_subscribe_code, None, False
        sub = Subscription(text, inner, s.qos, s.no_local, s.retain_as_published, sub_id, group)
        state = self.session
        if self.user is not None and not self._may_subscribe(sub.queue or state.queue_name):
            return (NOT_AUTHORIZED if self.level >= 5 else UNSPECIFIED_ERROR), None, False
        try:
            if group is not None:
                is_new = text not in state.shared
                self._subscribe_shared(sub, state.shared.get(text))
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

    def _may_read(self, binding: str) -> bool:
        """The core's topic rules for a subscription's binding key (``AuthRegistry.check_topic``):
        a filter inside a denied area (``secret/+`` against ``secret/#``) is refused; a wider
        one (``#``, ``+/pw``) is granted and never sees a denied topic, live (amq.topic
        routes it to no one) or retained (``_queue_retained``); on ActiveMQ, read on
        ``topic://<filter>``."""
        try:
            self.broker.auth.check_topic(self.user, self.vhost.name, "read", binding)
        except AccessRefused as e:
            log.info("%s", e.text, extra={"conn": self.conn_id})
            return False
        return True

    def _may_subscribe(self, queue: str) -> bool:
        allowed = self.allowed
        return (allowed("read", "exchange", "amq.topic") and allowed("configure", "queue", queue)
                and allowed("write", "queue", queue) and allowed("read", "queue", queue))

    def _subscribe_shared(self, sub: Subscription, old: Subscription | None) -> None:
        vh = self.vhost
        name = sub.queue
        q = vh.queues.get(name)
        if q is None:
            # Not auto-delete: it outlives its connected members while a session holds it.
            q = vh.declare_queue(name, durable=True, arguments=CLASSIC)
            vh.bind("amq.topic", name, sub.binding)
        c = self.consumers.get(q)
        if c is None:
            c = MqttConsumer(q, f"mqtt-{self.client_id}", self, self.prefetch)
            c.set_subs([sub])
            self.consumers[q] = c
            q.add_consumer(c)
        else:
            c.set_subs([sub])

    def _refresh_session_consumer(self) -> None:
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
            self.dirty_queues.add(q)

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

    def _on_unsubscribe(self, p: Unsubscribe) -> None:
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
        self._refresh_session_consumer()
        save_session(state)
        self.send(encode(Unsuback(p.packet_id, tuple(codes) if self.level >= 5 else ()), self.level))

    def _unsubscribe_shared(self, sub: Subscription) -> None:
        q = self.vhost.queues.get(sub.queue or "")
        if q is None:
            return
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
