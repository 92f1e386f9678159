"""Queues and their consumers.

A queue holds ready entries in order (one deque per priority level when ``x-max-priority``
is set) and hands them to consumers that have credit. Dispatch is a plain call made after
every change that can let a message move (publish, ack, a new consumer, a consumer's
connection draining its outbound buffer); it never awaits.

Consumers belong to an owner (an AMQP channel, a STOMP subscription's connection, an MQTT
session). The owner encodes deliveries into its connection's outbound buffer and sets its
``blocked`` flag while it can take no more (outbound budget full, channel-wide prefetch used
up); it calls ``Queue.dispatch`` again once it can.

``Consumer`` and ``PriorityReady`` live in ``consumer``; the ActiveMQ engine's dispatch with
selectors and message groups in ``selective``; the paged tail of a queue past its memory
budget in ``paging``. ``Queue`` mixes the last two in.

The queue's state (ready entries, the paged index, consumers and their credit, counters,
byte totals, groups, the paging ceiling) changes only inside its commands (``Queue.COMMANDS``,
the names of ``queue_machine``'s where there is one), applied in place: whoever else changes
a queue (protocols, the vhost, timers, the store's page reads, the memory budget, recovery)
calls one. A command may call others (a publish dispatches). The protocols' older names are
the same functions (``Queue.ALIASES``: ``publish`` is ``enqueue``), so no call is added on a
path. ``tests/unit/core/test_queue_seam.py`` records the top-level commands of a random run
and replays them on a fresh queue, and checks that no other module assigns queue state.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Iterable

from . import activemq
from .consumer import Consumer, ConsumerOwner, PriorityReady, by_arrival, put_back  # noqa: F401 (sessions import them from here)
from .message import NEVER_MS, Message, QueueEntry
from .paging import PagedIndex, PagingQueue, paging_mode
from .promise import ON_DISK, Promise
from .queue_args import QueueSettings
from .queue_stats import QueueCounts, QueueStatistics, snapshot
from .selective import SelectiveDispatch

if TYPE_CHECKING:
    from .queue_port import QueuePort


class Queue(SelectiveDispatch, PagingQueue):
    """A queue in one virtual host. Raises nothing on the delivery path."""

    # Every change of a queue's state is one of these (see the module docstring).
    COMMANDS = ("enqueue", "take", "settle", "reject", "requeue", "consumer_added", "consumer_removed",
                "dispatch", "expire", "expiry_due", "purge", "apply_settings", "touch", "delete",
                "paged_in", "lower_ceiling", "recovered", "recovered_paged")
    # The names the protocols call: the same functions as these commands.
    ALIASES = {"publish": "enqueue", "get": "take", "ack": "settle", "add_consumer": "consumer_added",
               "remove_consumer": "consumer_removed", "release_consumer_entries": "requeue"}

    def __init__(
        self,
        port: "QueuePort",
        name: str,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        settings: QueueSettings | None = None,
    ) -> None:
        # Everything the queue asks of its vhost, timers, budget and store (``queue_port``).
        self.port = port
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.settings = settings or QueueSettings.parse(name, port.vhost_name, self.arguments)
        s = self.settings
        self.ready: deque[QueueEntry] | PriorityReady = (
            PriorityReady(s.max_priority) if s.max_priority else deque()
        )
        self.consumers: list[Consumer] = []
        self.bytes_ready = 0
        self.unacked = 0
        # Counters for rates (the web page's publish/deliver per second): messages the queue
        # took, and deliveries it made (to consumers and basic.get, redeliveries too). They
        # live on a small slotted object: an attribute write on the queue itself (too many
        # attributes for a shared-key dict) costs several times more, once per message.
        self.counts = QueueCounts()
        self.had_consumer = False
        self.deleted = False
        self._clock = port.clock
        self._dead_letter = port.dead_letter
        self.last_used = port.clock()
        self._rr = 0
        self._dispatching = False
        self._expiry_at: float | None = None
        self._persist = port.persists
        self._store_add = port.store_add  # -> the store's handle, kept on the entry
        self._store_remove = port.store_remove
        # The engine profile's policies: ActiveMQ's message groups and redelivery policy
        # (settings in port.activemq); selectors on any engine.
        profile = port.profile
        self._redelivery: activemq.ActiveMQSettings | None = (
            port.activemq.for_queue(name) if profile.redelivery_policy and port.activemq is not None else None)
        self._grouping = profile.message_groups  # assign JMSXGroupID groups (``selective``)
        # RabbitMQ 4.x: a quorum queue without x-delivery-limit stops at 20 deliveries.
        self._default_delivery_limit = profile.quorum_delivery_limit
        self._groups: dict[str, Consumer] = {}  # JMSXGroupID -> owning consumer
        self._selectors = 0  # consumers with a selector
        self._selective = self._grouping  # dispatch through _dispatch_selective
        self._version = 0  # bumped when an entry left in the queue may become deliverable
        self._stuck = 0  # head entries the last selective scan found no consumer for
        self._stuck_version = -1
        # Paging (see ``paging``): past _page_at bytes in memory publish takes the slow path,
        # which asks the node's budget for more or pages the message out to the store.
        self._paged: PagedIndex | None = None
        self._paging = paging_mode(s) if port.budget is not None else "never"
        self._page_at = self._open_gate()

    # -- publishing ---------------------------------------------------------------------
    def enqueue(self, message: Message, now: float) -> "bool | Promise":
        """The enqueue command (``publish``). False when the queue refused the message (overflow reject-publish); True
        when it is safe at once; ``promise.ON_DISK`` when it is safe once the store's writes
        so far are on disk (see ``promise``)."""
        s = self.settings
        ttl = s.message_ttl
        exp = message.properties.get("expiration")
        if exp is not None:
            try:
                per_msg = int(exp)
            except (TypeError, ValueError):
                per_msg = None
            if per_msg is not None and (ttl is None or per_msg < ttl) and per_msg < NEVER_MS:
                ttl = per_msg
        entry = QueueEntry(message, None if ttl is None else now + ttl / 1000.0)
        safe: bool | Promise = True
        self.counts.enqueued += 1
        if self.bytes_ready >= self._page_at:  # a length limit, or past the memory ceiling
            if s.max_length is not None or s.max_length_bytes is not None:
                if not self._make_room(entry):
                    self.counts.enqueued -= 1
                    return False
            if self._persist and message.persistent:
                entry.store_id = self._store_add(message)
                safe = ON_DISK
            if self._page_out(entry):
                return safe
        elif self._persist and message.persistent:
            entry.store_id = self._store_add(message)
            safe = ON_DISK
        ready = self.ready
        if not ready and self.consumers and not (self._selective or self._dispatching or self.deleted) \
                and entry.expires_at is None and self._paged is None:
            # Nothing waits before it: the one delivery ``dispatch`` would make, without the
            # trip through the ready deque (a consumer with credit takes it at once).
            consumer = self._next_consumer()
            if consumer is not None:
                self._dispatching = True
                try:
                    self._hand_over(consumer, entry)
                finally:
                    self._dispatching = False
                if ready or self._paged is not None:  # published or paged while it was delivered
                    self.dispatch()
                return safe
        ready.append(entry)
        self.bytes_ready += entry.size
        if self.consumers:
            if self._selective:
                self._dispatch_selective(new_entry=True)
            else:
                self.dispatch()
        if entry.expires_at is not None:
            self.expire(now)
        return safe

    publish = enqueue

    def _make_room(self, entry: QueueEntry) -> bool:
        s = self.settings
        max_len, max_bytes = s.max_length, s.max_length_bytes
        def over(extra_len: int, extra_bytes: int) -> bool:
            return (max_len is not None and len(self.ready) + extra_len > max_len) or (
                max_bytes is not None and self.bytes_ready + extra_bytes > max_bytes
            )
        if not over(1, entry.size):
            return True
        if s.overflow in ("reject-publish", "reject-publish-dlx"):
            if s.overflow == "reject-publish-dlx":
                self._dead_letter(self, [entry], "maxlen")
            return False
        dropped = []
        while self.ready and over(1, entry.size):
            dropped.append(self._pop_ready())
        if dropped:
            self._settle_dropped(dropped)
            self._dead_letter(self, dropped, "maxlen")
        if max_len == 0:  # drop-head with no room at all: the new message itself is dropped
            self._dead_letter(self, [entry], "maxlen")
            return True
        return True

    def _pop_ready(self) -> QueueEntry:
        entry = self.ready.popleft()
        self.bytes_ready -= entry.size
        return entry

    # -- delivering ---------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand ready entries to consumers with credit, round-robin by priority."""
        if self._dispatching or self.deleted:
            return
        if self._selective:
            self._dispatch_selective(new_entry=False)
            return
        self._dispatching = True
        delivered = 0  # added to the counter once per pass, not once per delivery
        try:
            ready = self.ready
            while ready:
                consumer = self._next_consumer()
                if consumer is None:
                    break
                entry = ready.popleft()
                self.bytes_ready -= entry.size
                if entry.expires_at is not None and entry.expires_at < self._clock():
                    self.counts.expired += 1
                    self._settle_dropped([entry])
                    self._dead_letter(self, [entry], "expired")
                    continue
                if consumer.no_ack:
                    self._settle(entry)
                else:
                    consumer.unacked += 1
                    self.unacked += 1
                delivered += 1
                consumer.owner.deliver(consumer, entry)
        finally:
            self.counts.delivered += delivered
            self._dispatching = False
        if self._paged is not None:
            self._page_in()

    def _next_consumer(self) -> Consumer | None:
        consumers = self.consumers
        n = len(consumers)
        if n == 1 or (n and self.settings.single_active_consumer):
            c = consumers[0]
            if not c.owner.blocked and (c.prefetch == 0 or c.unacked < c.prefetch):
                return c
            return None
        best = None
        start = self._rr
        for i in range(n):
            c = consumers[(start + i) % n]
            if c.owner.blocked or (c.prefetch and c.unacked >= c.prefetch):
                continue
            if best is None or c.priority > best.priority:
                best = c
                best_i = (start + i) % n
        if best is not None:
            self._rr = best_i + 1
        return best

    def take(self, no_ack: bool) -> QueueEntry | None:
        """The take command (basic.get, ``get``): the head entry, or None when the queue has
        none ready."""
        self.last_used = self._clock()
        now = self.last_used
        while self.ready:
            entry = self._pop_ready()
            if entry.expires_at is not None and entry.expires_at <= now:
                self.counts.expired += 1
                self._settle_dropped([entry])
                self._dead_letter(self, [entry], "expired")
                continue
            counts = self.counts
            if no_ack:
                self._settle(entry)
                counts.got_no_ack += 1
            else:
                self.unacked += 1
                counts.got += 1
            counts.delivered += 1
            if self._paged is not None:
                self._page_in()
            return entry
        if self._paged is not None:
            self._page_in()  # the head is being read: a get right after it finds it
        self.counts.get_empty += 1
        return None

    get = take

    # -- settling -----------------------------------------------------------------------
    def settle(self, entry: QueueEntry, consumer: Consumer | None) -> None:
        """The settle command (``ack``): the client acknowledged entry (consumer None for
        basic.get deliveries)."""
        self._release(consumer)
        self._settle(entry)
        self.counts.acked += 1

    ack = settle

    def reject(self, entries: list[QueueEntry], consumer: Consumer | None, requeue: bool) -> None:
        """Nack/reject without requeue dead-letters ('rejected'); with it, puts entries back."""
        for _ in entries:
            self._release(consumer)
        if self.deleted:
            return
        if requeue:
            self._return(entries)
        else:
            self.counts.dropped += len(entries)
            for e in entries:
                self._settle(e)
            self._dead_letter(self, entries, "rejected")
        self.dispatch()

    def _return(self, entries: Iterable[QueueEntry]) -> None:
        """Put delivered entries back, redelivered, each at its place in the order of arrival
        (RabbitMQ: a requeued message goes back to its original position)."""
        limit = self.settings.delivery_limit
        quorum = self.settings.quorum
        if limit is None:
            limit = self._default_delivery_limit
        redelivery = self._redelivery
        over = []
        back = []
        for entry in entries:
            entry.redelivered = True
            if redelivery is not None:
                # ActiveMQ: past maximumRedeliveries the message goes to ActiveMQ.DLQ.
                entry.delivery_count += 1
                if activemq.over_redelivery_limit(redelivery, entry.delivery_count):
                    over.append(entry)
                    continue
            elif quorum:
                entry.delivery_count += 1
                if limit is not None and entry.delivery_count > limit:
                    over.append(entry)
                    continue
                headers = dict(entry.message.headers)
                headers["x-delivery-count"] = entry.delivery_count
                old = entry.message
                entry.message = old.copy_with(headers=headers)  # the store handle stays on the entry
            back.append(entry)
            self.bytes_ready += entry.size
        if back:
            self.counts.requeued += len(back)
            back.sort(key=by_arrival)
            ready = self.ready
            if isinstance(ready, PriorityReady):
                ready.put_back(back)
            else:
                put_back(ready, back)
        if over:
            self.counts.dropped += len(over)
            for e in over:
                self._settle(e)
            self._dead_letter(self, over, "delivery_limit")

    def requeue(self, consumer: Consumer | None, entries: list[QueueEntry]) -> None:
        """The requeue command (``release_consumer_entries``): a channel closed with entries
        unacked, or a consumer gave them back: requeue them (AMQP 0-9-1 §1.8.3.6)."""
        for _ in entries:
            self._release(consumer)
        if not self.deleted:
            self._return(entries)
            self.dispatch()

    release_consumer_entries = requeue

    def _release(self, consumer: Consumer | None) -> None:
        self._version += 1
        self.unacked -= 1
        if consumer is not None and consumer.unacked:
            consumer.unacked -= 1

    def _settle(self, entry: QueueEntry) -> None:
        handle = entry.store_id
        if handle is not None:
            entry.store_id = None
            self._store_remove(handle)

    def _settle_dropped(self, entries: list[QueueEntry]) -> None:
        for e in entries:
            self._settle(e)

    # -- consumers ----------------------------------------------------------------------
    def consumer_added(self, consumer: Consumer) -> None:
        """The consumer_added command (``add_consumer``)."""
        if consumer.selector is not None:
            self._selectors += 1
            self._selective = True
        self._version += 1
        self.consumers.append(consumer)
        if consumer.priority:
            self.consumers.sort(key=lambda c: -c.priority)
        self.had_consumer = True
        self.dispatch()

    add_consumer = consumer_added

    def consumer_removed(self, consumer: Consumer) -> None:
        """The consumer_removed command (``remove_consumer``); a consumer it does not have is
        nothing."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = self._clock()
        self._version += 1
        if consumer.selector is not None:
            self._selectors -= 1
            self._selective = self._selectors > 0 or self._grouping
        if self._groups:  # ActiveMQ: its groups go to whichever consumer gets their next message
            for group in [g for g, c in self._groups.items() if c is consumer]:
                del self._groups[group]
        if not self.consumers:
            if self.auto_delete and self.had_consumer:
                self.port.delete_queue(self.name)
                return
            self.port.schedule_expiry(self)
        elif self.settings.single_active_consumer or self._selective:
            self.dispatch()  # the next consumer in line becomes active, or takes its groups

    remove_consumer = consumer_removed

    # -- expiry and housekeeping --------------------------------------------------------
    def expire(self, now: float) -> None:
        """Drop expired entries at the head (RabbitMQ expires only at the head)."""
        if self.deleted:
            return
        dropped = []
        ready = self.ready
        while ready:
            head = ready[0]
            if head.expires_at is None or head.expires_at > now:
                break
            dropped.append(self._pop_ready())
        if dropped:
            self.counts.expired += len(dropped)
            self._settle_dropped(dropped)
            self._dead_letter(self, dropped, "expired")
        if ready:
            head = ready[0]
            if head.expires_at is not None and (self._expiry_at is None or head.expires_at < self._expiry_at):
                self._expiry_at = head.expires_at
                self.port.call_at(head.expires_at, self.expiry_due)
        elif self._paged is not None:
            self._page_in()  # the paged head expires once it is read (RabbitMQ: at the head)

    def expiry_due(self, now: float) -> None:
        """The timer armed for the head's deadline fired."""
        self._expiry_at = None
        self.expire(now)

    def apply_settings(self, settings: QueueSettings) -> None:
        """Run with new settings from now on (a policy was set or cleared): limits and TTL
        apply at once to what the queue holds, as RabbitMQ applies a changed policy."""
        self.settings = settings
        if self._paged is None and self.port.budget is not None:
            self._paging = paging_mode(settings)
        self._page_at = self._open_gate()
        max_len, max_bytes = settings.max_length, settings.max_length_bytes
        dropped = []
        while self.ready and ((max_len is not None and len(self.ready) > max_len)
                              or (max_bytes is not None and self.bytes_ready > max_bytes)):
            dropped.append(self._pop_ready())
        if dropped:
            self._settle_dropped(dropped)
            self._dead_letter(self, dropped, "maxlen")
        self.expire(self._clock())

    def purge(self) -> int:
        n = len(self.ready)
        for entry in self.ready:
            self._settle(entry)
        self.ready.clear()
        self.bytes_ready = 0
        pg = self._paged
        if pg is not None:
            # The chunk being read is settled when it arrives (_paged_in sees it cancelled).
            self.port.page_discard(pg.keys())
            self._leave_paging()
        return n

    def touch(self, now: float) -> None:
        """Used now (a redeclare): ``x-expires`` counts from here."""
        self.last_used = now

    def delete(self) -> list[Consumer]:
        """The queue is deleted: purged, marked, its consumers dropped; returns them (the
        vhost tells their owners)."""
        self.purge()
        self.deleted = True
        consumers = self.consumers
        self.consumers = []
        return consumers

    def snapshot(self) -> dict[str, Any]:
        """The observable state as plain values (``queue_stats.snapshot``)."""
        return snapshot(self)

    def statistics(self) -> QueueStatistics:
        paged = self._paged.nbytes if self._paged is not None else 0
        return QueueStatistics(self.name, len(self.ready), self.unacked, self.bytes_ready + paged,
                               len(self.consumers))

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, ready={len(self.ready)}, consumers={len(self.consumers)})"
