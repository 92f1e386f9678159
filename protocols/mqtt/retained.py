"""Retained messages: the last retained PUBLISH per topic, one store per virtual host.

The core has no notion of a retained message, so the MQTT layer keeps them: topic name ->
(message, publish QoS, deadline). A retained PUBLISH with an empty payload removes the
topic's message [MQTT-3.3.1-6] (3.1.1: [MQTT-3.3.1-10]) and is itself not stored
[MQTT-3.3.1-7]. Stores are the node's (``node_state.MqttNodeState``, held by the ``Broker``), so
brokers in one process do not see each other's messages. With a store that keeps data every change
is written as a record (``persist.save_retained``) and read back at start
(``persist.restore``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .node_state import node_state
from .persist import save_retained
from .topics import Filter

if TYPE_CHECKING:
    from mqemu.broker.core import Broker
    from mqemu.broker.message import Message
    from mqemu.broker.store.base import Store


class Retained:
    __slots__ = ("expires_at", "message", "qos")

    def __init__(self, message: Message, qos: int, expires_at: float | None) -> None:
        self.message = message
        self.qos = qos
        self.expires_at = expires_at  # broker clock; None = never


class RetainedStore:
    def __init__(self, store: Store | None = None, vhost: str = "/",
                 clock: Callable[[], float] | None = None) -> None:
        self.by_topic: dict[str, Retained] = {}
        self.store = store
        self.vhost = vhost
        self.clock = clock

    def put(self, topic: str, message: Message, qos: int, expires_at: float | None) -> bool:
        """Keep (or with an empty payload, clear) topic's message. True when a record was
        written, so the PUBACK must wait for the store."""
        if not message.body:
            r = None
            if self.by_topic.pop(topic, None) is None:
                return False
        else:
            r = self.by_topic[topic] = Retained(message, qos, expires_at)
        return self._save(topic, r)

    def load(self, topic: str, message: Message, qos: int, expires_at: float | None) -> None:
        """A retained message read back from the store at start."""
        self.by_topic[topic] = Retained(message, qos, expires_at)

    def _save(self, topic: str, r: Retained | None) -> bool:
        store = self.store
        if store is None or not store.keeps_messages:
            return False
        save_retained(store, self.vhost, topic, r, self.clock() if self.clock else 0.0)
        return True

    def matching(self, topic_filter: Filter, now: float) -> Iterator[tuple[str, Retained]]:
        """The retained messages whose topic matches, dropping expired ones on the way
        (5.0 3.3.2.3.3: an expired retained message is not sent)."""
        if topic_filter.exact:
            r = self.by_topic.get(topic_filter.text)
            items = [] if r is None else [(topic_filter.text, r)]
        else:
            items = [(t, r) for t, r in self.by_topic.items() if topic_filter.matches(t)]
        for topic, r in items:
            if r.expires_at is not None and r.expires_at <= now:
                del self.by_topic[topic]
                self._save(topic, None)
                continue
            yield topic, r

    def __len__(self) -> int:
        return len(self.by_topic)


def retained_store(broker: Broker, vhost: str) -> RetainedStore:
    per_vhost = node_state(broker).retained
    store = per_vhost.get(vhost)
    if store is None:
        store = per_vhost[vhost] = RetainedStore(broker.store, vhost, broker.clock)
    return store
