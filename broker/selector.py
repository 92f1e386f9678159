"""JMS message selectors (JMS 1.1 §3.8.1) as ActiveMQ Classic 5.17 evaluates them.

``compile_selector(text)`` parses once into a tree of closures (``selector_parser``,
``selector_eval``); ``Selector.matches(message, entry)`` then costs a few closure calls.

Identifiers name user properties (``message.properties["headers"][name]``) or the JMS
headers ActiveMQ resolves itself (``JMS_HEADERS`` below). Header values keep their type:
a STOMP header is always a string, and ActiveMQ compares a string with a number as false
unless the selector is compiled with ``convert_string_expressions=True``. ActiveMQ's STOMP
transport does exactly that for every SUBSCRIBE selector (it prefixes the selector with
``convert_string_expressions:``), so ``count > 5`` matches a STOMP header ``count:7``; a
STOMP session should pass ``convert_string_expressions=True``. The prefix in the text is
honoured too.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from .errors import InvalidSelector
from .message import Message, QueueEntry
from .selector_parser import Parser, SelectorSyntaxError

Fn = Callable[[Message, "QueueEntry | None"], Any]

CONVERT_PREFIX = "convert_string_expressions:"
DEFAULT_PRIORITY = 4  # JMS 1.1 §3.4.10: ActiveMQ gives a message without priority 4


def _headers(m: Message) -> dict[str, Any]:
    h = m.properties.get("headers")
    return h if isinstance(h, dict) else {}


def _timestamp_ms(m: Message) -> int:
    ts = m.properties.get("timestamp")
    if isinstance(ts, datetime.datetime):
        return int(ts.timestamp() * 1000)
    return ts * 1000 if isinstance(ts, int) else 0  # AMQP timestamps are whole seconds


def _expiration_ms(m: Message) -> int:
    """JMSExpiration: mqemu keeps a TTL (AMQP ``expiration``, ms) not an absolute time; it
    gives timestamp + TTL when both are known, else 0 (never) as ActiveMQ does."""
    exp = m.properties.get("expiration")
    try:
        ttl = int(exp) if exp is not None else 0
    except (TypeError, ValueError):
        return 0
    ts = _timestamp_ms(m)
    return ts + ttl if ttl and ts else 0


def _priority(m: Message) -> int:
    p = m.properties.get("priority")
    return p if isinstance(p, int) else DEFAULT_PRIORITY


def _group_seq(m: Message) -> int:
    v = _headers(m).get("JMSXGroupSeq")
    try:
        return int(v) if v is not None else 0
    except (TypeError, ValueError):
        return 0


# The JMS headers and JMSX properties ActiveMQ's PropertyExpression resolves itself.
JMS_HEADERS: dict[str, Fn] = {
    "JMSType": lambda m, e: m.properties.get("type"),
    "JMSDeliveryMode": lambda m, e: "PERSISTENT" if m.properties.get("delivery_mode") == 2 else "NON_PERSISTENT",
    "JMSPriority": lambda m, e: _priority(m),
    "JMSMessageID": lambda m, e: m.properties.get("message_id"),
    "JMSTimestamp": lambda m, e: _timestamp_ms(m),
    "JMSCorrelationID": lambda m, e: m.properties.get("correlation_id"),
    "JMSExpiration": lambda m, e: _expiration_ms(m),
    "JMSReplyTo": lambda m, e: m.properties.get("reply_to"),
    "JMSRedelivered": lambda m, e: bool(e is not None and e.redelivered),
    "JMSXDeliveryCount": lambda m, e: (e.delivery_count if e is not None else 0) + 1,
    "JMSXGroupID": lambda m, e: _headers(m).get("JMSXGroupID"),
    "JMSXGroupSeq": lambda m, e: _group_seq(m),
    "JMSXUserID": lambda m, e: m.properties.get("user_id") or _headers(m).get("JMSXUserID"),
}


def _property(name: str) -> Fn:
    special = JMS_HEADERS.get(name)
    if special is not None:
        return special

    def get(m: Message, e: QueueEntry | None) -> Any:
        h = m.properties.get("headers")
        return h.get(name) if h else None
    return get


class Selector:
    """A compiled selector. ``matches`` never raises."""

    __slots__ = ("text", "convert_strings", "_fn")

    def __init__(self, text: str, convert_strings: bool, fn: Fn) -> None:
        self.text = text
        self.convert_strings = convert_strings
        self._fn = fn

    def matches(self, message: Message, entry: QueueEntry | None = None) -> bool:
        """True when the selector is true for message (unknown and false do not match).
        ``entry`` supplies JMSRedelivered and JMSXDeliveryCount. An evaluation that fails
        (ActiveMQ throws, e.g. ``'a' * 2``) does not match."""
        try:
            return self._fn(message, entry) is True
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"Selector({self.text!r})"


def compile_selector(text: str, *, convert_string_expressions: bool = False) -> Selector:
    """Parse a JMS selector once.

    ``convert_string_expressions`` (or the text prefix ``convert_string_expressions:``)
    lets a string operand compare with a number or boolean by converting it, as ActiveMQ
    does for STOMP subscriptions.

    Raises InvalidSelector (406, soft) when the text is not a selector ActiveMQ accepts;
    its ``text`` is the selector, as ActiveMQ's InvalidSelectorException message is, and its
    ``reason`` says what is wrong.
    """
    if not isinstance(text, str):
        raise InvalidSelector(str(text), "a selector must be a string")
    sql = text
    if sql.startswith(CONVERT_PREFIX):
        sql = sql[len(CONVERT_PREFIX):]
        convert_string_expressions = True
    try:
        node = Parser(sql, _property, convert_string_expressions).parse()
    except SelectorSyntaxError as e:
        raise InvalidSelector(sql, str(e)) from None
    except (RecursionError, ValueError, OverflowError, MemoryError) as e:
        raise InvalidSelector(sql, f"{type(e).__name__}: {e}") from None
    return Selector(sql, convert_string_expressions, node.fn)
