"""ACK, NACK and transactions of a STOMP session (STOMP 1.2, "ACK", "NACK", "BEGIN",
"COMMIT", "ABORT"), kept apart from the connection state machine in ``session``.

A delivery is found by the delivery tag at the end of its message id (``subscription``);
``ack=client`` settles it and every earlier delivery of the same subscription. Acks only
settle in the core; the queues they touched are redispatched once at the end of the read
batch (``StompSession.end_of_batch``).
"""

from __future__ import annotations

from typing import Any

from mqemu.broker.errors import PreconditionFailed

from .codec import Frame
from .errors import StompError, for_engine, protocol_exception

MAX_TRANSACTIONS = 100  # RabbitMQ's limit of open transactions per connection


class SettleMixin:
    """ACK/NACK and BEGIN/COMMIT/ABORT handlers, mixed into ``StompSession``."""

    # -- ACK / NACK ---------------------------------------------------------------------
    def _on_ack(self, f: Frame) -> bool:
        return self._settle(f, True)

    def _on_nack(self, f: Frame) -> bool:
        if self.version == "1.0" and self.engine == "activemq":  # RabbitMQ takes NACK in 1.0 too
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
        rabbit = self.engine == "rabbitmq"
        if value is None:
            raise for_engine(self.engine, StompError("Missing header", f'"{f.command}" must include the "{name}" header\n'),
                             f"{f.command} received without a ack id for acknowledge!")
        tag = self._delivery_tag(f.command, value, rabbit)
        item = self.unacked.get(tag)
        if item is None:
            if rabbit:  # the channel's basic.ack of an unknown tag: a channel error, it closes
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            raise protocol_exception(f"Unexpected {f.command} received for message-id [null]")
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
        requeue = self.engine == "rabbitmq" and h.get("requeue", "true") != "false"
        groups: dict[Any, list] = {}
        for _t, (_sub, consumer, entry) in items:
            groups.setdefault(consumer, []).append(entry)
        for consumer, entries in groups.items():
            consumer.queue.reject(entries, consumer, requeue)

    def _delivery_tag(self, command: str, value: str, rabbit: bool) -> int:
        """The delivery tag at the end of a message id (``subscription``); -1 when the id is
        not one of ours. RabbitMQ: ``T_<sub>@@<session>@@<tag>``, whose subscription must
        exist."""
        if rabbit:
            parts = value.rsplit("@@", 2)
            if len(parts) != 3 or not parts[2].isdigit():
                raise StompError("Invalid header", f"{command} must include a valid 'message-id' header\n")
            if parts[0][2:] not in self.subscriptions:
                raise StompError("Subscription not found",
                                 f"Message with id {value} has no subscription\n")
            return int(parts[2])
        tail = value.rpartition(":")[2]
        return int(tail) if tail.isdigit() else -1

    # -- transactions (STOMP 1.2, "BEGIN", "COMMIT", "ABORT") ----------------------------
    def _transaction(self, tx: str) -> list[Frame]:
        work = self.transactions.get(tx)
        if work is None:
            raise for_engine(self.engine, StompError("Bad transaction", f'Invalid transaction identifier: "{tx}"\n'),
                             f"Invalid transaction id: {tx}")
        return work

    def _tx_name(self, f: Frame) -> str:
        tx = f.headers.get("transaction")
        if tx is None:
            raise StompError("Missing transaction", f"{f.command} must include a 'transaction' header\n")
        return tx

    def _on_begin(self, f: Frame) -> bool:
        tx = self._tx_name(f)
        if tx in self.transactions and self.engine == "activemq":
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
