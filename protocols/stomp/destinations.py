"""STOMP destinations of each engine, resolved onto the core's exchanges and queues.

A ``destination`` header names where a SEND goes and what a SUBSCRIBE consumes. STOMP 1.2
leaves their meaning to the server ("SEND": "the destination ... is opaque"), so each
engine has its own:

RabbitMQ (the STOMP plugin):
    /queue/NAME            queue NAME (declared durable on SEND and SUBSCRIBE), default exchange
    /topic/KEY             amq.topic with KEY; each SUBSCRIBE binds a queue of its own
    /exchange/NAME[/PAT]   exchange NAME (must exist) with routing key / binding pattern PAT
    /amq/queue/NAME        an existing queue NAME, never declared
    /temp-queue/NAME       only in ``reply-to``: a private queue of the connection
    /reply-queue/NAME      the queue a /temp-queue/ reply-to was rewritten to
    NAME                   a bare name is a queue

ActiveMQ:
    /queue/NAME            a queue (durable), /topic/NAME a topic (amq.topic) whose
                           subscriptions may use ActiveMQ wildcards (``.``, ``*``, ``>``)
    /temp-queue/N, /temp-topic/N   the connection's temporary destinations; in ``reply-to``
                           they become /remote-temp-queue/..., /remote-temp-topic/...
    A,B,...                composite destinations; a part may be queue:// or topic:// prefixed
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import TYPE_CHECKING, Any

from mqemu.broker.queue import Queue

from .errors import StompError, protocol_exception
from .mapping import rabbit_boolean

if TYPE_CHECKING:
    from .session import StompSession

# RabbitMQ: the x- headers of SEND and SUBSCRIBE that become queue arguments, with their type.
RABBIT_QUEUE_ARGUMENTS = {
    "x-dead-letter-exchange": str, "x-dead-letter-routing-key": str, "x-expires": int,
    "x-max-length": int, "x-max-age": str, "x-stream-max-segment-size-bytes": int,
    "x-max-length-bytes": int, "x-max-priority": int, "x-message-ttl": int,
    "x-queue-type": str, "x-stream-filter-size-bytes": int, "x-overflow": str,
    "x-single-active-consumer": bool, "x-delivery-limit": int,
}
_RABBIT_PREFIXES = "/temp-queue, /exchange, /topic, /queue, /amq/queue, /reply-queue/"

ACTIVEMQ_TEMP_QUEUE = "/temp-queue/"
ACTIVEMQ_TEMP_TOPIC = "/temp-topic/"
ACTIVEMQ_REMOTE_QUEUE = "/remote-temp-queue/"
ACTIVEMQ_REMOTE_TOPIC = "/remote-temp-topic/"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _erlang_pair(a: str, b: str) -> bytes:
    """Erlang's external term format of ``{<<A>>, <<B>>}`` (the input RabbitMQ hashes)."""
    ab, bb = a.encode(), b.encode()
    return b"\x83h\x02m" + struct.pack(">I", len(ab)) + ab + b"m" + struct.pack(">I", len(bb)) + bb


def rabbit_subscription_queue(name: str, sub_id: str) -> str:
    """RabbitMQ: the durable subscription queue of (routing name, subscription id)."""
    return "stomp-subscription-" + _b64url(hashlib.md5(_erlang_pair(name, sub_id)).digest())


_bool_param = rabbit_boolean  # only true/True/false/False count


