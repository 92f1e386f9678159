"""Recovery: rebuild durable exchanges, queues, bindings and messages from a store Snapshot.

Runs once at start, before any listener accepts a connection, and writes nothing back to
the store except the removal of queues that do not survive a restart.

What comes back, as on RabbitMQ:
- durable exchanges, durable queues and the bindings between durable ends;
- each durable queue's persistent messages, in queue order (the order of their store ids,
  which follow publish order; a requeued message goes back among them at its place);
- a queue whose bodies do not fit in the node's memory budget (or a lazy queue) comes back as
  an index only (``Snapshot.paged``: id, size, TTL per message); its bodies are read in
  chunks as its head drains, as for any queue past its budget (``paging``);
- every recovered message is flagged redelivered. RabbitMQ flags the ones delivered before
  the crash; mqemu does not write a delivery mark per message (that would cost a disk write
  per delivery), so it flags every message that may have been delivered, i.e. all of them.
  The flag only tells a consumer "you may have seen this before"; it is never wrong to set.

What does not: transient exchanges, queues and messages (never stored), exclusive queues
and auto-delete queues (their owner or consumers are gone; they are removed from the store),
messages held by the ActiveMQ scheduler, and quorum queues' delivery counts.
Message TTLs restart from the recovery time.
"""

from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .exchange import EXCHANGE_TYPES, Binding, Exchange
from .paging import PAGE_BATCH, PAGE_BATCH_BYTES, Chunk
from .queue import Queue
from .queue_args import QueueSettings
from .store.base import Snapshot

if TYPE_CHECKING:
    from .core import Broker

log = logging.getLogger("mqemu.broker.recovery")


@dataclass(slots=True)
class RecoveryReport:
    exchanges: int = 0
    queues: int = 0
    bindings: int = 0
    messages: int = 0
    paged: int = 0  # of messages, those left on disk (the queue keeps an index)
    dropped_queues: int = 0
    seconds: float = 0.0


def recover(broker: "Broker", snapshot: Snapshot) -> RecoveryReport:
    """Load snapshot into broker's vhosts. Definitions in a vhost the config no longer has
    are left in the store untouched and logged. Raises nothing for bad rows: each is logged
    and skipped."""
    started = time.monotonic()
    report = RecoveryReport()
    store = broker.store
    for d in snapshot.exchanges:
        vh = broker.vhosts.get(d["vhost"])
        if vh is None or d["name"] in vh.exchanges or d["type"] not in EXCHANGE_TYPES:
            continue
        vh.exchanges[d["name"]] = Exchange(d["name"], d["type"], True, d["auto_delete"], d["internal"],
                                           dict(d["arguments"]))
        report.exchanges += 1
    for d in snapshot.queues:
        vh = broker.vhosts.get(d["vhost"])
        if vh is None:
            continue
        if d["exclusive"] or d["auto_delete"]:
            store.delete_queue(d["vhost"], d["name"])
            report.dropped_queues += 1
            continue
        try:
            settings = QueueSettings.parse(d["name"], vh.name, d["arguments"])
        except Exception as e:  # arguments this version no longer accepts: keep the queue's data
            log.error("queue %r in vhost %r not recovered: %s", d["name"], vh.name, e)
            continue
        q = Queue(vh.queue_port(d["name"], True), d["name"], True, None, False, d["arguments"], settings)
        vh.queues[q.name] = q
        report.queues += 1
        key = (vh.name, q.name)
        report.messages += _refill(q, snapshot.messages.get(key, ()), snapshot.message_ids.get(key))
        rows = snapshot.paged.get((vh.name, q.name))
        if rows is not None:
            report.messages += _refill_paged(q, rows)
            report.paged += len(rows.ids)
        vh.schedule_queue_expiry(q)
    for d in snapshot.bindings:
        vh = broker.vhosts.get(d["vhost"])
        ex = vh.exchanges.get(d["source"]) if vh is not None else None
        ends = vh.queues if vh is not None and d["destination_kind"] == "queue" else (vh.exchanges if vh else {})
        if ex is None or d["destination"] not in ends:
            continue
        ex.add_binding(Binding(d["source"], d["destination"], d["destination_kind"], d["routing_key"],
                               d["arguments"]))
        report.bindings += 1
    missing = {d["vhost"] for d in snapshot.queues + snapshot.exchanges} - set(broker.vhosts)
    if missing:
        log.warning("the store has definitions for vhosts the config does not declare: %s; they stay "
                    "in the store but are not loaded", ", ".join(sorted(missing)))
    report.seconds = time.monotonic() - started
    return report


def _refill(q: Queue, messages, ids) -> int:
    """Recovered messages join q through its ``recovered`` command (ready, flagged
    redelivered); ids: the store's handle for each (None: a store that gives none)."""
    return q.recovered(list(messages), ids, q.port.clock())


def _refill_paged(q: Queue, rows) -> int:
    """Give q the index of its messages left on disk, in chunks, flagged redelivered."""
    now = q.port.clock()
    ttl = q.settings.message_ttl
    chunks = []
    chunk = None
    ids, sizes, ttls = rows.ids, rows.sizes, rows.ttls
    for i in range(len(ids)):
        if chunk is None or len(chunk.keys) >= PAGE_BATCH or chunk.nbytes >= PAGE_BATCH_BYTES:
            chunk = Chunk(redelivered=True)
            chunks.append(chunk)
        msg_ttl = ttls[i]
        if ttl is not None and (msg_ttl < 0 or ttl < msg_ttl):
            msg_ttl = ttl
        if msg_ttl >= 0:
            if chunk.expires is None:
                chunk.expires = array("d", [float("inf")]) * len(chunk.keys)
            chunk.expires.append(now + msg_ttl / 1000.0)
        elif chunk.expires is not None:
            chunk.expires.append(float("inf"))
        chunk.keys.append(ids[i])
        chunk.nbytes += sizes[i]
    q.recovered_paged(chunks)  # reads the head now: consumers and basic.get find it in memory
    return len(ids)
