"""What a queue reports of itself: its statistics, its counters for rates, and the snapshot
of its observable state that the seam's replay test compares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .message import QueueEntry
    from .queue import Queue


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    name: str
    messages_ready: int
    messages_unacknowledged: int
    bytes_ready: int
    consumers: int


class QueueCounts:
    """What a queue did, for rates (never reset; the HTTP side samples them): messages it
    took; deliveries it made (``delivered``: to consumers and basic.get, redeliveries too,
    added once per dispatch pass), of them by basic.get with and without ack; gets that found
    nothing; acks; deliveries given back (``requeued``: each is delivered again, redelivered)
    and settled without an ack (``dropped``: rejected without requeue, past the delivery
    limit); entries that expired. Deliveries to no-ack consumers are not counted one by one:
    ``delivered_no_ack`` derives them (each delivery that waits for an ack ends acked,
    requeued or dropped, or is still unacked)."""

    __slots__ = ("enqueued", "delivered", "got", "got_no_ack", "get_empty", "acked", "requeued", "dropped",
                 "expired")

    def __init__(self) -> None:
        self.enqueued = 0
        self.delivered = 0
        self.got = 0
        self.got_no_ack = 0
        self.get_empty = 0
        self.acked = 0
        self.requeued = 0
        self.dropped = 0
        self.expired = 0

    def delivered_no_ack(self, unacked: int) -> int:
        """Deliveries to no-ack consumers so far (``unacked``: the queue's deliveries waiting
        for an ack now)."""
        return self.delivered - self.got_no_ack - (self.acked + self.requeued + self.dropped + unacked)


def snapshot(queue: "Queue") -> dict[str, Any]:
    """A queue's observable state as plain values (bodies stand for messages): what two
    queues fed the same commands must agree on (``tests/unit/core/test_queue_seam.py``)."""
    def entry(e: QueueEntry) -> tuple:
        return (e.message.body, e.redelivered, e.delivery_count, e.expires_at, e.store_id is not None)
    pg = queue._paged
    paged = None if pg is None else (
        [(list(c.keys), c.nbytes, c.redelivered, None if c.expires is None else list(c.expires))
         for c in pg.chunks], pg.count, pg.nbytes, None if pg.loading is None else list(pg.loading.keys))
    c = queue.counts
    return {
        "ready": [entry(e) for e in queue.ready], "bytes_ready": queue.bytes_ready, "paged": paged,
        "unacked": queue.unacked, "page_at": queue._page_at, "paging": queue._paging,
        "consumers": [(k.tag, k.unacked, k.prefetch, k.priority, k.no_ack) for k in queue.consumers],
        "rr": queue._rr, "groups": sorted((g, k.tag) for g, k in queue._groups.items()),
        "selective": (queue._selectors, queue._selective, queue._stuck, queue._stuck_version == queue._version),
        "counts": [getattr(c, n) for n in QueueCounts.__slots__], "expiry_at": queue._expiry_at,
        "had_consumer": queue.had_consumer, "deleted": queue.deleted, "last_used": queue.last_used,
    }

