"""SUBSCRIBE and UNSUBSCRIBE (STOMP 1.2, "SUBSCRIBE", "UNSUBSCRIBE"), mixed into the session.

Each engine's flavour (``flavours``: its destinations and rules) says which queue a
subscription consumes; this module checks the frame, builds the ``Subscription`` (a consumer
owner) and tears it down.
"""

from __future__ import annotations

from typing import Any

from .codec import Frame
from .errors import StompError
from .frames_out import error_frame
from .subscription import ACK_MODES, Subscription


class SubscribeMixin:
    def _on_subscribe(self, f: Frame) -> bool:
        h = f.headers
        dest = h.get("destination")
        if dest is None:
            raise self.flavour.refusal(StompError("Missing destination",
                                                  "SUBSCRIBE must include a 'destination' header\n"),
                                       "Invalid empty or 'null' Destination header")
        sub_id = h.get("id")
        if sub_id is None:
            # STOMP 1.1+, "SUBSCRIBE": the id header is required. ActiveMQ insists; RabbitMQ
            # takes the destination as the id, as in 1.0.
            if self.version != "1.0" and self.flavour.SUBSCRIBE_NEEDS_ID:
                raise StompError("SUBSCRIBE received without a subscription id!",
                                 "org.apache.activemq.transport.stomp.ProtocolException: "
                                 "SUBSCRIBE received without a subscription id!\n")
            if self.flavour.DURABLE_NEEDS_ID and self.flavour.durable_subscription(h):
                raise StompError("Missing Header", "Header 'id' is required for durable subscriptions")
        elif self.flavour.TEMP_QUEUE_ID_RESERVED and sub_id.startswith("/temp-queue/"):
            raise StompError("Invalid id", "SUBSCRIBE 'id' may not start with /temp-queue/\n")
        key = dest if sub_id is None else sub_id
        if key in self.subscriptions:
            raise self.flavour.duplicate_subscription(sub_id, dest)
        ack = h.get("ack", "auto")
        if ack not in ACK_MODES:
            raise StompError("Invalid ack mode", f"'{ack}' is not a valid ack mode "
                             "(auto, client, client-individual)\n")
        prefetch, selector = self.flavour.consumer_options(h, dest)
        queues = self.destinations.subscribe_queues(dest, h, key)
        for q in queues:
            self.check("read", "queue", q.name)
        self._receipt(f)  # before any MESSAGE the subscription may receive at once
        self.add_subscription(key, dest, queues, ack, prefetch, sub_id is not None, h, selector)
        return True

    def add_subscription(self, key: str, dest: str, queues: list, ack: str, prefetch: int,
                         show_id: bool = True, headers: dict[str, str] | None = None,
                         selector: Any = None) -> Subscription:
        from mqemu.broker.queue import Consumer

        self.sub_counter += 1
        sub = Subscription(self, key, dest, ack, show_id, headers)
        self.subscriptions[key] = sub
        priority = int((headers or {}).get("x-priority", "0")) if self.flavour.CONSUMER_PRIORITIES else 0
        for q in queues:
            c = Consumer(q, f"stomp-{self.conn_id}-{key}", sub, ack == "auto", priority=priority,
                         prefetch=prefetch)
            c.selector = selector
            sub.consumers.append(c)
        for c in list(sub.consumers):
            c.queue.add_consumer(c)
        return sub

    def _on_unsubscribe(self, f: Frame) -> bool:
        h = f.headers
        key = h.get("id")
        if key is None:
            by_dest = self.version == "1.0" or self.flavour.UNSUBSCRIBE_BY_DESTINATION
            key = h.get("destination") if by_dest else None
            if key is None:
                raise self.flavour.refusal(StompError("Missing destination or id",
                                                      "UNSUBSCRIBE must include a 'destination' or 'id' header"),
                                           "UNSUBSCRIBE received without a subscription id!")
        # ActiveMQ: UNSUBSCRIBE naming a durable subscription removes it.
        if self.destinations.remove_named_durable(h, key in self.subscriptions):
            return False
        sub = self.subscriptions.pop(key, None)
        if sub is None:
            raise self.flavour.refusal(StompError(
                "No subscription found", "UNSUBSCRIBE must refer to an existing subscription.\n"
                f"Subscription to id='{key}' not found.\n"), "No subscription matched.")
        queues = [c.queue for c in sub.consumers]
        sub.cancel()
        self.destinations.unsubscribed(sub.destination, queues, h)
        return False

    def subscription_cancelled(self, sub: Subscription) -> None:
        """A queue under a subscription was deleted."""
        if sub.consumers or self.subscriptions.get(sub.id) is not sub:
            return
        del self.subscriptions[sub.id]
        if self.flavour.TELLS_SERVER_CANCEL and self.connected:
            # RabbitMQ (the plugin's server_cancel_consumer) tells the client with an ERROR
            # naming the subscription and keeps the connection open.
            self.send(error_frame("Server cancelled subscription",
                                  f"The server has canceled a subscription.\nNo more messages will be "
                                  f"delivered for \"id='{sub.id}'\".\n", None, self.version,
                                  [("subscription", sub.id)], self.flavour.FRAME_END))
