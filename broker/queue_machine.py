"""A queue's state as a machine fed by commands that returns effects (issue 13 item 1).

The machine is deterministic: the same commands in the same order give the same state and
the same effects on any node, so a replicated (quorum) queue's leader can log each command,
have a majority keep it, and every member applies it; a follower that replays the log
reaches the leader's state (``tests/unit/core/test_queue_machine.py``). Nothing in it reads
a clock, the store, a consumer's connection or a random number: time comes in the
commands (``now``), and what must happen outside (write or delete in the store, hand a
message to a consumer, dead-letter, arm a timer) comes out as effects, for the caller to
carry out (the leader) or to drop (a follower delivers nothing).

Commands are methods; ``apply((name, *args))`` calls one from its logged form, and
``log`` (a list, or anything with ``append``) receives that form of every command applied,
so "a command" is a method name and plain arguments (message ids, consumer tags, numbers,
and the ``Message`` of an enqueue, which the store's codec already encodes). Batches are one
command: ``enqueue`` takes one message (a publish), ``settle``/``requeue``/``reject`` take
every id a multiple-ack or a closing channel settles, and each command delivers as many
messages as the consumers have credit for, in the same call.

Effects are tuples, in the order they happen:
- ``("store", id)``: keep message id (persistent, in a durable queue);
- ``("unstore", [ids])``: the store may forget them;
- ``("deliver", tag, id, redelivered)``: hand message id to consumer tag;
- ``("dead_letter", reason, [ids])``: republish them to the dead-letter target
  (``expired``, ``rejected``, ``maxlen``, ``delivery_limit``), then forget them;
- ``("refused",)``: the enqueue was refused (``x-overflow: reject-publish``);
- ``("timer", when)``: call ``expire(when)`` then (the head's deadline);
- ``("purged", n)``: a purge dropped n ready messages.

``configure(ttl, max_length, max_length_bytes, overflow, delivery_limit, now)`` changes the
limits (a replicated queue's policy change goes through its log, so every member changes
them at the same place).

A message that leaves the machine in a command (dead-lettered, settled on delivery to a
no-ack consumer or ``take``) stays readable in ``gone`` (id -> ``MachineMessage``) until the
next command starts, so the caller can carry out that command's effects; ``gone`` is not
state (not in ``snapshot``). Consumers may have a priority (the highest with credit is served,
round-robin among equals) and the queue may have a single active consumer (the first one).
``take(holder, id, no_ack, now)`` is ``basic.get``: the leader names the ready message it
hands out (its head when it asked; another member asks for id 0, the head when the command
applies), and the command checks it out to ``holder`` (a consumer that never gets
deliveries) if it is still ready. ``quorum_codec`` encodes commands and a
machine's whole state as bytes (``dump``/``load``) for a replicated log and its snapshots.

Semantics are the RabbitMQ queue's (as ``queue.Queue``): ready messages in arrival order, a
requeued message back at its place, TTL at the head, ``x-max-length`` with drop-head or
reject-publish (or ``reject-over``, a quorum queue's: refused only once over the limit), a delivery limit counted on each return (quorum queues), consumers served
round-robin within their prefetch. The classic ``Queue`` still applies these rules in place
with its own code (paging, priorities, selectors and ActiveMQ's groups included); see
ARCHITECTURE.md for what is left before it runs on this machine.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

from .message import Message

Effect = tuple


class MachineMessage:
    """One message as the machine keeps it."""

    __slots__ = ("message", "size", "expires_at", "delivery_count", "redelivered", "stored")

    def __init__(self, message: Message, expires_at: float | None, stored: bool) -> None:
        self.message = message
        self.size = len(message.body)
        self.expires_at = expires_at
        self.delivery_count = 0
        self.redelivered = False
        self.stored = stored


class MachineConsumer:
    __slots__ = ("tag", "prefetch", "checked_out", "priority", "no_ack")

    def __init__(self, tag: str, prefetch: int, priority: int = 0, no_ack: bool = False) -> None:
        self.tag = tag
        self.prefetch = prefetch  # 0: no limit; -1: a holder of basic.get messages (never served)
        self.priority = priority
        self.no_ack = no_ack
        self.checked_out: dict[int, None] = {}  # ids delivered and not settled, in order

    def has_credit(self) -> bool:
        return self.prefetch == 0 or len(self.checked_out) < self.prefetch


class QueueMachine:
    """The state of one queue (see the module docstring). ``durable``: persistent messages
    are stored; ``message_ttl`` (ms), ``max_length``, ``overflow`` and ``delivery_limit``
    as the queue's ``x-`` arguments give them."""

    def __init__(self, durable: bool = True, message_ttl: int | None = None, max_length: int | None = None,
                 overflow: str = "drop-head", delivery_limit: int | None = None, log: Any = None,
                 max_length_bytes: int | None = None, single_active: bool = False) -> None:
        self.durable = durable
        self.message_ttl = message_ttl
        self.max_length = max_length
        self.max_length_bytes = max_length_bytes
        self.overflow = overflow
        self.delivery_limit = delivery_limit
        self.single_active = single_active
        self.log = log
        self.gone: dict[int, MachineMessage] = {}  # left in the current command (not state)
        self.priorities = 0  # consumers with a priority other than 0
        self.next_id = 1
        self.messages: dict[int, MachineMessage] = {}
        self.ready: deque[int] = deque()  # ids in arrival order
        self.bytes_ready = 0
        self.consumers: dict[str, MachineConsumer] = {}
        self.order: list[str] = []  # consumer tags, round-robin order
        self.rr = 0
        self.timer: float | None = None  # the head's deadline an armed timer fires at

    @classmethod
    def from_settings(cls, settings: tuple, log: Any = None) -> "QueueMachine":
        """An empty machine with another's ``settings()``."""
        durable, ttl, max_length, overflow, limit, max_bytes, single = settings
        return cls(durable, ttl, max_length, overflow, limit, log=log, max_length_bytes=max_bytes,
                   single_active=single)

    # -- the logged form ----------------------------------------------------------------
    def apply(self, command: tuple) -> list[Effect]:
        """Apply a command in its logged form ``(name, *args)``."""
        name = command[0]
        if name not in COMMANDS:
            raise ValueError(f"unknown queue command {name!r}")
        return getattr(self, name)(*command[1:])

    def _logged(self, *command: Any) -> None:
        if self.gone:
            self.gone = {}
        if self.log is not None:
            self.log.append(command)

    def settings(self) -> tuple:
        """The constructor's arguments but ``log``, in order (a snapshot carries them)."""
        return (self.durable, self.message_ttl, self.max_length, self.overflow, self.delivery_limit,
                self.max_length_bytes, self.single_active)

    # -- commands -----------------------------------------------------------------------
    def enqueue(self, message: Message, now: float) -> list[Effect]:
        """A publish reached the queue."""
        self._logged("enqueue", message, now)
        fx: list[Effect] = []
        if (self.max_length is not None or self.max_length_bytes is not None) and self._over(1, len(message.body)):
            if self.overflow in ("reject-publish", "reject-publish-dlx"):
                fx.append(("refused",))
                return fx
            if self.overflow == "reject-over":  # quorum queues: refused once over the limit
                if self._over(0, 0):
                    fx.append(("refused",))
                    return fx
            else:
                dropped = []
                while self.ready and self._over(1, len(message.body)):
                    dropped.append(self._pop_ready())
                if dropped:
                    self._forget(dropped, fx, "maxlen")
        ttl = self.message_ttl
        exp = message.properties.get("expiration")
        if exp is not None:
            try:
                per_msg = int(exp)
            except (TypeError, ValueError):
                per_msg = None
            if per_msg is not None and (ttl is None or per_msg < ttl):
                ttl = per_msg
        mid = self.next_id
        self.next_id += 1
        stored = self.durable and message.persistent
        self.messages[mid] = m = MachineMessage(message, None if ttl is None else now + ttl / 1000.0, stored)
        if stored:
            fx.append(("store", mid))
        self.ready.append(mid)
        self.bytes_ready += m.size
        self._deliver(now, fx)
        return fx

    def consumer_added(self, tag: str, prefetch: int, now: float, priority: int = 0,
                       no_ack: bool = False) -> list[Effect]:
        """A consumer with its prefetch (0: no limit), priority and acknowledgement mode (a
        no-ack consumer's deliveries are settled as they are made). A tag seen again is
        refused (ValueError, nothing changes)."""
        if tag in self.consumers:
            raise ValueError(f"consumer {tag!r} exists")
        self._logged("consumer_added", tag, prefetch, now, priority, no_ack)
        self.consumers[tag] = MachineConsumer(tag, prefetch, priority, no_ack)
        if priority:
            self.priorities += 1
        self.order.append(tag)
        fx: list[Effect] = []
        self._deliver(now, fx)
        return fx

    def consumer_removed(self, tag: str, now: float) -> list[Effect]:
        """The consumer (or ``take``'s holder) went away: what it had not settled goes back
        (its channel closed, or its node lost the queue's leadership). An unknown tag: no
        effect."""
        c = self.consumers.pop(tag, None)
        self._logged("consumer_removed", tag, now)
        fx: list[Effect] = []
        if c is None:
            return fx
        if c.priority:
            self.priorities -= 1
        if c.prefetch >= 0:
            i = self.order.index(tag)
            del self.order[i]
            if i < self.rr:
                self.rr -= 1
        self._return(list(c.checked_out), fx)
        self._deliver(now, fx)
        return fx

    def cancel(self, tag: str, now: float) -> list[Effect]:
        """basic.cancel: the consumer gets no more deliveries; what it holds stays checked out
        to it until settled or returned (then it is forgotten). An unknown tag: no effect."""
        c = self.consumers.get(tag)
        self._logged("cancel", tag, now)
        if c is None or c.prefetch < 0:
            return []
        if c.priority:
            self.priorities -= 1
            c.priority = 0
        i = self.order.index(tag)
        del self.order[i]
        if i < self.rr:
            self.rr -= 1
        c.prefetch = -1
        if not c.checked_out:
            del self.consumers[tag]
        return []

    def settle(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """The consumer acknowledged ids (one multiple-ack: one command)."""
        ids = list(ids)
        c = self.consumers.get(tag, _NOBODY)
        self._logged("settle", tag, ids, now)
        done = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
        if c.prefetch < 0 and not c.checked_out:
            self.consumers.pop(tag, None)
        fx: list[Effect] = []
        self._drop(done, fx)
        self._deliver(now, fx)
        return fx

    def requeue(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """nack/reject with requeue, or a recover: ids go back to their places."""
        ids = list(ids)
        c = self.consumers.get(tag, _NOBODY)
        self._logged("requeue", tag, ids, now)
        back = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
        if c.prefetch < 0 and not c.checked_out:
            self.consumers.pop(tag, None)
        fx: list[Effect] = []
        self._return(back, fx)
        self._deliver(now, fx)
        return fx

    def reject(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """nack/reject without requeue: dead-lettered as ``rejected``."""
        ids = list(ids)
        c = self.consumers.get(tag, _NOBODY)
        self._logged("reject", tag, ids, now)
        gone = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
        if c.prefetch < 0 and not c.checked_out:
            self.consumers.pop(tag, None)
        fx: list[Effect] = []
        self._forget(gone, fx, "rejected")
        self._deliver(now, fx)
        return fx

    def expire(self, now: float) -> list[Effect]:
        """Drop expired messages at the head (RabbitMQ expires only there)."""
        self._logged("expire", now)
        fx: list[Effect] = []
        self.timer = None
        self._expire_head(now, fx)
        return fx

    def take(self, holder: str, mid: int, no_ack: bool, now: float) -> list[Effect]:
        """``basic.get``: check ready message ``mid`` out to ``holder`` (made on first use),
        or with ``no_ack`` settle it: ``("took", holder, id, redelivered)``; ``("took",
        holder, None, False)`` when mid is no longer ready (expired, delivered, dropped).
        ``mid`` 0 (ids start at 1) is whatever is the head when the command applies: a
        member that does not lead asks so, its view of the queue may lag."""
        self._logged("take", holder, mid, no_ack, now)
        fx: list[Effect] = []
        self._expire_head(now, fx)
        if not mid and self.ready:
            mid = self.ready[0]
        m = self.messages.get(mid)
        if m is None or mid not in self.ready:
            fx.append(("took", holder, None, False))
            return fx
        self.ready.remove(mid)
        self.bytes_ready -= m.size
        fx.append(("took", holder, mid, m.redelivered))
        if no_ack:
            self._drop([mid], fx)
        else:
            h = self.consumers.get(holder)
            if h is None:
                h = self.consumers[holder] = MachineConsumer(holder, -1)
            h.checked_out[mid] = None
        return fx

    def purge(self, now: float) -> list[Effect]:
        """Drop every ready message (not the ones delivered and unsettled)."""
        self._logged("purge", now)
        ids = list(self.ready)
        self.ready.clear()
        self.bytes_ready = 0
        fx: list[Effect] = [("purged", len(ids))]
        self._drop(ids, fx)
        return fx

    def configure(self, message_ttl: int | None, max_length: int | None, max_length_bytes: int | None,
                  overflow: str, delivery_limit: int | None, now: float) -> list[Effect]:
        """New limits (a policy set, changed or cleared): they count from the next command on,
        as RabbitMQ 3.10's ``update_config`` (nothing is dropped or expired by the change
        itself)."""
        self._logged("configure", message_ttl, max_length, max_length_bytes, overflow, delivery_limit, now)
        self.message_ttl = message_ttl
        self.max_length = max_length
        self.max_length_bytes = max_length_bytes
        self.overflow = overflow
        self.delivery_limit = delivery_limit
        return []

    def limits(self) -> tuple:
        """What ``configure`` sets, in its order."""
        return (self.message_ttl, self.max_length, self.max_length_bytes, self.overflow, self.delivery_limit)

    # -- internals ----------------------------------------------------------------------
    def _over(self, extra_len: int, extra_bytes: int) -> bool:
        return ((self.max_length is not None and len(self.ready) + extra_len > self.max_length)
                or (self.max_length_bytes is not None and self.bytes_ready + extra_bytes > self.max_length_bytes))

    def _pop_ready(self) -> int:
        mid = self.ready.popleft()
        self.bytes_ready -= self.messages[mid].size
        return mid

    def _drop(self, ids: list[int], fx: list[Effect]) -> None:
        stored = []
        gone = self.gone
        for mid in ids:
            m = gone[mid] = self.messages.pop(mid)
            if m.stored:
                stored.append(mid)
        if stored:
            fx.append(("unstore", stored))

    def _forget(self, ids: list[int], fx: list[Effect], reason: str) -> None:
        """Dead-letter ids (the caller republishes them), then forget them."""
        fx.append(("dead_letter", reason, ids))
        self._drop(ids, fx)

    def _return(self, ids: list[int], fx: list[Effect]) -> None:
        """Delivered ids back to the ready list, each at its place, or past the delivery
        limit dead-lettered."""
        limit = self.delivery_limit
        over = []
        back = []
        for mid in ids:
            m = self.messages[mid]
            m.redelivered = True
            m.delivery_count += 1
            if limit is not None and m.delivery_count > limit:
                over.append(mid)
            else:
                back.append(mid)
                self.bytes_ready += m.size
        if back:
            back.sort()
            ready = self.ready
            head = []
            while ready and ready[0] < back[-1]:
                head.append(ready.popleft())
            ready.extendleft(reversed(sorted(head + back)))
        if over:
            self._forget(over, fx, "delivery_limit")

    def _expire_head(self, now: float, fx: list[Effect]) -> None:
        ready, messages = self.ready, self.messages
        dropped = []
        while ready:
            exp = messages[ready[0]].expires_at
            if exp is None or exp > now:
                break
            dropped.append(self._pop_ready())
        if dropped:
            self._forget(dropped, fx, "expired")
        if ready:
            exp = messages[ready[0]].expires_at
            if exp is not None and (self.timer is None or exp < self.timer):
                self.timer = exp
                fx.append(("timer", exp))

    def _next_consumer(self) -> MachineConsumer | None:
        order = self.order
        n = len(order)
        if self.single_active:
            c = self.consumers[order[0]]
            return c if c.has_credit() else None
        if self.priorities:
            best: MachineConsumer | None = None
            at = 0
            for i in range(n):
                c = self.consumers[order[(self.rr + i) % n]]
                if c.has_credit() and (best is None or c.priority > best.priority):
                    best, at = c, i
            if best is not None:
                self.rr = (self.rr + at + 1) % n
            return best
        for i in range(n):
            c = self.consumers[order[(self.rr + i) % n]]
            if c.has_credit():
                self.rr = (self.rr + i + 1) % n
                return c
        return None

    def _deliver(self, now: float, fx: list[Effect]) -> None:
        self._expire_head(now, fx)
        ready, messages = self.ready, self.messages
        while ready and self.order:
            c = self._next_consumer()
            if c is None:
                break
            mid = ready[0]
            m = messages[mid]
            if m.expires_at is not None and m.expires_at <= now:
                self._expire_head(now, fx)
                continue
            self._pop_ready()
            fx.append(("deliver", c.tag, mid, m.redelivered))
            if c.no_ack:
                self._drop([mid], fx)
            else:
                c.checked_out[mid] = None

    # -- what a replica compares ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The state as plain values: equal on two machines that applied the same commands."""
        return {
            "next_id": self.next_id,
            "ready": list(self.ready),
            "bytes_ready": self.bytes_ready,
            "messages": {mid: (m.message.body, m.expires_at, m.delivery_count, m.redelivered, m.stored)
                         for mid, m in self.messages.items()},
            "consumers": {t: (c.prefetch, list(c.checked_out), c.priority, c.no_ack)
                          for t, c in self.consumers.items()},
            "order": list(self.order),
            "rr": self.rr,
            "timer": self.timer,
        }


_NOBODY = MachineConsumer("", 0)  # a tag the machine does not know holds nothing

COMMANDS = frozenset({"enqueue", "consumer_added", "consumer_removed", "cancel", "settle", "requeue", "reject",
                      "expire", "take", "purge", "configure"})
