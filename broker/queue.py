"""Queues and their consumers.

A queue holds ready entries in order (one deque per priority level when ``x-max-priority``
is set) and hands them to consumers that have credit. Dispatch is a plain call made after
every change that can let a message move (publish, ack, a new consumer, a consumer's
connection draining its outbound buffer); it never awaits.

Consumers belong to an owner (an AMQP channel, a STOMP subscription's connection, an MQTT
session). The owner encodes deliveries into its connection's outbound buffer and sets its
``blocked`` flag while it can take no more (outbound budget full, channel-wide prefetch used
up); it calls ``Queue.dispatch`` again once it can.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from . import activemq
from .message import Message, QueueEntry
from .paging import NEVER, PAGE_BATCH, PAGE_BATCH_BYTES, Chunk, PagedDeque, PagedIndex, paging_mode
from .queue_args import QueueSettings

if TYPE_CHECKING:
    from .selector import Selector
    from .vhost import VirtualHost

_ALL_FULL = object()  # _pick's answer when no consumer can take anything


class ConsumerOwner(Protocol):
    blocked: bool

    def deliver(self, consumer: "Consumer", entry: QueueEntry) -> None: ...

    def consumer_cancelled(self, consumer: "Consumer") -> None:
        """The broker cancelled the consumer (its queue was deleted, or failed over)."""


class Consumer:
    __slots__ = ("queue", "tag", "owner", "no_ack", "exclusive", "priority", "prefetch", "unacked", "arguments",
                 "selector")

    def __init__(
        self,
        queue: "Queue",
        tag: str,
        owner: ConsumerOwner,
        no_ack: bool,
        exclusive: bool = False,
        priority: int = 0,
        prefetch: int = 0,
        arguments: dict[str, Any] | None = None,
        selector: "Selector | None" = None,
    ) -> None:
        self.queue = queue
        self.tag = tag
        self.selector = selector  # JMS 1.1 §3.8.1: only matching messages reach this consumer
        self.owner = owner
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.priority = priority
        self.prefetch = prefetch  # 0 = no limit
        self.unacked = 0
        self.arguments = arguments or {}

    def __repr__(self) -> str:
        return f"Consumer({self.tag!r} on {self.queue.name!r})"


class PriorityReady:
    """Ready entries of a priority queue: one deque per level, highest level served first."""

    __slots__ = ("levels", "max_priority", "_len")

    def __init__(self, max_priority: int) -> None:
        self.max_priority = max_priority
        self.levels = [deque() for _ in range(max_priority + 1)]
        self._len = 0

    def _level(self, entry: QueueEntry) -> deque:
        return self.levels[min(entry.message.priority, self.max_priority)]

    def append(self, entry: QueueEntry) -> None:
        self._level(entry).append(entry)
        self._len += 1

    def appendleft(self, entry: QueueEntry) -> None:
        self._level(entry).appendleft(entry)
        self._len += 1

    def popleft(self) -> QueueEntry:
        for level in reversed(self.levels):
            if level:
                self._len -= 1
                return level.popleft()
        raise IndexError("pop from an empty queue")

    def __getitem__(self, index: int) -> QueueEntry:
        if index != 0:
            raise IndexError(index)
        for level in reversed(self.levels):
            if level:
                return level[0]
        raise IndexError(index)

    def clear(self) -> None:
        for level in self.levels:
            level.clear()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self):
        for level in reversed(self.levels):
            yield from level


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    name: str
    messages_ready: int
    messages_unacknowledged: int
    bytes_ready: int
    consumers: int


class Queue:
    """A queue in one virtual host. Raises nothing on the delivery path."""

    def __init__(
        self,
        vhost: "VirtualHost",
        name: str,
        durable: bool = False,
        exclusive_owner: object | None = None,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        settings: QueueSettings | None = None,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments = arguments or {}
        self.settings = settings or QueueSettings.parse(name, vhost.name, self.arguments)
        s = self.settings
        self.ready: deque[QueueEntry] | PriorityReady = (
            PriorityReady(s.max_priority) if s.max_priority else deque()
        )
        self.consumers: list[Consumer] = []
        self.bytes_ready = 0
        self.unacked = 0
        self.had_consumer = False
        self.deleted = False
        self.last_used = vhost.clock()
        self._rr = 0
        self._dispatching = False
        self._expiry_at: float | None = None
        self._persist = durable and vhost.store is not None and vhost.store.keeps_messages
        # ActiveMQ: message groups and the redelivery policy; selectors on any engine.
        self._amq: activemq.ActiveMQSettings | None = getattr(vhost, "activemq", None)
        self._groups: dict[str, Consumer] = {}  # JMSXGroupID -> owning consumer
        self._selectors = 0  # consumers with a selector
        self._selective = self._amq is not None  # dispatch through _dispatch_selective
        self._version = 0  # bumped when an entry left in the queue may become deliverable
        self._stuck = 0  # head entries the last selective scan found no consumer for
        self._stuck_version = -1
        # Paging (see ``paging``): past _page_at bytes in memory publish takes the slow path,
        # which asks the node's budget for more or pages the message out to the store.
        self._paged: PagedIndex | None = None
        self._paging = paging_mode(s) if getattr(vhost, "budget", None) is not None else "never"
        self._page_at = self._open_gate()

    # -- publishing ---------------------------------------------------------------------
    def publish(self, message: Message, now: float) -> bool:
        """Enqueue; False when the queue refused the message (overflow reject-publish)."""
        s = self.settings
        ttl = s.message_ttl
        exp = message.properties.get("expiration")
        if exp is not None:
            try:
                per_msg = int(exp)
            except (TypeError, ValueError):
                per_msg = None
            if per_msg is not None and (ttl is None or per_msg < ttl):
                ttl = per_msg
        entry = QueueEntry(message, None if ttl is None else now + ttl / 1000.0)
        if self.bytes_ready >= self._page_at:  # a length limit, or past the memory ceiling
            if s.max_length is not None or s.max_length_bytes is not None:
                if not self._make_room(entry):
                    return False
            if self._persist and message.persistent:
                self.vhost.store.add_message(self, message)
            if self._page_out(entry):
                return True
        elif self._persist and message.persistent:
            self.vhost.store.add_message(self, message)
        self.ready.append(entry)
        self.bytes_ready += entry.size
        if self.consumers:
            if self._selective:
                self._dispatch_selective(new_entry=True)
            else:
                self.dispatch()
        if entry.expires_at is not None:
            self.expire(now)
        return True

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
                self.vhost.dead_letter(self, [entry], "maxlen")
            return False
        dropped = []
        while self.ready and over(1, entry.size):
            dropped.append(self._pop_ready())
        if dropped:
            self._settle_dropped(dropped)
            self.vhost.dead_letter(self, dropped, "maxlen")
        if max_len == 0:  # drop-head with no room at all: the new message itself is dropped
            self.vhost.dead_letter(self, [entry], "maxlen")
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
        try:
            ready = self.ready
            while ready:
                consumer = self._next_consumer()
                if consumer is None:
                    break
                entry = ready.popleft()
                self.bytes_ready -= entry.size
                if entry.expires_at is not None and entry.expires_at < self.vhost.clock():
                    self._settle_dropped([entry])
                    self.vhost.dead_letter(self, [entry], "expired")
                    continue
                if consumer.no_ack:
                    self._settle(entry)
                else:
                    consumer.unacked += 1
                    self.unacked += 1
                consumer.owner.deliver(consumer, entry)
        finally:
            self._dispatching = False
        if self._paged is not None:
            self._page_in()

    def _dispatch_selective(self, new_entry: bool) -> None:
        """Dispatch with selectors and message groups (ActiveMQ queue semantics): each ready
        entry, in order, goes to the first consumer (by priority, round-robin) with credit
        whose selector matches and that may take its group; entries nobody takes stay, in
        order, and later entries may pass them. ``new_entry``: only the tail entry is new,
        so when the scan before found no taker for every other entry, try the tail alone."""
        if self._dispatching or self.deleted:
            return
        self._dispatching = True
        try:
            ready = self.ready
            if (new_entry and self._stuck_version == self._version and self._stuck == len(ready) - 1
                    and type(ready) is deque):
                entry = ready[-1]
                if entry.expires_at is None or entry.expires_at >= self.vhost.clock():
                    consumer = self._pick(entry)
                    if consumer is None:
                        self._stuck += 1
                    elif consumer is not _ALL_FULL:
                        ready.pop()
                        self.bytes_ready -= entry.size
                        self._hand_over(consumer, entry)
                    return
            self._scan()
        finally:
            self._dispatching = False
        if self._paged is not None:
            self._page_in()

    def _scan(self) -> None:
        ready = self.ready
        kept: list[QueueEntry] = []
        verified = 0
        while ready:
            entry = ready.popleft()
            self.bytes_ready -= entry.size
            if entry.expires_at is not None and entry.expires_at < self.vhost.clock():
                self._settle_dropped([entry])
                self.vhost.dead_letter(self, [entry], "expired")
                continue
            consumer = self._pick(entry)
            kept_here = consumer is None or consumer is _ALL_FULL
            if kept_here:
                kept.append(entry)
                if consumer is _ALL_FULL:
                    break
                verified += 1
                continue
            self._hand_over(consumer, entry)
        for entry in reversed(kept):
            ready.appendleft(entry)
            self.bytes_ready += entry.size
        self._stuck = verified if verified == len(kept) else -1
        self._stuck_version = self._version

    def _hand_over(self, consumer: Consumer, entry: QueueEntry) -> None:
        if consumer.no_ack:
            self._settle(entry)
        else:
            consumer.unacked += 1
            self.unacked += 1
        consumer.owner.deliver(consumer, entry)

    def _pick(self, entry: QueueEntry) -> Any:
        """The consumer entry goes to (its group taken or released), None when no consumer
        with credit may take it, _ALL_FULL when no consumer has credit."""
        consumers = self.consumers
        n = len(consumers)
        if n and self.settings.single_active_consumer:
            n = 1
        message = entry.message
        group = None
        if self._amq is not None:
            headers = message.properties.get("headers")
            if headers:
                group = headers.get("JMSXGroupID")
                if group is not None:
                    return self._pick_grouped(entry, str(group), _group_seq(headers.get("JMSXGroupSeq")), n)
        best = None
        any_credit = False
        start = self._rr
        for i in range(n):
            idx = (start + i) % n
            c = consumers[idx]
            if c.owner.blocked or (c.prefetch and c.unacked >= c.prefetch):
                continue
            any_credit = True
            if best is not None and c.priority <= best.priority:
                continue
            sel = c.selector
            if sel is None or sel.matches(message, entry):
                best, best_i = c, idx
        if best is None:
            return None if any_credit else _ALL_FULL
        self._rr = best_i + 1
        return best

    def _pick_grouped(self, entry: QueueEntry, group: str, seq: int, n: int) -> Any:
        """ActiveMQ message groups (Queue.assignMessageGroup): the first consumer to get a
        group owns it until it goes away; JMSXGroupSeq 1 lets any consumer take the group
        over, and a negative JMSXGroupSeq delivered to the owner closes the group."""
        owner = self._groups.get(group)
        if owner is not None and seq != 1:
            if owner.owner.blocked or (owner.prefetch and owner.unacked >= owner.prefetch):
                return None if any(not c.owner.blocked and not (c.prefetch and c.unacked >= c.prefetch)
                                   for c in self.consumers[:n]) else _ALL_FULL
            if owner.selector is not None and not owner.selector.matches(entry.message, entry):
                return None
            if seq < 0:
                del self._groups[group]
                self._version += 1
            return owner
        saved = self._amq
        self._amq = None  # pick as for an ungrouped entry
        try:
            chosen = self._pick(entry)
        finally:
            self._amq = saved
        if chosen is not None and chosen is not _ALL_FULL:
            # ActiveMQ: a closing message with no owner still assigns the group.
            self._groups[group] = chosen
        return chosen

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

    def get(self, no_ack: bool) -> QueueEntry | None:
        """basic.get: the head entry, or None when the queue has none ready."""
        self.last_used = self.vhost.clock()
        now = self.last_used
        while self.ready:
            entry = self._pop_ready()
            if entry.expires_at is not None and entry.expires_at <= now:
                self._settle_dropped([entry])
                self.vhost.dead_letter(self, [entry], "expired")
                continue
            if no_ack:
                self._settle(entry)
            else:
                self.unacked += 1
            if self._paged is not None:
                self._page_in()
            return entry
        if self._paged is not None:
            self._page_in()  # the head is being read: a get right after it finds it
        return None

    # -- settling -----------------------------------------------------------------------
    def ack(self, entry: QueueEntry, consumer: Consumer | None) -> None:
        """The client acknowledged entry (consumer None for basic.get deliveries)."""
        self._release(consumer)
        self._settle(entry)

    def reject(self, entries: list[QueueEntry], consumer: Consumer | None, requeue: bool) -> None:
        """Nack/reject without requeue dead-letters ('rejected'); with it, puts entries back."""
        for _ in entries:
            self._release(consumer)
        if self.deleted:
            return
        if requeue:
            self.requeue(entries)
        else:
            for e in entries:
                self._settle(e)
            self.vhost.dead_letter(self, entries, "rejected")
        self.dispatch()

    def requeue(self, entries: Iterable[QueueEntry]) -> None:
        """Put delivered entries back at the head in their original order, redelivered."""
        limit = self.settings.delivery_limit
        quorum = self.settings.quorum
        amq = self._amq
        over = []
        for entry in reversed(list(entries)):
            entry.redelivered = True
            if amq is not None:
                # ActiveMQ: past maximumRedeliveries the message goes to ActiveMQ.DLQ.
                if activemq.over_redelivery_limit(amq, entry):
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
                entry.message = old.copy_with(headers=headers)
                entry.message.id = old.id
            self.ready.appendleft(entry)
            self.bytes_ready += entry.size
        if over:
            over.reverse()
            for e in over:
                self._settle(e)
            self.vhost.dead_letter(self, over, "delivery_limit")

    def release_consumer_entries(self, consumer: Consumer | None, entries: list[QueueEntry]) -> None:
        """A channel closed with entries unacked: requeue them (AMQP 0-9-1 §1.8.3.6)."""
        for _ in entries:
            self._release(consumer)
        if not self.deleted:
            self.requeue(entries)
            self.dispatch()

    def _release(self, consumer: Consumer | None) -> None:
        self._version += 1
        self.unacked -= 1
        if consumer is not None and consumer.unacked:
            consumer.unacked -= 1

    def _settle(self, entry: QueueEntry) -> None:
        if self._persist and entry.message.id is not None:
            self.vhost.store.remove_message(self, entry.message)

    def _settle_dropped(self, entries: list[QueueEntry]) -> None:
        for e in entries:
            self._settle(e)

    # -- consumers ----------------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        if consumer.selector is not None:
            self._selectors += 1
            self._selective = True
        self._version += 1
        self.consumers.append(consumer)
        if consumer.priority:
            self.consumers.sort(key=lambda c: -c.priority)
        self.had_consumer = True
        self.dispatch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self.last_used = self.vhost.clock()
        self._version += 1
        if consumer.selector is not None:
            self._selectors -= 1
            self._selective = self._selectors > 0 or self._amq is not None
        if self._groups:  # ActiveMQ: its groups go to whichever consumer gets their next message
            for group in [g for g, c in self._groups.items() if c is consumer]:
                del self._groups[group]
        if not self.consumers:
            if self.auto_delete and self.had_consumer:
                self.vhost.delete_queue(self.name, internal=True)
                return
            self.vhost.schedule_queue_expiry(self)
        elif self.settings.single_active_consumer or self._selective:
            self.dispatch()  # the next consumer in line becomes active, or takes its groups

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
            self._settle_dropped(dropped)
            self.vhost.dead_letter(self, dropped, "expired")
        if ready:
            head = ready[0]
            if head.expires_at is not None and (self._expiry_at is None or head.expires_at < self._expiry_at):
                self._expiry_at = head.expires_at
                self.vhost.timers.call_at(head.expires_at, self._expiry_due)
        elif self._paged is not None:
            self._page_in()  # the paged head expires once it is read (RabbitMQ: at the head)

    def _expiry_due(self, now: float) -> None:
        self._expiry_at = None
        self.expire(now)

    def purge(self) -> int:
        n = len(self.ready)
        for entry in self.ready:
            self._settle(entry)
        self.ready.clear()
        self.bytes_ready = 0
        pg = self._paged
        if pg is not None:
            # The chunk being read is settled when it arrives (_paged_in sees it cancelled).
            self.vhost.store.page_discard(self, pg.keys())
            self._leave_paging()
        return n

    def statistics(self) -> QueueStatistics:
        paged = self._paged.nbytes if self._paged is not None else 0
        return QueueStatistics(self.name, len(self.ready), self.unacked, self.bytes_ready + paged,
                               len(self.consumers))

    # -- paging (queues larger than memory, see ``paging``) ------------------------------
    @property
    def bytes_paged(self) -> int:
        """Bytes of ready bodies the store keeps on disk for this queue."""
        return self._paged.nbytes if self._paged is not None else 0

    @property
    def messages_paged(self) -> int:
        return self._paged.count if self._paged is not None else 0

    def _page_out(self, entry: QueueEntry) -> bool:
        """publish's slow path, past the queue's ceiling: True when entry went to the paged
        tail, False when it stays in memory (budget granted, or a consumer takes it now)."""
        pg = self._paged
        if pg is None:
            mode = self._paging
            if mode == "never" or (mode == "budget" and self.vhost.budget.grant(self)):
                return False
            if not self.ready and self._consumer_ready():
                return False  # delivered at once: never worth a write
            store = self.vhost.store
            if store is None or not store.can_page:
                # No paging task (a core without a running store): keep it in memory and
                # look again a MiB later.
                self._page_at = self.bytes_ready + PAGE_BATCH_BYTES
                return False
            pg = self._paged = PagedIndex()
            self.ready = PagedDeque(self.ready, pg)
            self._page_at = -1  # every publish joins the tail while there is one
        message = entry.message
        key = self.vhost.store.page_out(self, message, self._persist and message.persistent)
        pg.append(key, entry.size, entry.expires_at)
        if pg.loading is None:
            self._page_in()
        return True

    def _consumer_ready(self) -> bool:
        for c in self.consumers:
            if not c.owner.blocked and (c.prefetch == 0 or c.unacked < c.prefetch):
                return True
        return False

    def _page_in(self) -> None:
        """Ask the store for the next chunk when the in-memory head runs low."""
        pg = self._paged
        if (pg is None or pg.loading is not None or not pg.chunks or self.deleted
                or self.bytes_ready >= PAGE_BATCH_BYTES or self.ready.in_memory() >= PAGE_BATCH):
            return
        chunk = pg.loading = pg.chunks.popleft()
        self.vhost.store.page_in(self, chunk.keys, partial(self._paged_in, chunk))

    def _paged_in(self, chunk: Chunk, messages: list[Message | None]) -> None:
        """The store read chunk: append its entries to the in-memory head and dispatch."""
        pg = self._paged
        if pg is None or pg.loading is not chunk or self.deleted:
            # Purged or deleted while it was read: settle what came back.
            if self._persist and not self.deleted:
                store = self.vhost.store
                for m in messages:
                    if m is not None and m.id is not None:
                        store.remove_message(self, m)
            return
        pg.loading = None
        pg.count -= len(chunk.keys)
        pg.nbytes -= chunk.nbytes
        ready = self.ready
        redelivered = chunk.redelivered
        size = 0
        for i, m in enumerate(messages):
            if m is None:
                continue  # its row is gone (cannot happen while the queue holds it)
            entry = QueueEntry(m, chunk.expiry(i))
            entry.redelivered = redelivered
            ready.append(entry)
            size += entry.size
        self.bytes_ready += size
        if not pg.chunks:
            self._leave_paging()
        if self.ready and self.ready[0].expires_at is not None:
            self.expire(self.vhost.clock())
        if self.consumers:
            self.dispatch()
        elif self._paged is not None:
            self._page_in()

    def _leave_paging(self) -> None:
        """The paged tail is empty: back to a plain deque in memory."""
        self._paged = None
        self.ready = deque(self.ready)
        self._page_at = self._open_gate()

    def _open_gate(self) -> int:
        """publish's slow path starts at _page_at bytes in memory: at once (-1) for a queue
        with a length limit, 0 (ask the budget at the first message) for one that pages."""
        s = self.settings
        if s.max_length is not None or s.max_length_bytes is not None:
            return -1
        return NEVER if self._paging == "never" else 0

    def adopt_paged(self, chunks: Iterable[Chunk]) -> None:
        """Recovery: chunks of messages left on disk follow the in-memory entries."""
        pg = self._paged
        if pg is None:
            pg = self._paged = PagedIndex()
            self.ready = PagedDeque(self.ready, pg)
            self._page_at = -1
        for c in chunks:
            pg.add_chunk(c)
        if not pg.count:
            self._leave_paging()

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, ready={len(self.ready)}, consumers={len(self.consumers)})"


def _group_seq(value: Any) -> int:
    """JMSXGroupSeq as a number (STOMP sends a string); 0 when absent or not a number."""
    if value is None or isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
