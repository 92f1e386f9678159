"""The protocol-neutral message.

Properties are the AMQP 0-9-1 basic properties by name (``content_type``, ``headers``,
``delivery_mode``, ``priority``, ``correlation_id``, ``reply_to``, ``expiration``,
``message_id``, ``timestamp``, ``type``, ``user_id``, ``app_id``), as RabbitMQ keeps them for
every protocol it speaks; STOMP and MQTT sessions map their headers onto these names.
"""

from __future__ import annotations

import itertools
from typing import Any, Generic, Mapping, TypeVar

from .errors import PreconditionFailed


def check_expiration(text: str) -> None:
    """RabbitMQ refuses a message whose expiration is not an integer from 0 to ten years in
    ms (AMQP 0-9-1 and STOMP publishers alike), with the texts of its
    ``rabbit_basic:parse_expiration``. Raises PreconditionFailed. Checked against
    RabbitMQ 3.10."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    n = len(digits) - len(digits.lstrip("0123456789"))
    if n == 0:
        raise PreconditionFailed(f"invalid expiration '{text}': no_integer")
    if n < len(digits):
        raise PreconditionFailed(f"invalid expiration '{text}': {{leftover_string,\"{digits[n:]}\"}}")
    if text[0] == "-" and digits.strip("0"):
        raise PreconditionFailed(f"invalid expiration '{text}': {{value_negative,{text}}}")
    value = digits.lstrip("0") or "0"
    if text[0] != "-" and (len(value) > 12 or int(value) > MAX_EXPIRATION_MS):
        raise PreconditionFailed(f"invalid expiration '{text}': {{value_too_large,{value}}}")


MAX_EXPIRATION_MS = 315_360_000_000  # RabbitMQ's ceiling: ten years


# A per-message TTL (``expiration``, ms) of this or more never expires: STOMP can send an
# expiration of thousands of digits, which no deadline (a float, an int64 index) can hold.
NEVER_MS = 1 << 62


class Message:
    """One published message; the body is kept once and shared by every queue it reaches.

    ``encoded_properties`` caches the binary AMQP 0-9-1 property list (flags and values) so an
    unchanged message is redelivered without encoding its properties again. Whoever changes
    ``properties`` must set it to None.
    """

    __slots__ = (
        "exchange",
        "routing_key",
        "body",
        "properties",
        "encoded_properties",
        "routing_keys",
        "fields",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: dict[str, Any] | None = None,
        encoded_properties: bytes | None = None,
        fields: Mapping[str, FieldValue] | None = None,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties if properties is not None else {}
        self.encoded_properties = encoded_properties
        self.routing_keys: list[str] | None = None  # with CC/BCC, every key it was routed by
        # Protocol fields (see ``Field``): kept and stored with the message, never read by
        # the core. Shared between messages: replaced, never changed in place.
        self.fields = fields

    @property
    def persistent(self) -> bool:
        return self.properties.get("delivery_mode") == 2

    @property
    def priority(self) -> int:
        p = self.properties.get("priority")
        return p if p.__class__ is int and p > 0 else 0  # a STOMP priority may be negative

    @property
    def headers(self) -> dict[str, Any]:
        h = self.properties.get("headers")
        return h if isinstance(h, dict) else {}

    def copy_with(self, **changes: Any) -> "Message":
        """A new message with the same body and some fields or properties changed."""
        props = dict(self.properties)
        for key in list(changes):
            if key not in ("exchange", "routing_key"):
                value = changes.pop(key)
                if value is None:
                    props.pop(key, None)
                else:
                    props[key] = value
        msg = Message(
            changes.get("exchange", self.exchange),
            changes.get("routing_key", self.routing_key),
            self.body,
            props,
            fields=self.fields,
        )
        return msg

    def __repr__(self) -> str:
        return f"Message({self.exchange!r}, {self.routing_key!r}, {len(self.body)} bytes)"


FieldValue = str | int | bool
T = TypeVar("T", str, int, bool)


class Field(Generic[T]):
    """A protocol's own field of a message: a typed key, namespaced by the protocol, in
    ``Message.fields`` (``"stomp.text"``, ``"mqtt.publisher"``).

    What only one protocol needs to know about a message (an ActiveMQ STOMP text message,
    the MQTT client that published it) travels with it, through copies (dead-lettering,
    scheduled delivery) and the store, without the core reading it. Values are plain
    ``str``, ``int`` or ``bool``, so every store can keep them. A protocol declares its
    fields once, as module constants::

        TEXT = Field("stomp", "text", bool)
        TEXT.get(message)            # True, or None when absent
        message.fields = TEXT.add(message.fields, True)
    """

    __slots__ = ("key", "type")

    def __init__(self, namespace: str, name: str, type_: type[T]) -> None:
        self.key = f"{namespace}.{name}"
        self.type: type[T] = type_

    def get(self, message: Message) -> T | None:
        fields = message.fields
        if fields is None:
            return None
        value = fields.get(self.key)
        return value if value.__class__ is self.type else None  # type: ignore[return-value]

    def add(self, fields: Mapping[str, FieldValue] | None, value: T) -> dict[str, FieldValue]:
        """A new fields mapping: ``fields`` with this field set to ``value``."""
        if value.__class__ is not self.type:
            raise TypeError(f"{self.key} is a {self.type.__name__}, not {value.__class__.__name__}")
        return {**(fields or {}), self.key: value}

    def __repr__(self) -> str:
        return f"Field({self.key!r}, {self.type.__name__})"


# Entries are numbered in the order they are made, so within one queue ``seq`` is the order
# of arrival: a requeued entry goes back to its place by it, as on RabbitMQ.
_entry_seq = itertools.count()


class QueueEntry:
    """A message's place in one queue: its arrival number, redelivery state, deadline and
    the store's handle for it (the store never writes on the ``Message`` itself)."""

    __slots__ = ("message", "seq", "redelivered", "delivery_count", "expires_at", "size", "store_id")

    def __init__(self, message: Message, expires_at: float | None) -> None:
        self.message = message
        self.seq = next(_entry_seq)
        self.redelivered = False
        self.delivery_count = 0
        self.expires_at = expires_at
        self.size = len(message.body)
        # The store's handle for this queue's copy (``Store.add_message``); None: not stored.
        self.store_id: int | None = None
