"""ACK, NACK and transactions of a STOMP session (STOMP 1.2, "ACK", "NACK", "BEGIN",
"COMMIT", "ABORT"), kept apart from the connection state machine in ``session``.

A delivery is found by the delivery tag at the end of its message id (``subscription``);
``ack=client`` settles it and every earlier delivery of the same subscription. Acks only
settle in the core; the queues they touched are redispatched once at the end of the read
batch (``StompSession.end_of_batch``).

``Deliveries`` owns the connection's delivery tags and the deliveries awaiting an ACK or
NACK: a subscription asks it for a tag (``record``), the ACK/NACK handlers ``take`` what a
frame settles, and the session ``take_all`` when the connection ends. Nothing else touches
its counter or table.
"""

from __future__ import annotations

from typing import Any

from mqemu.broker.promise import both

from .codec import Frame
from .errors import StompError, protocol_exception

MAX_TRANSACTIONS = 100  # RabbitMQ's limit of open transactions per connection


class Deliveries:
    """The connection's delivery tags (one counter for all its subscriptions) and the
    deliveries not yet settled, by tag: ``(subscription, consumer, entry)``."""

    __slots__ = ("tag", "unacked")

    def __init__(self) -> None:
        self.tag = 0
        self.unacked: dict[int, tuple[Any, Any, Any]] = {}

    def record(self, sub: Any, consumer: Any, entry: Any) -> int:
        """The next delivery tag; the delivery is kept until settled unless its consumer
        needs no ack."""
        self.tag = tag = self.tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = (sub, consumer, entry)
        return tag

    def take(self, tag: int) -> list[tuple[Any, Any]] | None:
        """The (consumer, entry) pairs one ACK/NACK of ``tag`` settles, removed from the
        table: the delivery itself, and with ``ack=client`` every earlier one of its
        subscription. None when the tag is not awaiting a settlement."""
        item = self.unacked.get(tag)
        if item is None:
            return None
        sub = item[0]
        unacked = self.unacked
        if sub.cumulative:  # ack=client: this message and every earlier one of the subscription
            tags = [t for t, it in unacked.items() if t <= tag and it[0] is sub]
        else:
            tags = [tag]
        out = []
        for t in tags:
            _sub, consumer, entry = unacked.pop(t)
            out.append((consumer, entry))
        return out

    def take_all(self) -> dict[Any, list[Any]]:
        """Every unsettled delivery, by consumer, in delivery order; the table is emptied."""
        by_consumer: dict[Any, list[Any]] = {}
        for _sub, consumer, entry in self.unacked.values():
            by_consumer.setdefault(consumer, []).append(entry)
        self.unacked.clear()
        return by_consumer

    def __len__(self) -> int:
        return len(self.unacked)


class SettleMixin:
    """ACK/NACK and BEGIN/COMMIT/ABORT handlers, mixed into ``StompSession``."""

    # -- ACK / NACK ---------------------------------------------------------------------
    def _on_ack(self, f: Frame) -> bool:
        return self._settle(f, True)

    def _on_nack(self, f: Frame) -> bool:
        if self.version == "1.0" and not self.flavour.NACK_IN_10:  # RabbitMQ takes NACK in 1.0 too
            raise protocol_exception("NACK received but connection is in v1.0 mode.")
        return self._settle(f, False)

    def _settle(self, f: Frame, ack: bool) -> bool:
        tx = f.headers.get("transaction")
        if tx is not None:
            self._transaction(tx).append(f)
            return False
        self._settle_now(f, ack)
        return self._receipt_on_disk(f)

    def _receipt_on_disk(self, f: Frame) -> bool:
        """ActiveMQ: the receipt of a settling frame once what it changed in the store is on
        disk. Returns True when the receipt is left to the store (or there is none to send)."""
        if not self.flavour.SETTLE_RECEIPT_ON_DISK or "receipt" not in f.headers:
            return False
        return self._receipt_when(f, self.vhost.writes_safe())

    def _settle_now(self, f: Frame, ack: bool) -> None:
        h = f.headers
        name = "id" if self.version == "1.2" else "message-id"  # STOMP 1.2, "ACK"; 1.1 and 1.0
        value = h.get(name)
        if value is None:
            raise self.flavour.refusal(StompError("Missing header", f'"{f.command}" must include the "{name}" header\n'),
                                       f"{f.command} received without a ack id for acknowledge!")
        tag = self.destinations.delivery_tag(f.command, value)
        items = self.deliveries.take(tag)
        if items is None:
            raise self.flavour.unknown_delivery(f.command, tag)
        if ack:
            dirty = self.dirty_queues
            for consumer, entry in items:
                q = consumer.queue
                q.ack(entry, consumer)
                dirty.add(q)
            return
        # RabbitMQ: NACK requeues unless requeue:false. ActiveMQ: a NACK is a poison ack,
        # the message goes to the dead-letter queue.
        requeue = self.flavour.nack_requeues(h)
        groups: dict[Any, list] = {}
        for consumer, entry in items:
            groups.setdefault(consumer, []).append(entry)
        for consumer, entries in groups.items():
            consumer.queue.reject(entries, consumer, requeue)

    # -- transactions (STOMP 1.2, "BEGIN", "COMMIT", "ABORT") ----------------------------
    def _transaction(self, tx: str) -> list[Frame]:
        work = self.transactions.get(tx)
        if work is None:
            raise self.flavour.refusal(StompError("Bad transaction", f'Invalid transaction identifier: "{tx}"\n'),
                                       f"Invalid transaction id: {tx}")
        return work

    def _tx_name(self, f: Frame) -> str:
        tx = f.headers.get("transaction")
        if tx is None:
            raise StompError("Missing transaction", f"{f.command} must include a 'transaction' header\n")
        return tx

    def _on_begin(self, f: Frame) -> bool:
        tx = self._tx_name(f)
        if tx in self.transactions and self.flavour.REFUSES_DUPLICATE_BEGIN:
            raise protocol_exception(f"The transaction was already started: {tx}")
        if len(self.transactions) >= MAX_TRANSACTIONS:
            raise StompError("Transaction limit exceeded",
                             f"Too many concurrent transactions (limit {MAX_TRANSACTIONS})")
        self.transactions[tx] = []
        return False

    def _on_commit(self, f: Frame) -> bool:
        """Publish and settle what the transaction holds, in order. RabbitMQ then sends the
        COMMIT's receipt and the receipts of its SENDs (once on disk when one of them is a
        persistent message); ActiveMQ answered each SEND at once."""
        work = self._transaction(self._tx_name(f))
        del self.transactions[f.headers["transaction"]]
        at_commit = self.flavour.TX_SEND_RECEIPT_AT_COMMIT
        receipts: list[str] = []
        safe = None
        for frame in work:
            if frame.command == "SEND":
                receipt = frame.headers.get("receipt") if at_commit else None
                kept = self._publish(frame)
                if kept is not None and receipt is not None:
                    safe = both(safe, kept)
                if receipt is not None:
                    receipts.append(receipt)
            else:
                self._settle_now(frame, frame.command == "ACK")
        if not receipts:
            return self._receipt_on_disk(f)
        self._receipt(f)
        if safe is not None:
            safe.then(lambda: self._late_receipts(receipts))
        else:
            self._late_receipts(receipts)
        return True

    def _on_abort(self, f: Frame) -> bool:
        self._transaction(self._tx_name(f))
        del self.transactions[f.headers["transaction"]]
        return False
