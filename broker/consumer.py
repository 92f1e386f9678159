"""Consumers, the owners they deliver through, and the ready list of a priority queue."""

from __future__ import annotations

import heapq
from collections import deque
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

from .message import QueueEntry

if TYPE_CHECKING:
    from .queue import Queue
    from .selector import Selector


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

    def hold_credit(self, n: int = 1) -> None:
        """n deliveries count against the prefetch without being unacked in the queue: settled
        there already (an MQTT QoS 2 delivery after PUBREC, until PUBCOMP) or taken by an
        earlier owner (a resumed session's unacknowledged deliveries)."""
        self.unacked += n

    def return_credit(self) -> bool:
        """One delivery held by ``hold_credit`` is over: True when that freed a place (the
        owner redispatches the queue)."""
        if self.unacked:
            self.unacked -= 1
            return True
        return False


by_arrival = attrgetter("seq")


def put_back(ready: deque[QueueEntry], entries: list[QueueEntry]) -> None:
    """Return entries (sorted by ``seq``) to their places at the front of ``ready``, which is
    in ``seq`` order: only the older entries already back at the head are looked at."""
    last = entries[-1].seq
    head: list[QueueEntry] = []
    while ready and ready[0].seq < last:
        head.append(ready.popleft())
    if head:
        entries = list(heapq.merge(head, entries, key=by_arrival))
    ready.extendleft(reversed(entries))


class PriorityReady:
    """Ready entries of a priority queue: one deque per level, highest level served first."""

    __slots__ = ("levels", "max_priority", "_len")

    def __init__(self, max_priority: int) -> None:
        self.max_priority = max_priority
        self.levels: list[deque[QueueEntry]] = [deque() for _ in range(max_priority + 1)]
        self._len = 0

    def _level(self, entry: QueueEntry) -> deque:
        return self.levels[min(entry.message.priority, self.max_priority)]

    def append(self, entry: QueueEntry) -> None:
        self._level(entry).append(entry)
        self._len += 1

    def appendleft(self, entry: QueueEntry) -> None:
        self._level(entry).appendleft(entry)
        self._len += 1

    def put_back(self, entries: list[QueueEntry]) -> None:
        """``put_back`` per priority level."""
        by_level: dict[int, list[QueueEntry]] = {}
        for e in entries:
            by_level.setdefault(min(e.message.priority, self.max_priority), []).append(e)
        for level, group in by_level.items():
            put_back(self.levels[level], group)
        self._len += len(entries)

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
