"""Retained messages: the last retained PUBLISH per topic, one store per virtual host.

The core has no notion of a retained message, so the MQTT layer keeps them: topic name ->
(message, publish QoS, deadline). A retained PUBLISH with an empty payload removes the
topic's message [MQTT-3.3.1-6] (3.1.1: [MQTT-3.3.1-10]) and is itself not stored
[MQTT-3.3.1-7]. Stores live per ``Broker`` object in a weak dictionary, so a broker that goes
away takes its retained messages with it (the memory store keeps nothing on disk either).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from .topics import Filter

if TYPE_CHECKING:
    from mqemu.broker.core import Broker
    from mqemu.broker.message import Message


class Retained:
    __slots__ = ("expires_at", "message", "qos")

    def __init__(self, message: Message, qos: int, expires_at: float | None) -> None:
        self.message = message
        self.qos = qos
        self.expires_at = expires_at  # broker clock; None = never


class RetainedStore:
    def __init__(self) -> None:
        self.by_topic: dict[str, Retained] = {}

    def put(self, topic: str, message: Message, qos: int, expires_at: float | None) -> None:
        if not message.body:
            self.by_topic.pop(topic, None)
        else:
            self.by_topic[topic] = Retained(message, qos, expires_at)

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
                continue
            yield topic, r

    def __len__(self) -> int:
        return len(self.by_topic)


_stores: weakref.WeakKeyDictionary[Broker, dict[str, RetainedStore]] = weakref.WeakKeyDictionary()


def retained_store(broker: Broker, vhost: str) -> RetainedStore:
    per_broker = _stores.get(broker)
    if per_broker is None:
        per_broker = _stores[broker] = {}
    store = per_broker.get(vhost)
    if store is None:
        store = per_broker[vhost] = RetainedStore()
    return store
