"""MQTT session state that outlives a connection, and the registry of sessions by client id.

A session (MQTT 5.0 4.1, 3.1.1 4.1) is the client's subscriptions, its queue, the QoS 1/2
deliveries not yet acknowledged, and the QoS 2 packet ids received but not yet released. A
clean session (3.1.1 clean-session 1; 5.0 session expiry 0) ends with its connection; a
persistent one stays in the registry, its queue keeps collecting messages, and it ends when
its expiry interval has passed without a connection (3.1.1: never).

Queues follow RabbitMQ's names: one queue per session, ``mqtt-subscription-<clientid>qos1``
(RabbitMQ keeps a second ``...qos0`` queue for QoS 0 subscriptions; mqemu keeps one queue and
decides each delivery's QoS itself, which also gives one PUBLISH per message when several
subscriptions match), durable for a persistent session. Shared subscriptions ``$share/G/F``
use one durable queue per group and filter, ``mqtt-shared-<G>-<F>``, with each connected
member session as a consumer. RabbitMQ 3.10 has no shared subscriptions; following MQTT 5.0
4.8.2, the group's queue lives as long as any session (connected or not) holds the
subscription [MQTT-4.8.2-*]: an offline persistent member keeps the group's messages queued
(the connected members get them, or the first member to come back), and the queue is deleted
with the last member's unsubscribe or session end. Persistent sessions are written to the
store as records (``persist.py``).

The registry is the node's (``node_state.MqttNodeState``, held by the ``Broker``), so brokers
in one process do not see each other's clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mqemu.broker.errors import BrokerError

from .mapping import PUBLISHER, to_message
from .node_state import node_state
from .persist import forget_session
from .retained import retained_store
from .topics import Filter, filter_to_binding, parse_shared, topic_to_key

if TYPE_CHECKING:
    from mqemu.broker.core import Broker
    from mqemu.broker.message import QueueEntry
    from mqemu.broker.queue import Queue
    from mqemu.broker.vhost import VirtualHost

    from .packets import Will

NEVER_EXPIRES = 0xFFFFFFFF
# Session and shared-subscription queues are classic on every version: the engine's
# default_queue_type (quorum on Amazon MQ's RabbitMQ 4.2) is for queues clients declare.
CLASSIC = {"x-queue-type": "classic"}


class Subscription:
    """One subscription of a session, with its options (5.0 3.8.3.1)."""

    __slots__ = ("binding", "filter", "group", "no_local", "qos", "queue", "rap", "sub_id", "text")

    def __init__(self, text: str, inner: str, qos: int, no_local: bool, rap: bool,
                 sub_id: int | None, group: str | None = None) -> None:
        self.text = text  # as the client wrote it, $share prefix included
        self.filter = Filter(inner)
        self.qos = qos
        self.no_local = no_local
        self.rap = rap  # retain as published
        self.sub_id = sub_id
        self.binding = filter_to_binding(inner)
        self.group = group
        # the shared queue's name for shared subscriptions
        self.queue: str | None = None if group is None else f"mqtt-shared-{group}-{inner}"


class Inflight:
    """A QoS 1/2 delivery to the client awaiting PUBACK, PUBREC or PUBCOMP."""

    __slots__ = ("entry", "qos", "queue", "released", "retain", "topic")

    def __init__(self, queue: Queue | None, entry: QueueEntry | None, qos: int, topic: bytes,
                 retain: bool) -> None:
        self.queue = queue
        self.entry = entry  # None once settled in the queue (PUBREC received)
        self.qos = qos
        self.released = False  # PUBREC received, PUBREL sent: now awaiting PUBCOMP
        self.topic = topic
        self.retain = retain


class SessionState:
    def __init__(self, client_id: str, vhost: VirtualHost, expiry: int) -> None:
        self.client_id = client_id
        self.vhost = vhost
        self.expiry = expiry  # seconds; 0 = ends with the connection
        self.subs: dict[str, Subscription] = {}  # non-shared, by filter
        self.shared: dict[str, Subscription] = {}  # by the full $share/G/F text
        self.queue_name = "mqtt-subscription-" + client_id + "qos1"
        self.binding_refs: dict[str, int] = {}
        self.inflight: dict[int, Inflight] = {}
        self.awaiting_rel: set[int] = set()  # incoming QoS 2 ids before PUBREL [MQTT-4.3.3-?]
        self.next_pid = 0
        self.connection: Any = None
        self.generation = 0  # bumped at every attach; stale timers compare it
        self.pending_will: tuple[Will, str] | None = None
        self.ended = False
        self.registry: dict[tuple[str, str], SessionState] | None = None
        self.recorded = False  # a record of it is in the store (persist.py)

    @property
    def persistent(self) -> bool:
        return self.expiry > 0

    def new_packet_id(self) -> int:
        """The next packet id not in use by an outgoing QoS 1/2 delivery [MQTT-2.2.1-3]."""
        pid = self.next_pid
        inflight = self.inflight
        for _ in range(65535):
            pid = pid + 1 if pid < 65535 else 1
            if pid not in inflight:
                self.next_pid = pid
                return pid
        raise RuntimeError("no packet identifier left")  # prevented by the receive maximum

    # -- the session queue and its bindings ----------------------------------------------
    def queue(self) -> Queue:
        q = self.vhost.queues.get(self.queue_name)
        if q is None:
            q = self.vhost.declare_queue(self.queue_name, durable=self.persistent, arguments=CLASSIC)
        return q

    def bind(self, key: str) -> None:
        n = self.binding_refs.get(key, 0)
        if n == 0:
            self.vhost.bind("amq.topic", self.queue().name, key)
        self.binding_refs[key] = n + 1

    def unbind(self, key: str) -> None:
        n = self.binding_refs.get(key, 0)
        if n <= 1:
            self.binding_refs.pop(key, None)
            if n and self.queue_name in self.vhost.queues:
                self.vhost.unbind("amq.topic", self.queue_name, key)
        else:
            self.binding_refs[key] = n - 1

    def restore_subscription(self, text: str, qos: int, no_local: bool, rap: bool, sub_id: int | None) -> None:
        """A subscription read back from the store at start: its queue (recovered with its
        bindings, or declared again) keeps collecting messages while the client is away."""
        shared = parse_shared(text)
        group, inner = shared if shared is not None else (None, text)
        sub = Subscription(text, inner, qos, no_local, rap, sub_id, group)
        if group is None:
            self.subs[text] = sub
            self.bind(sub.binding)
        else:
            self.shared[text] = sub
            self.vhost.declare_queue(sub.queue, durable=True, arguments=CLASSIC)
            self.vhost.bind("amq.topic", sub.queue, sub.binding)

    def end(self) -> None:
        """The session is over: delete its queue and its records, leave shared groups, give
        unacked shared deliveries back to the group."""
        if self.ended:
            return
        forget_session(self)
        self.ended = True
        vh = self.vhost
        for inf in self.inflight.values():
            q = inf.queue
            if inf.entry is not None and not q.deleted and q.name != self.queue_name:
                q.release_consumer_entries(None, [inf.entry])
        self.inflight.clear()
        if self.queue_name in vh.queues:
            vh.delete_queue(self.queue_name, internal=True)
        for sub in self.shared.values():
            self.leave_group(sub)

    def leave_group(self, sub: Subscription) -> None:
        """This session no longer holds shared subscription sub: delete the group's queue if
        no other session does [MQTT-4.8.2-*]."""
        name = sub.queue
        for other in (self.registry or {}).values():
            if other is not self and not other.ended and any(s.queue == name for s in other.shared.values()):
                return
        if name in self.vhost.queues:
            self.vhost.delete_queue(name, internal=True)


def registry(broker: Broker) -> dict[tuple[str, str], SessionState]:
    """(vhost name, client id) -> the session, connected or not."""
    return node_state(broker).sessions


def publish_will(broker: Broker, vhost: VirtualHost, will: Will, client_id: str) -> None:
    """Publish a will message as if the client had sent it (3.1.1 3.1.2.5, 5.0 3.1.3.2)."""
    key = topic_to_key(will.topic)
    try:  # the deny rules (the user's authorisation was checked at CONNECT)
        broker.auth.check_topic(None, vhost.name, "write", key)
    except BrokerError:
        return
    props = will.properties or None
    if props:
        props = {k: v for k, v in props.items() if k != "will_delay_interval"}
    msg = to_message(key, will.payload, will.qos, will.retain, props)
    msg.fields = PUBLISHER.add(None, client_id)
    if will.retain and not broker.auth.topic_unreadable(key):
        expiry = (props or {}).get("message_expiry_interval")
        retained_store(broker, vhost.name).put(
            will.topic, msg, will.qos, None if expiry is None else vhost.clock() + expiry)
    try:
        vhost.publish("amq.topic", key, msg)
    except BrokerError:
        pass


def will_due(broker: Broker, state: SessionState, generation: int) -> None:
    if state.generation == generation and state.connection is None and state.pending_will is not None:
        will, cid = state.pending_will
        state.pending_will = None
        publish_will(broker, state.vhost, will, cid)


def expiry_due(broker: Broker, state: SessionState, generation: int) -> None:
    if state.generation == generation and state.connection is None:
        end_session(broker, state)


def end_session(broker: Broker, state: SessionState) -> None:
    if state.pending_will is not None:  # the session ends first: the will is due now
        will, cid = state.pending_will
        state.pending_will = None
        publish_will(broker, state.vhost, will, cid)
    state.end()
    reg = registry(broker)
    key = (state.vhost.name, state.client_id)
    if reg.get(key) is state:
        del reg[key]
