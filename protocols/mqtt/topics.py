"""MQTT topic names and filters: checks, the mapping to AMQP routing keys, and a matcher.

Every MQTT topic is routed through the ``amq.topic`` exchange. The mapping swaps ``/`` and
``.`` (MQTT ``a/b.c`` is the routing key ``a.b/c``) and turns the ``+`` wildcard into ``*``;
``#`` stays ``#``.

RabbitMQ: its MQTT plugin maps topics exactly this way (``/`` <-> ``.``, ``+`` -> ``*``).
ActiveMQ: it maps MQTT ``/`` to its ``.`` separator and ``+``/``#`` to ``*``/``>``, so a STOMP
``/topic/a.b`` or a JMS topic ``a.b`` meets MQTT ``a/b``; mqemu's ActiveMQ flavour keeps that
meeting point on ``amq.topic`` too.

The bindings are only a superset of what a client asked for: the core's trie knows nothing of
MQTT's rule that wildcards do not match topics starting with ``$`` [MQTT-4.7.2-1], and a
literal ``*`` level in an MQTT filter becomes a wildcard there. ``Filter.matches`` is the
authority; the session checks every delivery with it.
"""

from __future__ import annotations

from typing import Final

_SWAP: Final = str.maketrans("/.", "./")

SHARE_PREFIX: Final = "$share/"


def topic_to_key(topic: str) -> str:
    """An MQTT topic name as an ``amq.topic`` routing key."""
    return topic.translate(_SWAP)


def key_to_topic(key: str) -> str:
    """An ``amq.topic`` routing key (from any protocol) as an MQTT topic name."""
    return key.translate(_SWAP)


def filter_to_binding(topic_filter: str) -> str:
    """An MQTT topic filter as an ``amq.topic`` binding key (``+`` -> ``*``)."""
    return ".".join("*" if w == "+" else w for w in topic_filter.translate(_SWAP).split("."))


def valid_filter(topic_filter: str) -> bool:
    """[MQTT-4.7.1-2]: ``#`` alone in the last level; [MQTT-4.7.1-3]: ``+`` alone in its level."""
    if not topic_filter:
        return False  # [MQTT-4.7.3-1]
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """``$share/GROUP/FILTER`` -> (group, filter); None when not a shared subscription.

    Raises ValueError for a malformed one: an empty or wildcard group name or no filter
    (MQTT 5.0 4.8.2, [MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX):]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner or "+" in group or "#" in group:
        raise ValueError(f"malformed shared subscription {topic_filter!r}")
    return group, inner


class Filter:
    """One MQTT topic filter, matched against topic names the MQTT way."""

    __slots__ = ("exact", "levels", "text", "wild_first")

    def __init__(self, text: str) -> None:
        self.text = text
        self.levels = tuple(text.split("/"))
        self.exact = "+" not in text and "#" not in text
        self.wild_first = self.levels[0] in ("+", "#")

    def matches(self, topic: str) -> bool:
        if self.exact:
            return topic == self.text
        if self.wild_first and topic.startswith("$"):
            return False  # [MQTT-4.7.2-1]
        words = topic.split("/")
        levels = self.levels
        n = len(words)
        for i, level in enumerate(levels):
            if level == "#":
                return True  # also matches the parent level [MQTT-4.7.1-2]
            if i >= n:
                return False
            if level != "+" and level != words[i]:
                return False
        return len(levels) == n

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"


def filter_covers(deny: Filter, topic_filter: str) -> bool:
    """Whether a configured ACL filter covers a requested filter or topic.

    The request's own wildcards are taken literally, so ``deny = "a/#"`` covers ``a/+`` and
    ``a/b``, while ``deny = "a/b"`` does not cover ``a/+``.
    """
    if deny.exact:
        return topic_filter == deny.text
    words = topic_filter.split("/")
    n = len(words)
    for i, level in enumerate(deny.levels):
        if level == "#":
            return True
        if i >= n or (level != "+" and level != words[i]):
            return False
    return len(deny.levels) == n
