"""Exchanges: where a message goes, from its routing key and headers.

Each exchange type keeps its own index of bindings so routing is a lookup, not a scan
(AMQP 0-9-1 §3.1.3). A binding's destination is a queue or, as a RabbitMQ extension, another
exchange. ``route`` returns the destinations one hop away; the virtual host follows
exchange-to-exchange hops and alternate exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from .errors import PreconditionFailed
from .message import Message
from .topic import TopicTrie

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")


@dataclass(frozen=True, slots=True)
class Binding:
    source: str
    destination: str
    destination_kind: str  # "queue" or "exchange"
    routing_key: str
    arguments: tuple = ()  # sorted items of the arguments table, hashable

    @property
    def args(self) -> dict[str, Any]:
        return dict(self.arguments)


def freeze_arguments(arguments: dict[str, Any] | None) -> tuple:
    if not arguments:
        return ()
    return tuple(sorted((k, _freeze(v)) for k, v in arguments.items()))


def _freeze(value: Any) -> Hashable:
    if isinstance(value, dict):
        return ("__table__", freeze_arguments(value))
    if isinstance(value, list):
        return ("__array__", tuple(_freeze(v) for v in value))
    return value


@dataclass(slots=True, eq=False)
class Exchange:
    """An exchange in one virtual host; ``route`` yields the bindings a message takes."""

    name: str
    type: str
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: set[Binding] = field(default_factory=set)
    _direct: dict[str, set[Binding]] = field(default_factory=dict)
    _topic: TopicTrie | None = None
    # The alternate exchange a policy gives it (``policies``); its own argument wins.
    policy_alternate: str | None = None
    # Messages published to it and queues they reached (the management API's publish_in,
    # publish_out; the default exchange's fast path counts on the vhost instead)
    published: int = 0
    routed: int = 0

    def __post_init__(self) -> None:
        if self.type not in EXCHANGE_TYPES:
            raise ValueError(self.type)
        if self.type == "topic":
            self._topic = TopicTrie()

    def hide_keys(self, unreadable: Callable[[str], bool]) -> None:
        """A topic exchange routes a key for which ``unreadable(key)`` is true to no binding
        (the topic rules of ``AuthRegistry``): asked once per key, the answer is kept in the
        trie's match cache with the bindings."""
        if self._topic is not None:
            self._topic.unreadable = unreadable

    @property
    def alternate_exchange(self) -> str | None:
        ae = self.arguments.get("alternate-exchange")
        return ae if isinstance(ae, str) and ae else self.policy_alternate

    def add_binding(self, b: Binding) -> bool:
        """Add b; False if the same binding already existed (binding is idempotent)."""
        if b in self.bindings:
            return False
        if self.type == "headers":
            _check_x_match(b.args)
        self.bindings.add(b)
        if self.type == "direct":
            self._direct.setdefault(b.routing_key, set()).add(b)
        elif self.type == "topic":
            self._topic.add(b.routing_key, b)
        return True

    def remove_binding(self, b: Binding) -> bool:
        if b not in self.bindings:
            return False
        self.bindings.discard(b)
        if self.type == "direct":
            group = self._direct.get(b.routing_key)
            if group is not None:
                group.discard(b)
                if not group:
                    del self._direct[b.routing_key]
        elif self.type == "topic":
            self._topic.remove(b.routing_key, b)
        return True

    def route(self, msg: Message, routing_key: str) -> "set[Binding] | frozenset[Binding]":
        t = self.type
        if t == "direct":
            return self._direct.get(routing_key, ())
        if t == "fanout":
            return self.bindings
        if t == "topic":
            return self._topic.match(routing_key)
        headers = msg.headers
        return {b for b in self.bindings if headers_match(b.args, headers)}


def _check_x_match(args: dict[str, Any]) -> None:
    x_match = args.get("x-match", "all")
    if x_match not in ("all", "any", "all-with-x", "any-with-x"):
        raise PreconditionFailed(
            f"Invalid x-match field value <<\"{x_match}\">>; expected all, any, all-with-x, or any-with-x"
        )


def headers_match(binding_args: dict[str, Any], headers: dict[str, Any]) -> bool:
    """The headers exchange rule: ``x-match`` all (default) or any over the binding's keys.

    Keys that begin with ``x-`` are ignored unless x-match ends in ``-with-x`` (RabbitMQ).
    A binding value of void (None) matches on the header's presence alone.
    """
    x_match = binding_args.get("x-match", "all")
    with_x = x_match.endswith("-with-x")
    want_all = x_match.startswith("all")
    for key, value in binding_args.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        ok = key in headers and (value is None or headers[key] == value)
        if want_all and not ok:
            return False
        if not want_all and ok:
            return True
    return want_all
