"""Deadlines for the core (message TTL, queue expiry, scheduled delivery).

The core never sleeps: it records ``(deadline, callback)`` here, and the node's timer task
sleeps until the next deadline and calls ``run_due``. Callbacks receive ``now``.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Callable

TimerCallback = Callable[[float], None]


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerCallback]] = []
        self._seq = itertools.count()
        self.on_earlier: Callable[[], None] | None = None  # woken when the next deadline moves up

    def call_at(self, when: float, callback: TimerCallback) -> None:
        earlier = not self._heap or when < self._heap[0][0]
        heapq.heappush(self._heap, (when, next(self._seq), callback))
        if earlier and self.on_earlier is not None:
            self.on_earlier()

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> int:
        """Run every callback due at now; returns how many ran."""
        n = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, callback = heapq.heappop(heap)
            callback(now)
            n += 1
        return n

    def __len__(self) -> int:
        return len(self._heap)
