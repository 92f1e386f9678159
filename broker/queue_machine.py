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
- ``("timer", when)``: call ``expire(when)`` then (the head's deadline).

Semantics are the RabbitMQ queue's (as ``queue.Queue``): ready messages in arrival order, a
requeued message back at its place, TTL at the head, ``x-max-length`` with drop-head or
reject-publish, a delivery limit counted on each return (quorum queues), consumers served
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
    __slots__ = ("tag", "prefetch", "checked_out")

    def __init__(self, tag: str, prefetch: int) -> None:
        self.tag = tag
        self.prefetch = prefetch  # 0: no limit
        self.checked_out: dict[int, None] = {}  # ids delivered and not settled, in order

    def has_credit(self) -> bool:
        return self.prefetch == 0 or len(self.checked_out) < self.prefetch


class QueueMachine:
    """The state of one queue (see the module docstring). ``durable``: persistent messages
    are stored; ``message_ttl`` (ms), ``max_length``, ``overflow`` and ``delivery_limit``
    as the queue's ``x-`` arguments give them."""

    def __init__(self, durable: bool = True, message_ttl: int | None = None, max_length: int | None = None,
                 overflow: str = "drop-head", delivery_limit: int | None = None, log: Any = None) -> None:
        self.durable = durable
        self.message_ttl = message_ttl
        self.max_length = max_length
        self.overflow = overflow
        self.delivery_limit = delivery_limit
        self.log = log
        self.next_id = 1
        self.messages: dict[int, MachineMessage] = {}
        self.ready: deque[int] = deque()  # ids in arrival order
        self.bytes_ready = 0
        self.consumers: dict[str, MachineConsumer] = {}
        self.order: list[str] = []  # consumer tags, round-robin order
        self.rr = 0
        self.timer: float | None = None  # the head's deadline an armed timer fires at

    # -- the logged form ----------------------------------------------------------------
    def apply(self, command: tuple) -> list[Effect]:
        """Apply a command in its logged form ``(name, *args)``."""
        name = command[0]
        if name not in COMMANDS:
            raise ValueError(f"unknown queue command {name!r}")
        return getattr(self, name)(*command[1:])

    def _logged(self, *command: Any) -> None:
        if self.log is not None:
            self.log.append(command)

    # -- commands -----------------------------------------------------------------------
    def enqueue(self, message: Message, now: float) -> list[Effect]:
        """A publish reached the queue."""
        self._logged("enqueue", message, now)
        fx: list[Effect] = []
        if self.max_length is not None and len(self.ready) + 1 > self.max_length:
            if self.overflow in ("reject-publish", "reject-publish-dlx"):
                fx.append(("refused",))
                return fx
            dropped = []
            while self.ready and len(self.ready) + 1 > self.max_length:
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

    def consumer_added(self, tag: str, prefetch: int, now: float) -> list[Effect]:
        if tag in self.consumers:
            raise ValueError(f"consumer {tag!r} exists")
        self._logged("consumer_added", tag, prefetch, now)
        self.consumers[tag] = MachineConsumer(tag, prefetch)
        self.order.append(tag)
        fx: list[Effect] = []
        self._deliver(now, fx)
        return fx

    def consumer_removed(self, tag: str, now: float) -> list[Effect]:
        """The consumer went away: what it had not settled goes back (its channel closed)."""
        c = self.consumers.pop(tag)
        self._logged("consumer_removed", tag, now)
        i = self.order.index(tag)
        del self.order[i]
        if i < self.rr:
            self.rr -= 1
        fx: list[Effect] = []
        self._return(list(c.checked_out), fx)
        self._deliver(now, fx)
        return fx

    def settle(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """The consumer acknowledged ids (one multiple-ack: one command)."""
        ids = list(ids)
        c = self.consumers[tag]
        self._logged("settle", tag, ids, now)
        done = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
        fx: list[Effect] = []
        self._drop(done, fx)
        self._deliver(now, fx)
        return fx

    def requeue(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """nack/reject with requeue, or a recover: ids go back to their places."""
        ids = list(ids)
        c = self.consumers[tag]
        self._logged("requeue", tag, ids, now)
        back = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
        fx: list[Effect] = []
        self._return(back, fx)
        self._deliver(now, fx)
        return fx

    def reject(self, tag: str, ids: Iterable[int], now: float) -> list[Effect]:
        """nack/reject without requeue: dead-lettered as ``rejected``."""
        ids = list(ids)
        c = self.consumers[tag]
        self._logged("reject", tag, ids, now)
        gone = [mid for mid in ids if c.checked_out.pop(mid, 0) is None]
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

    # -- internals ----------------------------------------------------------------------
    def _pop_ready(self) -> int:
        mid = self.ready.popleft()
        self.bytes_ready -= self.messages[mid].size
        return mid

    def _drop(self, ids: list[int], fx: list[Effect]) -> None:
        stored = []
        for mid in ids:
            if self.messages.pop(mid).stored:
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
        for i in range(n):
            c = self.consumers[order[(self.rr + i) % n]]
            if c.has_credit():
                self.rr = (self.rr + i + 1) % n
                return c
        return None

    def _deliver(self, now: float, fx: list[Effect]) -> None:
        self._expire_head(now, fx)
        ready, messages = self.ready, self.messages
        while ready and self.consumers:
            c = self._next_consumer()
            if c is None:
                break
            mid = ready[0]
            m = messages[mid]
            if m.expires_at is not None and m.expires_at <= now:
                self._expire_head(now, fx)
                continue
            self._pop_ready()
            c.checked_out[mid] = None
            fx.append(("deliver", c.tag, mid, m.redelivered))

    # -- what a replica compares ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The state as plain values: equal on two machines that applied the same commands."""
        return {
            "next_id": self.next_id,
            "ready": list(self.ready),
            "bytes_ready": self.bytes_ready,
            "messages": {mid: (m.message.body, m.expires_at, m.delivery_count, m.redelivered, m.stored)
                         for mid, m in self.messages.items()},
            "consumers": {t: (c.prefetch, list(c.checked_out)) for t, c in self.consumers.items()},
            "order": list(self.order),
            "rr": self.rr,
            "timer": self.timer,
        }


COMMANDS = frozenset({"enqueue", "consumer_added", "consumer_removed", "settle", "requeue", "reject", "expire"})
