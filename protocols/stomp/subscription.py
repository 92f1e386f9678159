"""One STOMP subscription: the owner of its core consumers and the MESSAGE encoder.

A subscription (STOMP 1.2, "SUBSCRIBE") consumes one queue, or several for an ActiveMQ
composite destination. The queue calls ``deliver`` for each message it hands over, which
writes the whole MESSAGE frame straight into the connection's outbound buffer: the
headers that never change for this subscription (``subscription``, the message-id prefix,
the ``ack`` prefix) are encoded once, when it is created.

Message ids carry the connection's delivery tag, from the connection's ``acks.Deliveries``
(the one part that counts tags and keeps unsettled deliveries; a subscription only asks it
to ``record`` one), so ACK and NACK find a delivery with one dict lookup:

- RabbitMQ: ``T_<id>@@session-<guid>@@<tag>`` (the plugin's consumer tag, session and
  delivery tag), also the ``ack`` header in 1.2;
- ActiveMQ: ``ID:<session>:<subscription>:<tag>``, a JMS-style id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mqemu.broker.message import QueueEntry
from mqemu.broker.queue import Consumer

from .mapping import (
    TEXT,
    activemq_message_headers,
    encode_header_block,
    rabbit_header_block,
    to_utf8,
)

if TYPE_CHECKING:
    from .session import StompSession

ACK_MODES = ("auto", "client", "client-individual")
_TEXT = TEXT.key


class Subscription:
    """Consumer owner (``mqemu.broker.queue.ConsumerOwner``) for one SUBSCRIBE."""

    __slots__ = ("session", "deliveries", "id", "destination", "ack_mode", "cumulative", "consumers",
                 "blocked", "head", "id_prefix", "ack_prefix", "amqp_form", "headers", "end")

    def __init__(self, session: "StompSession", sub_id: str, destination: str, ack_mode: str,
                 show_id: bool, headers: dict[str, str] | None = None) -> None:
        self.session = session
        self.deliveries = session.deliveries  # the connection's tags and unsettled deliveries
        self.id = sub_id
        self.destination = destination
        self.ack_mode = ack_mode
        self.cumulative = ack_mode == "client"  # STOMP 1.2, "SUBSCRIBE ack Header"
        self.consumers: list[Consumer] = []
        self.blocked = session.over_budget
        self.headers = headers or {}
        # RabbitMQ's MESSAGE form (AMQP property headers, redelivered always, content-length)
        # or ActiveMQ's (JMS headers, redelivered when true, text bodies bare).
        self.amqp_form = session.flavour.AMQP_MESSAGE_FORM
        self.end = session.flavour.FRAME_END  # NUL, and the EOL the engine sends after it
        esc = session.escape
        self.head = b"MESSAGE\n" + (f"subscription:{esc(sub_id)}\n".encode() if show_id else b"")
        prefix = session.flavour.message_id_prefix(session, sub_id, destination, show_id)
        self.id_prefix = esc(prefix).encode()
        # STOMP 1.2: the ack header of MESSAGE frames that need an ACK.
        self.ack_prefix = b"ack:" + self.id_prefix if ack_mode != "auto" and session.version == "1.2" else None

    # -- consumer owner -----------------------------------------------------------------
    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        s = self.session
        deliveries = self.deliveries
        if consumer.no_ack:  # nothing to keep (``Deliveries.record``), only the next tag
            deliveries.tag = tag = deliveries.tag + 1
        else:
            tag = deliveries.record(self, consumer, entry)
        msg = entry.message
        key = (msg.exchange, msg.routing_key)
        dest = s.destinations_seen.get(key)
        if dest is None:
            dest = s.destination_line(key)
        props = msg.properties
        if not props:
            block = b""
        elif self.amqp_form:
            block = rabbit_header_block(props, s.escape)
        else:
            block = encode_header_block(activemq_message_headers(props), s.version)
        ack = b"" if self.ack_prefix is None else b"%s%d\n" % (self.ack_prefix, tag)
        body = msg.body
        if self.amqp_form:
            red = b"redelivered:true\n" if entry.redelivered else b"redelivered:false\n"
        else:
            red = b"redelivered:true\n" if entry.redelivered else b""
            fields = msg.fields
            if fields is not None and fields.get(_TEXT) is True:
                s.send(b"%s%smessage-id:%s%d\n%s%s%s\n%s%s" % (
                    self.head, dest, self.id_prefix, tag, red, block, ack, body, self.end))
                return
        s.send(b"%s%smessage-id:%s%d\n%s%s%scontent-length:%d\n\n%s%s" % (
            self.head, dest, self.id_prefix, tag, red, block, ack, len(body), body, self.end))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        """The queue was deleted under the subscription."""
        if consumer in self.consumers:
            self.consumers.remove(consumer)
        self.session.subscription_cancelled(self)

    # -- helpers --------------------------------------------------------------------------
    def cancel(self) -> None:
        for c in self.consumers:
            c.queue.remove_consumer(c)
        self.consumers = []

    def resume(self) -> None:
        for c in self.consumers:
            c.queue.dispatch()

    def __repr__(self) -> str:
        return f"Subscription({self.id!r}, {self.destination!r}, {self.ack_mode})"


def destination_header(name: Any, exchange: str, routing_key: str, escape: Any) -> bytes:
    """``destination:...\\n`` of MESSAGE frames for a message's exchange and routing key, as
    ``name`` (the flavour's ``destination_name``) writes it."""
    text = name(exchange, routing_key)
    return b"destination:" + to_utf8(escape(text)) + b"\n"