class RabbitDestinations:
    """RabbitMQ's STOMP plugin destinations (see the module docstring)."""

    def __init__(self, session: "StompSession") -> None:
        self.s = session
        self.declared: set[str] = set()  # queues this connection declared (RabbitMQ's route_state)
        self.reply_queues: dict[str, str] = {}  # /temp-queue/ id -> queue name

    # -- parsing --------------------------------------------------------------------------
    @staticmethod
    def parse(dest: str) -> tuple[str, str, str | None]:
        """(kind, name, pattern). Raises StompError for an unknown or malformed one."""
        parts = dest.split("/")
        if len(parts) == 1:
            return "queue", _unescape(dest), None
        if parts[0] == "" and len(parts) > 2 and parts[1] == "reply-queue" and dest != "/reply-queue/":
            return "reply_queue", dest[len("/reply-queue/"):], None
        if parts[0] != "" or len(parts) < 2:
            raise _unknown(dest)
        kind, rest = parts[1], parts[2:]
        if kind == "amq" and rest[:1] == ["queue"]:
            kind, rest = "amqqueue", rest[1:]
        elif kind == "temp-queue":
            kind = "temp_queue"
        elif kind not in ("exchange", "queue", "topic"):
            raise _unknown(dest)
        if kind == "exchange":
            if rest and rest[0] and len(rest) <= 2:
                return kind, _unescape(rest[0]), _unescape(rest[1]) if len(rest) == 2 else None
        elif len(rest) == 1 and rest[0]:
            return kind, _unescape(rest[0]), None
        shown = "/" + "/".join(rest) if rest else ""
        raise StompError("Invalid destination", f"'{shown}' is not a valid {kind} destination\n")

    # -- SEND -----------------------------------------------------------------------------
    def send_targets(self, dest: str, headers: dict[str, str]) -> list[tuple[str, str]]:
        kind, name, pattern = self.parse(dest)
        if kind == "queue":
            if name not in self.declared:
                self._declare(name, headers, default_durable=True)
                self.declared.add(name)
            return [("", name)]
        if kind == "topic":
            return [("amq.topic", name)]
        if kind == "exchange":
            self.s.vhost.get_exchange(name)
            return [(name, pattern or "")]
        if kind in ("amqqueue", "reply_queue"):
            return [("", name)]
        raise StompError("Invalid destination", f"'{dest}' is not a valid destination for 'SEND'\n")

    def rewrite_reply_to(self, value: str) -> str:
        """A reply-to of /temp-queue/ID becomes this connection's private queue, which it
        consumes with the subscription id /temp-queue/ID (RabbitMQ's temp queues)."""
        if not value.startswith("/temp-queue/"):
            return value
        qname = self.reply_queues.get(value)
        if qname is None:
            s = self.s
            # RabbitMQ declares the reply queue as the user, so it needs configure on it
            # (amq.gen-*: the name the server gives it), as an AMQP declare would.
            s.check("configure", "queue", s.vhost.server_named())
            q = s.vhost.declare_queue("", False, s, True, {}, owner=s)
            qname = self.reply_queues[value] = q.name
            s.add_subscription(value, value, [q], "auto", prefetch=0)
        return qname

    # -- SUBSCRIBE ------------------------------------------------------------------------
    def subscribe_queues(self, dest: str, headers: dict[str, str], sub_id: str) -> list[Queue]:
        kind, name, pattern = self.parse(dest)
        s = self.s
        if kind == "queue":
            return [self._declare(name, headers, default_durable=True)]
        if kind in ("amqqueue", "reply_queue"):
            s.check("read", "queue", name)
            return [s.vhost.get_queue(name, owner=s)]
        if kind in ("topic", "exchange"):
            exchange, key = ("amq.topic", name) if kind == "topic" else (name, pattern or "")
            if kind == "exchange":
                s.vhost.get_exchange(exchange)
            if exchange == "amq.topic":  # topic rules, before any queue is made
                s.check_topic("read", key)
            durable = _bool_param(headers.get("durable")) or _bool_param(headers.get("persistent"))
            qname = headers.get("x-queue-name")
            if qname is None:
                qname = (rabbit_subscription_queue(key, sub_id) if durable
                         else "stomp-subscription-" + _b64url(os.urandom(16)))
            q = self._declare(qname, headers, default_durable=False,
                              default_exclusive=kind == "exchange", default_auto_delete=True)
            s.check("write", "queue", q.name)
            s.check("read", "exchange", exchange)
            s.vhost.bind(exchange, q.name, key, owner=s)
            return [q]
        raise StompError("Invalid destination", f"'{dest}' is not a valid destination for 'SUBSCRIBE'\n")

    def unsubscribed(self, dest: str, queues: list[Queue], headers: dict[str, str]) -> None:
        """UNSUBSCRIBE with durable:true (or persistent:true) deletes a topic subscription's
        durable queue (RabbitMQ's way to end a durable subscription)."""
        try:
            kind = self.parse(dest)[0]
        except StompError:
            return
        if kind == "topic" and (_bool_param(headers.get("durable")) or _bool_param(headers.get("persistent"))):
            for q in queues:
                self.s.check("configure", "queue", q.name)
                self.s.vhost.delete_queue(q.name, owner=self.s)

    # -- helpers --------------------------------------------------------------------------
    def _declare(self, name: str, headers: dict[str, str], default_durable: bool,
                 default_exclusive: bool = False, default_auto_delete: bool = False) -> Queue:
        s = self.s
        durable = _bool_param(headers.get("durable"))
        if durable is None:
            durable = _bool_param(headers.get("persistent"))
        durable = default_durable if durable is None else durable
        auto_delete = _bool_param(headers.get("auto-delete"))
        exclusive = _bool_param(headers.get("exclusive"))
        if not durable:  # RabbitMQ: a non-durable endpoint queue is exclusive and auto-delete
            auto_delete, exclusive = True, True
        auto_delete = default_auto_delete if auto_delete is None else auto_delete
        exclusive = default_exclusive if exclusive is None else exclusive
        s.check("configure", "queue", name)
        return s.vhost.declare_queue(name, durable, s if exclusive else None, auto_delete,
                                     queue_arguments(headers), owner=s)


