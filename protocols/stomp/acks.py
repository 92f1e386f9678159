"""ACK, NACK and transactions of a STOMP session (STOMP 1.2, "ACK", "NACK", "BEGIN",
"COMMIT", "ABORT"), kept apart from the connection state machine in ``session``.

A delivery is found by the delivery tag at the end of its message id (``subscription``);
``ack=client`` settles it and every earlier delivery of the same subscription. Acks only
settle in the core; the queues they touched are redispatched once at the end of the read
batch (``StompSession.end_of_batch``).
"""

from __future__ import annotations

from typing import Any

from .codec import Frame
from .errors import StompError, protocol_exception

MAX_TRANSACTIONS = 100  # RabbitMQ's limit of open transactions per connection


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
        return False

    def _settle_now(self, f: Frame, ack: bool) -> None:
        h = f.headers
        name = "id" if self.version == "1.2" else "message-id"  # STOMP 1.2, "ACK"; 1.1 and 1.0
        value = h.get(name)
        if value is None:
            raise self.flavour.refusal(StompError("Missing header", f'"{f.command}" must include the "{name}" header\n'),
                                       f"{f.command} received without a ack id for acknowledge!")
        tag = self.destinations.delivery_tag(f.command, value)
        item = self.unacked.get(tag)
        if item is None:
            raise self.flavour.unknown_delivery(f.command, tag)
        sub = item[0]
        if sub.cumulative:  # ack=client: this message and every earlier one of the subscription
            items = [(t, it) for t, it in self.unacked.items() if t <= tag and it[0] is sub]
        else:
            items = [(tag, item)]
        for t, _ in items:
            del self.unacked[t]
        if ack:
            dirty = self.dirty_queues
            for _t, (_sub, consumer, entry) in items:
                q = consumer.queue
                q.ack(entry, consumer)
                dirty.add(q)
            return
        # RabbitMQ: NACK requeues unless requeue:false. ActiveMQ: a NACK is a poison ack,
        # the message goes to the dead-letter queue.
        requeue = self.flavour.NACK_REQUEUES and h.get("requeue", "true") != "false"
        groups: dict[Any, list] = {}
        for _t, (_sub, consumer, entry) in items:
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
        work = self._transaction(self._tx_name(f))
        del self.transactions[f.headers["transaction"]]
        for frame in work:
            if frame.command == "SEND":
                self._send(frame)
            else:
                self._settle_now(frame, frame.command == "ACK")
        return False

    def _on_abort(self, f: Frame) -> bool:
        self._transaction(self._tx_name(f))
        del self.transactions[f.headers["transaction"]]
        return False
