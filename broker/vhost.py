"""A virtual host: its exchanges, queues and bindings, and the routing of every publish.

Every method is a plain call. Errors are the typed errors of ``errors``; texts follow
RabbitMQ 3.x, since clients and their tests read them.
"""

from __future__ import annotations

import base64
import datetime
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, cast

from . import activemq, policies
from .profile import RABBITMQ, EngineProfile
from .errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from .exchange import EXCHANGE_TYPES, Binding, Exchange, freeze_arguments
from .message import Message, QueueEntry
from .promise import ON_DISK, AllOf, Promise, StoreWrites, both
from .queue import Queue
from .queue_port import QueuePort
from .queue_args import QueueSettings, amqp_type_name
from .quorum import QuorumQueue
from .timers import Timers
from .definition_hook import DefinitionHook, binding_item, replicated_queue

if TYPE_CHECKING:
    from .paging import MemoryBudget
    from .quorum_replication import ReplicatorFactory
    from .store.base import Store

# Exchanges every virtual host has (AMQP 0-9-1 §3.1.3.1 and RabbitMQ's amq.rabbitmq.trace).
STANDARD_EXCHANGES = (
    ("", "direct"),
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
    ("amq.rabbitmq.trace", "topic"),  # internal: RabbitMQ's firehose tracer publishes there
)

# Queue arguments compared when a queue is declared again (RabbitMQ's equivalence check).
_EQUIVALENT_ARGS = (
    "x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-overflow",
    "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority",
    "x-queue-type", "x-single-active-consumer", "x-delivery-limit",
)


def _bool(v: bool) -> str:
    return "true" if v else "false"