def queue_arguments(headers: dict[str, str]) -> dict[str, Any]:
    """RabbitMQ: SEND/SUBSCRIBE headers that are queue arguments, typed as the plugin does."""
    args: dict[str, Any] = {}
    for key, kind in RABBIT_QUEUE_ARGUMENTS.items():
        value = headers.get(key)
        if value is None:
            continue
        value = value.strip()
        try:
            args[key] = int(value) if kind is int else (value == "true" if kind is bool else value)
        except ValueError:
            raise StompError("Invalid header", f"header '{key}' must be an integer, not '{value}'\n") from None
    return args


def _unescape(text: str) -> str:
    return text.replace("%2F", "/") if "%2F" in text else text


def _unknown(dest: str) -> StompError:
    return StompError("Unknown destination", f"'{dest}' is not a valid destination.\n"
                      f"Valid destination types are: {_RABBIT_PREFIXES}.\n")


# -- ActiveMQ -------------------------------------------------------------------------------
def activemq_wildcards(name: str) -> str:
    """ActiveMQ topic wildcards onto the core's topic trie: ``*`` one word, ``>`` the rest."""
    if ">" not in name:
        return name
    return ".".join("#" if w == ">" else w for w in name.split("."))


def _temporary(name: str) -> bool:
    """A temporary destination's name (a connection id, ``ID:...``, as ActiveMQ names them)."""
    return name.startswith("ID:")


