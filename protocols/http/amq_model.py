"""The ActiveMQ engine's destinations as its console shows them (JMX, ``/admin/xml``).

A queue is a core queue of the vhost ``/`` that no topic subscription owns (the queues
bound to ``amq.topic`` are subscriptions: STOMP/MQTT topic subscribers, durable ones named
``clientId:subscriptionName``). A topic is a name published or subscribed on ``amq.topic``
without wildcards, or one made through the console (``addTopic``, a REST send).

Counts mqemu does not keep (enqueue, dequeue, producers) are 0, as the RabbitMQ
management API's statistics are: nothing is counted per message for the console.
"""

from __future__ import annotations

from typing import Any

BROKER_NAME = "localhost"
TOPIC_EXCHANGE = "amq.topic"


class ConsoleState:
    """What the console adds to a node's broker: topics made through it, REST clients'
    topic subscriptions (``clientId`` -> destination -> queue name)."""

    def __init__(self) -> None:
        self.topics: set[str] = set()
        self.subscriptions: dict[str, dict[str, str]] = {}


def vhost(broker: Any) -> Any:
    return broker.vhosts["/"]


def topic_bindings(vh: Any) -> list[Any]:
    ex = vh.exchanges.get(TOPIC_EXCHANGE)
    return [b for b in vh.bindings() if b.source == TOPIC_EXCHANGE] if ex is not None else []


def queues(vh: Any) -> list[Any]:
    """The queues ActiveMQ would list (no topic subscriptions), by name."""
    subs = {b.destination for b in topic_bindings(vh)}
    return sorted((q for q in vh.queues.values() if q.name not in subs), key=lambda q: q.name)


def topics(vh: Any, state: ConsoleState) -> list[str]:
    names = set(state.topics)
    for b in topic_bindings(vh):
        if "*" not in b.routing_key and "#" not in b.routing_key:
            names.add(b.routing_key)
    return sorted(names)


def topic_consumers(vh: Any, name: str) -> int:
    return sum(len(vh.queues[b.destination].consumers) for b in topic_bindings(vh)
               if b.routing_key == name and b.destination in vh.queues)


def durable_subscribers(vh: Any) -> list[tuple[Any, str]]:
    """(queue, topic) of each durable topic subscription (``clientId:subscriptionName``)."""
    out = []
    for b in topic_bindings(vh):
        q = vh.queues.get(b.destination)
        if q is not None and q.durable and ":" in q.name:
            out.append((q, b.routing_key))
    return out


def queue_stats(q: Any) -> dict[str, int]:
    """A queue's statistics as ActiveMQ's destination MBean counts them (``Queue.counts``):
    messages enqueued; dispatched (every delivery, redeliveries too); dequeued (removed by
    an ack, an auto-ack delivery or expiry, as ActiveMQ's dequeue count includes expired
    messages); expired; in flight (delivered, not acked)."""
    c = q.counts
    return {"size": len(q.ready) + q.unacked, "consumerCount": len(q.consumers),
            "enqueueCount": c.enqueued, "dequeueCount": c.acked + c.delivered_no_ack(q.unacked) + c.got_no_ack + c.expired,
            "dispatchCount": c.delivered, "expiredCount": c.expired, "inflightCount": q.unacked}