class VirtualHost:
    def __init__(
        self,
        name: str,
        timers: Timers,
        clock: Callable[[], float],
        store: "Store | None" = None,
        profile: EngineProfile = RABBITMQ,
    ) -> None:
        self.name = name
        self.profile = profile
        # The settings of the ActiveMQ policies (scheduler, redelivery, ActiveMQ.DLQ) the
        # profile turns on; None on a RabbitMQ broker.
        self.activemq: activemq.ActiveMQSettings | None = profile.activemq_policies
        self._scheduled = profile.scheduled_delivery
        self.timers = timers
        self.clock = clock
        self.store = store
        # The node's memory budget (set by Broker); None: queues never page.
        self.budget: "MemoryBudget | None" = None
        # Makes the replicator of each new quorum queue (set by Broker from its node's
        # factory); None: quorum queues are classic Queues with quorum delivery counts.
        self.replicators: "ReplicatorFactory | None" = None
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.direct_reply: dict[str, Callable[[Message], bool]] = {}
        # Publishes the default exchange's fast path took (the management API's exchange
        # message_stats; RabbitMQ 3.10 counts them out too, a queue found or not).
        self.default_published = 0
        self._writes: StoreWrites | None = None  # the promise on the store's open batch (writes_safe)
        # Policies by name and the one applied to each queue (``policies``).
        self.policies: dict[str, Any] = {}
        self.queue_policies: dict[str, Any] = {}
        # A cluster member's hook for "a definition changed" (``definition_hook``): None on a
        # single node. Called before the change, only for definitions that change, never per message.
        self.definitions_hook: DefinitionHook | None = None
        # A cluster member's queues whose home node is down or unreachable: name -> that node
        # (set by the cluster, ``ha/clustering``); declaring or consuming one is NOT_FOUND.
        self.unavailable: dict[str, str] = {}
        for xname, xtype in STANDARD_EXCHANGES:
            self.exchanges[xname] = Exchange(xname, xtype, durable=True, internal=xname == "amq.rabbitmq.trace")

    # -- publishing ---------------------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, message: Message) -> tuple[int, bool]:
        """Route and enqueue message. Returns (queues reached, whether any queue refused it);
        ``publish_safe`` also says when the message is safe."""
        routed, refused, _ = self.publish_safe(exchange, routing_key, message)
        return routed, refused

    def publish_safe(self, exchange: str, routing_key: str, message: Message) -> tuple[int, bool, Promise | None]:
        """Route and enqueue message: the core entry the protocols call. Returns (queues
        reached, whether any queue refused it, when it is safe): None when it is safe at
        once, else a ``promise.Promise`` kept when every queue that took it has it safe (on
        disk for a durable classic queue). A confirm, receipt or PUBACK waits for it.

        Raises NotFound for an unknown exchange and AccessRefused for an internal one.
        ActiveMQ: a message asking for scheduled delivery is held (in memory, as ActiveMQ's
        scheduler store is not kept by mqemu) and counts as one queue reached
        (PreconditionFailed for a bad schedule value).
        """
        if self._scheduled and (
            exchange == "" or exchange in self.exchanges
        ) and activemq.maybe_schedule(self, exchange, routing_key, message):
            return 1, False, None
        if exchange == "":
            q = self.queues.get(routing_key)
            if q is None:
                self.default_published += 1
                reply = self.direct_reply.get(routing_key)
                if reply is not None:
                    return (1, False, None) if reply(message) else (0, False, None)
                return 0, False, None
            headers = message.properties.get("headers")
            # No sender-selected distribution (CC, BCC: ``_routing_keys``): the one queue named.
            if not headers or ("CC" not in headers and "BCC" not in headers):
                self.default_published += 1
                r = q.publish(message, self.clock())
                if r is True:
                    return 1, False, None
                if r is ON_DISK:  # writes_safe, inlined: the path of every durable publish
                    ticket = self.store.barrier()  # type: ignore[union-attr]
                    p = self._writes
                    if p is None or p.ticket != ticket:
                        p = self._writes = StoreWrites(self.store, ticket)  # type: ignore[arg-type]
                    return 1, False, p
                if r is False:
                    return 1, True, None
                return 1, False, self._promise(r)
        ex = self.exchanges.get(exchange)
        if ex is None:
            raise NotFound(f"no exchange '{exchange}' in vhost '{self.name}'")
        if ex.internal:
            raise AccessRefused(f"cannot publish to internal exchange '{exchange}' in vhost '{self.name}'")
        ex.published += 1
        keys = self._routing_keys(message, routing_key)
        queues = self._route(ex, message, keys)
        if not queues:
            return 0, False, None
        ex.routed += len(queues)
        now = self.clock()
        refused = False
        safe: Promise | None = None
        for q in queues:
            r = q.publish(message, now)
            if r is not True:
                if r is False:
                    refused = True
                else:
                    safe = both(safe, r)
        return len(queues), refused, None if safe is None else self._promise(safe)

    def _promise(self, p: Promise) -> Promise:
        """What a queue returned, with ``ON_DISK`` made a promise on the store's open batch."""
        if p is ON_DISK:
            p = self.writes_safe()
        elif type(p) is AllOf:
            p = AllOf([self.writes_safe() or q if q is ON_DISK else q for q in p.promises])
        assert p is not None  # a queue stores only with a store that keeps messages
        return p

    def writes_safe(self) -> Promise | None:
        """A promise kept once every store write made so far is on disk (a protocol's own
        records too: MQTT's retained messages); None when the store keeps nothing. One
        object per store batch."""
        store = self.store
        if store is None or not store.keeps_messages:
            return None
        ticket = store.barrier()
        p = self._writes
        if p is None or p.ticket != ticket:
            p = self._writes = StoreWrites(store, ticket)
        return p

    def _routing_keys(self, message: Message, routing_key: str) -> list[str]:
        """RabbitMQ's sender-selected distribution: CC and BCC headers add routing keys."""
        headers = message.properties.get("headers")
        if not headers or ("CC" not in headers and "BCC" not in headers):
            return [routing_key]
        keys = [routing_key]
        for name in ("CC", "BCC"):
            extra = headers.get(name)
            if isinstance(extra, list):
                keys.extend(k if isinstance(k, str) else k.decode() for k in extra if isinstance(k, (str, bytes)))
        if "BCC" in headers:
            headers = dict(headers)
            del headers["BCC"]
            message.properties = dict(message.properties, headers=headers)
            message.encoded_properties = None
        message.routing_keys = keys
        return keys

    def _route(self, ex: Exchange, message: Message, keys: list[str]) -> list[Queue]:
        if ex.name == "":
            q = self.queues.get(keys[0]) if len(keys) == 1 else None
            if len(keys) == 1:
                return [q] if q is not None else []
            return [q for q in dict.fromkeys(self.queues.get(k) for k in keys) if q is not None]
        first: set[Binding] | frozenset[Binding] | None = None  # a lone key's bindings on ``ex``, matched once
        if len(keys) == 1:
            # The common case first: one key, one binding, to a queue (an MQTT or STOMP topic
            # with one subscriber), without the walk's bookkeeping. Anything else walks.
            first = ex.route(message, keys[0])
            if len(first) == 1:
                for b in first:
                    if b.destination_kind == "queue":
                        q = self.queues.get(b.destination)
                        if q is not None:
                            return [q]
        found: dict[str, Queue] = {}
        seen = {ex.name}
        pending = [ex]
        while pending:
            current = pending.pop()
            reached = False
            for key in keys:
                if current.name == "":
                    q = self.queues.get(key)
                    if q is not None:
                        found[q.name] = q
                        reached = True
                    continue
                for b in first if first is not None and current is ex else current.route(message, key):
                    if b.destination_kind == "queue":
                        q = self.queues.get(b.destination)
                        if q is not None:
                            found[q.name] = q
                            reached = True
                    else:
                        nxt = self.exchanges.get(b.destination)
                        if nxt is not None and nxt.name not in seen:
                            seen.add(nxt.name)
                            pending.append(nxt)
                            reached = True
            if not reached:
                ae = current.alternate_exchange
                if ae is not None and ae not in seen and ae in self.exchanges:
                    seen.add(ae)
                    pending.append(self.exchanges[ae])
        return list(found.values())

    # -- dead-lettering -----------------------------------------------------------------
    def dead_letter(self, queue: Queue, entries: list[QueueEntry], reason: str) -> None:
        """Republish entries to the queue's dead-letter exchange with an ``x-death`` record.

        Without a dead-letter exchange (or if it does not exist) the entries are dropped,
        as on RabbitMQ. On an ActiveMQ broker they go to ``ActiveMQ.DLQ`` instead.
        """
        if self.profile.shared_dead_letter_queue:
            activemq.dead_letter(self, queue, entries, reason)
            return
        s = queue.settings
        dlx_name = s.dead_letter_exchange
        if dlx_name is None:
            return
        dlx = self.exchanges.get(dlx_name)
        if dlx is None:
            return
        now = self.clock()
        for entry in entries:
            old = entry.message
            msg = _dead_lettered(old, queue.name, reason)
            keys = [s.dead_letter_routing_key] if s.dead_letter_routing_key else (old.routing_keys or [old.routing_key])
            msg.exchange, msg.routing_key = dlx_name, keys[0]
            for target in self._route(dlx, msg, keys):
                if _cycles(msg, target.name, reason):
                    continue
                target.publish(msg, now)

    # -- exchanges ----------------------------------------------------------------------
    def declare_exchange(
        self,
        name: str,
        type: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
    ) -> Exchange:
        """Raises NotFound (passive, absent), AccessRefused (reserved name),
        PreconditionFailed (unknown type, or inequivalent to the existing exchange)."""
        ex = self.exchanges.get(name)
        if passive:
            if name == "":
                raise AccessRefused("operation not permitted on the default exchange")
            if ex is None:
                raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
            return ex
        if type not in EXCHANGE_TYPES:
            raise self.profile.unknown_exchange_type(type)  # RabbitMQ 3.x: 503, 4.x: 406
        if name == "":
            raise AccessRefused("operation not permitted on the default exchange")
        if ex is None and name.startswith("amq."):
            # RabbitMQ checks the prefix only for a new exchange: redeclaring amq.direct as it
            # is succeeds, with other properties it fails the equivalence check below
            raise AccessRefused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        if ex is not None:
            for field, new, cur in (
                ("type", type, ex.type),
                ("durable", durable, ex.durable),
                ("auto_delete", auto_delete, ex.auto_delete),
                ("internal", internal, ex.internal),
            ):
                if new != cur:
                    shown = (lambda v: v) if field == "type" else _bool
                    raise PreconditionFailed(
                        f"inequivalent arg '{field}' for exchange '{name}' in vhost '{self.name}': "
                        f"received '{shown(new)}' but current is '{shown(cur)}'"
                    )
            return ex
        hook = self.definitions_hook
        if hook is not None:
            hook.changing(self.name, "exchange.declare", {
                "name": name, "type": type, "durable": durable, "auto_delete": auto_delete, "internal": internal,
                "arguments": dict(arguments or {})})
        ex = Exchange(name, type, durable, auto_delete, internal, dict(arguments or {}))
        self.exchanges[name] = ex
        if self.policies:
            policies.apply_to_exchange(self, ex)
        if durable and self.store is not None:
            self.store.save_exchange(self.name, ex)
        return ex

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        """Deleting an absent exchange succeeds (RabbitMQ 3.x). Raises AccessRefused for the
        default and ``amq.*`` exchanges, PreconditionFailed when if_unused and bound."""
        if name == "" or name.startswith("amq."):
            raise AccessRefused("operation not permitted on the default exchange" if name == ""
                                else f"deletion of system exchange '{name}' in vhost '{self.name}' not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            return
        if if_unused and ex.bindings:
            raise PreconditionFailed(f"exchange '{name}' in vhost '{self.name}' in use")
        if self.definitions_hook is not None:
            self.definitions_hook.changing(self.name, "exchange.delete", {"name": name})
        for b in list(ex.bindings):
            self._remove_binding(b)
        for other in list(self.exchanges.values()):
            for b in [b for b in other.bindings if b.destination_kind == "exchange" and b.destination == name]:
                self._remove_binding(b)
        self.exchanges.pop(name, None)
        if ex.durable and self.store is not None:
            self.store.delete_exchange(self.name, name)

    def get_exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise NotFound(f"no exchange '{name}' in vhost '{self.name}'")
        return ex

    # -- queues -------------------------------------------------------------------------
    def declare_queue(
        self,
        name: str,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
        owner: object | None = None,
    ) -> Queue:
        """Declare (or with passive, look up) a queue. ``exclusive_owner`` is the connection
        that owns an exclusive queue; ``owner`` the connection asking.

        Raises NotFound, AccessRefused (``amq.`` names), ResourceLocked (another connection's
        exclusive queue), PreconditionFailed (bad or inequivalent arguments).
        """
        q = self.queues.get(name)
        if self.unavailable and q is not None and name in self.unavailable:
            raise self.home_down(name)
        if passive:
            if q is None:
                raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
            self.check_exclusive(q, owner)
            return q
        if not name:
            name = self.server_named()
        elif name.startswith("amq."):
            raise AccessRefused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        arguments = dict(arguments or {})
        asked_type = "x-queue-type" in arguments
        if q is not None:
            self.check_exclusive(q, owner, redeclare_exclusive=exclusive_owner is not None)
            self._check_equivalent(q, durable, exclusive_owner is not None, auto_delete, arguments)
            q.touch(self.clock())  # a command (classic, quorum and a cluster's stand-in alike)
            return q
        if (durable and exclusive_owner is None and not auto_delete and "x-queue-type" not in arguments
                and self.profile.default_queue_type != "classic"):
            # RabbitMQ's default_queue_type applies to a new queue that can be of that type
            # (Amazon MQ 4.2: quorum); a redeclare without a type matches any type.
            arguments["x-queue-type"] = self.profile.default_queue_type
        settings = QueueSettings.parse(name, self.name, arguments)
        if settings.queue_type != "classic":
            # RabbitMQ 3.10's order (an AMQP exclusive queue arrives non-durable)
            for prop, bad in (("auto-delete", auto_delete), ("exclusive-owner", exclusive_owner is not None),
                              ("non-durable", not durable)):
                if bad:
                    raise PreconditionFailed(
                        f"invalid property '{prop}' for queue '{name}' in vhost '{self.name}'"
                    )
            for key in ("x-max-priority", "x-queue-mode"):
                if key in arguments and settings.quorum and asked_type:  # not when the default type made it quorum
                    raise PreconditionFailed(f"invalid arg '{key}' for queue '{name}' in vhost '{self.name}' "
                                             "of queue type rabbit_quorum_queue")
        hook = self.definitions_hook
        if hook is not None and replicated_queue(name, exclusive_owner, auto_delete):
            hook.changing(self.name, "queue.declare", {"name": name, "durable": durable, "auto_delete": auto_delete,
                                                       "arguments": arguments, "type": settings.queue_type})
        if settings.quorum and self.replicators is not None:
            # The log keeps its messages: a port without the store's message calls.
            # It answers what the protocols ask of a Queue.
            q = cast(Queue, QuorumQueue(self.queue_port(name, False), name, self.replicators(self.name, name),
                                        arguments, settings))
        else:
            q = Queue(self.queue_port(name, durable), name, durable, exclusive_owner, auto_delete, arguments, settings)
        self.queues[name] = q
        if self.policies:
            policies.apply_to_queue(self, q)
        if durable and self.store is not None:
            self.store.save_queue(self.name, q)
        self.schedule_queue_expiry(q)
        return q

    def add_stand_in(self, q: Any) -> None:
        """Hold ``q``, a queue object made outside the core, under its name: a cluster's
        stand-in for a classic queue that lives on another node (``ha/clustering/remote.py``).
        It answers the calls protocols make on a queue; routing, bindings and lookups find it
        as any queue. Nothing is stored here (the queue's own node keeps it), and no hook is
        called (the cluster made it). A queue already held under that name is deleted first."""
        if q.name in self.queues:
            self.delete_queue(q.name, internal=True)
        self.queues[q.name] = q
        if self.policies:
            policies.apply_to_queue(self, q)

    def home_down(self, name: str) -> NotFound:
        """RabbitMQ's answer for a durable queue whose node is down (``unavailable``)."""
        return NotFound(f"home node '{self.unavailable[name]}' of durable queue '{name}' in vhost '{self.name}' "
                        "is down or inaccessible")

    def server_named(self) -> str:
        while True:
            name = "amq.gen-" + base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
            if name not in self.queues:
                return name

    def _check_equivalent(self, q: Queue, durable: bool, exclusive: bool, auto_delete: bool,
                          arguments: dict[str, Any]) -> None:
        for field, new, cur in (
            ("durable", durable, q.durable),
            ("exclusive", exclusive, q.exclusive_owner is not None),
            ("auto_delete", auto_delete, q.auto_delete),
        ):
            if new != cur:
                raise PreconditionFailed(
                    f"inequivalent arg '{field}' for queue '{q.name}' in vhost '{self.name}': "
                    f"received '{_bool(new)}' but current is '{_bool(cur)}'"
                )
        for key in _EQUIVALENT_ARGS:
            new, cur = arguments.get(key), q.arguments.get(key)
            if key == "x-queue-type" and (new is None or cur is None):
                continue  # a declare without a type matches any type
            if new != cur:
                show = _show if new is not None and cur is not None else _show_typed
                raise PreconditionFailed(
                    f"inequivalent arg '{key}' for queue '{q.name}' in vhost '{self.name}': "
                    f"received {show(new)} but current is {show(cur)}"
                )

    def check_exclusive(self, q: Queue, owner: object | None, redeclare_exclusive: bool | None = None) -> None:
        """ResourceLocked unless ``owner`` may use q. A redeclare passes whether it asks for an
        exclusive queue: that must match the queue too, checked (as on RabbitMQ) before the
        other properties."""
        locked = q.exclusive_owner is not None and q.exclusive_owner is not owner
        if redeclare_exclusive is not None and redeclare_exclusive != (q.exclusive_owner is not None):
            locked = True
        if locked:
            raise ResourceLocked(
                f"cannot obtain exclusive access to locked queue '{q.name}' in vhost '{self.name}'. "
                "It could be originally declared on another connection or the exclusive property "
                "value does not match that of the original declaration."
            )

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise NotFound(f"no queue '{name}' in vhost '{self.name}'")
        if self.unavailable and name in self.unavailable:
            raise self.home_down(name)
        self.check_exclusive(q, owner)
        return q

    def delete_queue(self, name: str, if_unused: bool = False, if_empty: bool = False,
                     owner: object | None = None, internal: bool = False) -> int:
        """Delete; returns the ready messages it held. Deleting an absent queue returns 0."""
        q = self.queues.get(name)
        if q is None:
            return 0
        if not internal:
            self.check_exclusive(q, owner)
            if if_unused and q.consumers:
                raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' in use")
            if if_empty and len(q.ready):  # len counts paged messages too
                raise PreconditionFailed(f"queue '{name}' in vhost '{self.name}' not empty")
        hook = self.definitions_hook
        if hook is not None and replicated_queue(name, q.exclusive_owner, q.auto_delete):
            hook.changing(self.name, "queue.delete", {"name": name, "internal": internal})
        n = len(q.ready)
        cancelled = q.delete()  # a command: purged, marked, its consumers dropped and returned
        del self.queues[name]
        self.queue_policies.pop(name, None)
        for c in cancelled:
            c.owner.consumer_cancelled(c)
        for ex in list(self.exchanges.values()):
            for b in [b for b in ex.bindings if b.destination_kind == "queue" and b.destination == name]:
                self._remove_binding(b)
        if q.durable and self.store is not None:
            self.store.delete_queue(self.name, name)
        return n

    def queue_port(self, name: str, durable: bool) -> QueuePort:
        """The port a new queue of this vhost talks to the node through (``queue_port``)."""
        return QueuePort(self, name, durable)

    def schedule_queue_expiry(self, q: Queue) -> None:
        """``x-expires``: delete the queue once unused (no consumers, no get, no redeclare)."""
        expires = q.settings.expires
        if expires is None or q.consumers:
            return
        def due(now: float) -> None:
            if q.deleted or q.consumers:
                return
            deadline = q.last_used + expires / 1000.0
            if deadline <= now + 1e-6:
                self.delete_queue(q.name, internal=True)
            else:
                self.timers.call_at(deadline, due)
        self.timers.call_at(q.last_used + expires / 1000.0, due)

    def connection_closed(self, owner: object) -> None:
        """Delete the exclusive queues of a connection that went away."""
        for q in [q for q in self.queues.values() if q.exclusive_owner is owner]:
            self.delete_queue(q.name, internal=True)

    # -- bindings -----------------------------------------------------------------------
    def bind(self, source: str, destination: str, routing_key: str, arguments: dict[str, Any] | None = None,
             destination_kind: str = "queue", owner: object | None = None) -> None:
        ex, dest = self._binding_ends(source, destination, destination_kind, owner)
        b = Binding(source, destination, destination_kind, routing_key, freeze_arguments(arguments))
        hook = self.definitions_hook
        if hook is not None and b not in ex.bindings and self._binding_replicated(b, dest):
            hook.changing(self.name, "bind", binding_item(b))
        if ex.add_binding(b) and self.store is not None and self._binding_durable(ex, b):
            self.store.save_binding(self.name, b)

    def unbind(self, source: str, destination: str, routing_key: str, arguments: dict[str, Any] | None = None,
               destination_kind: str = "queue", owner: object | None = None) -> None:
        """Removing a binding that does not exist succeeds, as on RabbitMQ, even when its
        source or destination does not exist either."""
        try:
            ex, dest = self._binding_ends(source, destination, destination_kind, owner)
        except NotFound:
            return
        b = Binding(source, destination, destination_kind, routing_key, freeze_arguments(arguments))
        hook = self.definitions_hook
        if hook is not None and b in ex.bindings and self._binding_replicated(b, dest):
            hook.changing(self.name, "unbind", binding_item(b))
        self._remove_binding(b)

    @staticmethod
    def _binding_replicated(b: Binding, dest: Any) -> bool:
        """A binding a cluster replicates: to an exchange, or to a queue it replicates."""
        return b.destination_kind == "exchange" or replicated_queue(dest.name, dest.exclusive_owner, dest.auto_delete)

    def _binding_ends(self, source: str, destination: str, kind: str, owner: object | None) -> tuple[Exchange, Any]:
        if source == "" or (kind == "exchange" and destination == ""):
            raise AccessRefused("operation not permitted on the default exchange")
        if kind == "queue":
            dest = self.queues.get(destination)
            if dest is None:
                raise NotFound(f"no queue '{destination}' in vhost '{self.name}'")
            self.check_exclusive(dest, owner)
        else:
            dest = self.exchanges.get(destination)
            if dest is None:
                raise NotFound(f"no exchange '{destination}' in vhost '{self.name}'")
        ex = self.exchanges.get(source)
        if ex is None:
            raise NotFound(f"no exchange '{source}' in vhost '{self.name}'")
        return ex, dest

    def _binding_durable(self, ex: Exchange, b: Binding) -> bool:
        if not ex.durable:
            return False
        if b.destination_kind == "queue":
            q = self.queues.get(b.destination)
            return q is not None and q.durable
        dest = self.exchanges.get(b.destination)
        return dest is not None and dest.durable

    def _remove_binding(self, b: Binding) -> None:
        ex = self.exchanges.get(b.source)
        if ex is None or not ex.remove_binding(b):
            return
        if self.store is not None and self._binding_durable(ex, b):
            self.store.delete_binding(self.name, b)
        if ex.auto_delete and not ex.bindings:
            self.delete_exchange(ex.name)

    def bindings(self) -> Iterable[Binding]:
        for ex in self.exchanges.values():
            yield from ex.bindings


def _show(v: Any) -> str:
    if v is None:
        return "none"
    return f"'{v}'"


def _show_typed(v: Any) -> str:
    """RabbitMQ's form when only one side has the argument: the value 'X' of type 'T'."""
    if v is None:
        return "none"
    return f"the value '{v}' of type '{amqp_type_name(v)}'"


def _cycles(msg: Message, target: str, reason: str) -> bool:
    """True when dead-lettering to target would loop with no rejection (RabbitMQ drops it)."""
    deaths = msg.headers.get("x-death") or []
    if not any(isinstance(d, dict) and d.get("queue") == target for d in deaths):
        return False
    return not any(isinstance(d, dict) and d.get("reason") == "rejected" for d in deaths)


def _dead_lettered(old: Message, queue: str, reason: str) -> Message:
    """A copy of old carrying an ``x-death`` record as RabbitMQ 3.10 writes it."""
    props = dict(old.properties)
    headers = dict(props.get("headers") or {})
    expiration = props.pop("expiration", None)
    deaths = [d for d in (headers.get("x-death") or []) if isinstance(d, dict)]
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    for i, d in enumerate(deaths):
        if d.get("queue") == queue and d.get("reason") == reason:
            d = dict(d, count=d.get("count", 0) + 1, time=now)
            del deaths[i]
            deaths.insert(0, d)
            break
    else:
        record: dict[str, Any] = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": now,
            "exchange": old.exchange,
            "routing-keys": list(old.routing_keys or [old.routing_key]),
        }
        if expiration is not None:
            record["original-expiration"] = expiration
        deaths.insert(0, record)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", old.exchange)
    props["headers"] = headers
    return Message(old.exchange, old.routing_key, old.body, props, fields=old.fields)