class ActiveMQDestinations:
    """ActiveMQ Classic's STOMP destinations (see the module docstring)."""

    DEFAULT_QUEUE_PREFETCH = 1000  # ActiveMQ's default queue prefetch
    DEFAULT_TOPIC_PREFETCH = 32766  # ActiveMQ's default topic prefetch

    def __init__(self, session: "StompSession") -> None:
        self.s = session
        self.declared: set[str] = set()
        # ActiveMQ names a connection's temporary destinations <connection id>:<n>, n counting
        # from 1 per connection; the connection itself sees the name it gave.
        self.temp_prefix = f"{session.session_id}:"
        self.temp_names: dict[str, str] = {}  # "/temp-queue/x" -> the real name
        self.temp_shown: dict[str, str] = {}  # the real queue name -> "/temp-queue/x"

    def parse(self, dest: str) -> list[tuple[str, str]]:
        """[(kind, name)], kind one of queue/topic, one per part of a composite destination.
        Raises StompError for an unknown prefix."""
        out: list[tuple[str, str]] = []
        default = None
        for part in dest.split(","):
            part = part.strip()
            if part.startswith("queue://"):
                out.append(("queue", part[8:]))
            elif part.startswith("topic://"):
                out.append(("topic", part[8:]))
            elif part.startswith("/queue/"):
                out.append(("queue", part[7:]))
            elif part.startswith("/topic/"):
                out.append(("topic", part[7:]))
            elif part.startswith(ACTIVEMQ_TEMP_QUEUE):
                out.append(("queue", self.temp_name(part)))
            elif part.startswith(ACTIVEMQ_TEMP_TOPIC):
                out.append(("topic", self.temp_name(part)))
            elif part.startswith(ACTIVEMQ_REMOTE_QUEUE):
                out.append(("queue", part[len(ACTIVEMQ_REMOTE_QUEUE):]))
            elif part.startswith(ACTIVEMQ_REMOTE_TOPIC):
                out.append(("topic", part[len(ACTIVEMQ_REMOTE_TOPIC):]))
            elif default is not None and not part.startswith("/"):
                out.append((default, part))  # a composite part inherits the first part's kind
            else:
                raise StompError(f"Unknown destination type: {dest}",
                                 f"java.lang.IllegalArgumentException: Unknown destination type: {dest}\n")
            if not out[-1][1]:
                raise StompError(f"Invalid destination: {dest}", f"Invalid destination: {dest}\n")
            default = default or out[-1][0]
        return out

    def temp_name(self, dest: str) -> str:
        """The real name of this connection's /temp-queue/X or /temp-topic/X."""
        name = self.temp_names.get(dest)
        if name is None:
            name = self.temp_names[dest] = f"{self.temp_prefix}{len(self.temp_names) + 1}"
            if dest.startswith(ACTIVEMQ_TEMP_QUEUE):
                self.temp_shown[name] = dest
        return name

    def send_targets(self, dest: str, headers: dict[str, str]) -> list[tuple[str, str]]:
        targets = []
        s = self.s
        for kind, name in self.parse(dest):
            if kind == "queue":
                if s.authorizing and ("", name) not in s.write_allowed:
                    # ActiveMQ: write, then admin when the SEND creates it; a queue once
                    # allowed is remembered (ActiveMQ's authorised write destinations).
                    s.check_destination("write", "queue", name, name in s.vhost.queues, _temporary(name))
                    if len(s.write_allowed) < 1024:
                        s.write_allowed.add(("", name))
                self._queue(name)
                targets.append(("", name))
            else:
                targets.append(("amq.topic", name))
        return targets

    def rewrite_reply_to(self, value: str) -> str:
        """ActiveMQ: a temporary destination in reply-to is shown to others as remote."""
        if value.startswith(ACTIVEMQ_TEMP_QUEUE):
            name = self.temp_name(value)
            if self.s.authorizing:
                self.s.check_destination("write", "queue", name, name in self.s.vhost.queues, True)
            self._queue(name, temporary=True)
            return ACTIVEMQ_REMOTE_QUEUE + name
        if value.startswith(ACTIVEMQ_TEMP_TOPIC):
            return ACTIVEMQ_REMOTE_TOPIC + self.temp_name(value)
        return value

    def subscribe_queues(self, dest: str, headers: dict[str, str], sub_id: str) -> list[Queue]:
        s = self.s
        queues = []
        for kind, name in self.parse(dest):
            if kind == "queue":
                # ActiveMQ: read on the queue, admin first when the SUBSCRIBE creates it.
                s.check_destination("read", "queue", name, name in s.vhost.queues, _temporary(name))
                queues.append(self._queue(name, temporary=name.startswith(self.temp_prefix)))
                continue
            s.check_topic("read", activemq_wildcards(name))
            sub_name = headers.get("activemq.subscriptionName") or headers.get("durable-subscription-name")
            if sub_name and s.client_id:
                # ActiveMQ: a durable topic subscription outlives the connection.
                q = s.vhost.declare_queue(f"{s.client_id}:{sub_name}", True, None, False, {}, owner=s)
            else:
                q = s.vhost.declare_queue(s.vhost.server_named().replace("amq.gen-", "stomp-sub-"),
                                          False, s, True, {}, owner=s)
            s.vhost.bind("amq.topic", q.name, activemq_wildcards(name), owner=s)
            queues.append(q)
        return queues

    def unsubscribed(self, dest: str, queues: list[Queue], headers: dict[str, str]) -> None:
        pass  # ActiveMQ keeps a durable subscription until it is removed (remove_durable)

    def remove_durable(self, sub_name: str, active_here: bool) -> None:
        """ActiveMQ's RemoveSubscriptionInfo for (client-id, sub_name). Raises StompError
        while a consumer uses it or when there is none."""
        s = self.s
        q = s.vhost.queues.get(f"{s.client_id}:{sub_name}") if s.client_id else None
        if q is None:
            raise protocol_exception(f"No durable subscription exists for clientID: {s.client_id} "
                                     f"and subscriptionName: {sub_name}")
        if active_here or q.consumers:
            raise protocol_exception("Durable consumer is in use")
        s.vhost.delete_queue(q.name, owner=s)

    def _queue(self, name: str, temporary: bool = False) -> Queue:
        s = self.s
        q = s.vhost.queues.get(name)
        if q is None:
            if temporary:  # lives as long as the connection (exclusive), not its consumers
                q = s.vhost.declare_queue(name, False, s, False, {}, owner=s)
            else:
                q = s.vhost.declare_queue(name, True, None, False, {}, owner=s)
        return q
