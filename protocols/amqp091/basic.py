"""The basic, tx and confirm classes of an AMQP 0-9-1 channel (AMQP 0-9-1 §1.8, §1.9, and
RabbitMQ's confirm extension): consuming, settling, publishing and transactions.

Mixed into ``channel.Channel``, which owns the state these methods use (consumers, unacked
deliveries, the content being assembled, confirm and tx modes).
"""

from __future__ import annotations

import base64
import logging
import os
from typing import TYPE_CHECKING, Any

from mqemu.broker.errors import AccessRefused, BrokerError, PreconditionFailed
from mqemu.broker.message import Message, QueueEntry, check_expiration
from mqemu.broker.queue import Consumer

from . import spec
from .codec import encode_content, encode_method
from .properties import encode_fitted, encode_properties, fit_shortstr
from .replies import NOT_ALLOWED, NOT_IMPLEMENTED, HardError

if TYPE_CHECKING:
    from .session import AMQPConnection

REPLY_TO = "amq.rabbitmq.reply-to"

log = logging.getLogger("mqemu.protocols.amqp091")


def wire_properties(msg: Message, conn: "AMQPConnection") -> bytes:
    """The encoded property list of a delivery of ``msg`` (cached by the caller as
    ``msg.encoded_properties``). Properties a STOMP or MQTT publisher gave that AMQP 0-9-1
    cannot carry are converted (``properties.fit_properties``): a delivery never fails on
    them."""
    try:
        return encode_properties(msg.properties)
    except Exception:  # noqa: BLE001 - a value of another protocol's form
        _converted(conn, "message properties converted for AMQP 0-9-1")
        return encode_fitted(msg.properties)


def framed_properties(msg: Message, conn: "AMQPConnection") -> bytes:
    """The property list of a delivery whose encoded properties would make a content header
    frame over the connection's frame_max (thousands of STOMP headers): without its headers
    table, so the client gets a frame it accepts (its 12 fixed octets and the frame's 8
    count toward frame_max)."""
    _converted(conn, "message headers left out: over frame_max")
    props = dict(msg.properties)
    props.pop("headers", None)
    return encode_fitted(props)


def _converted(conn: "AMQPConnection", what: str) -> None:
    """One log line for the first conversion on a connection, then one per 1000: a flood of
    such messages does not flood the log."""
    n = conn.converted
    conn.converted = n + 1
    if n % 1000 == 0:
        log.info(what, extra={"conn": conn.conn_id, "conversions": n + 1})


def _token() -> str:
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


class BasicMethods:
    conn: "AMQPConnection"

    # -- basic class: consuming ---------------------------------------------------------
    def _on_qos(self, m: spec.BasicQos) -> None:
        if m.prefetch_size:
            raise HardError(NOT_IMPLEMENTED, f"prefetch_size!=0 ({m.prefetch_size})", 60, 10)
        # RabbitMQ's meaning of 'global': false = each new consumer, true = the whole channel.
        if m.global_:
            self.global_prefetch = m.prefetch_count
            self.update_blocked()
        else:
            self.consumer_prefetch = m.prefetch_count
        self.conn.send(encode_method(self.number, spec.BasicQosOk()))
        self.resume_consumers()

    def _on_consume(self, m: spec.BasicConsume) -> None:
        tag = m.consumer_tag or "amq.ctag-" + _token()
        if tag in self.consumers:
            raise HardError(NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", 60, 20)
        if m.queue == REPLY_TO:
            self._consume_reply_to(m, tag)
            return
        queue = self._queue_name(m.queue)
        self._check("read", "queue", queue)
        vhost = self.conn.vhost
        q = vhost.get_queue(queue, owner=self.conn)
        if q.consumers and (m.exclusive or any(c.exclusive for c in q.consumers)):
            raise AccessRefused(f"queue '{queue}' in vhost '{vhost.name}' in exclusive use")
        args = m.arguments or {}
        priority = args.get("x-priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise PreconditionFailed(f"invalid x-priority argument {priority!r}: expected an integer")
        c = Consumer(q, tag, self, m.no_ack, m.exclusive, priority, self.consumer_prefetch, args)
        self.consumers[tag] = c
        later = getattr(q, "consume_later", None)
        if later is not None:  # a cluster's stand-in: the queue's node checks it (exclusive use)
            self.hold()
            later(c, lambda refusal: self._consumed_later(m, c, refusal))
            return
        self._ok(m, spec.BasicConsumeOk(consumer_tag=tag))
        q.add_consumer(c)
        if self.ack_timeout and not m.no_ack:
            self.start_ack_timer()

    def _consumed_later(self, m: spec.BasicConsume, c: Consumer, refusal: str | None) -> None:
        if self.closing or self.conn.channels.get(self.number) is not self or self.consumers.get(c.tag) is not c:
            return  # gone meanwhile (its teardown cancelled the consumer)
        if refusal is not None:
            del self.consumers[c.tag]
            self.close(403, f"ACCESS_REFUSED - {refusal}", 60, 20)
            return
        self._ok(m, spec.BasicConsumeOk(consumer_tag=c.tag))
        if self.ack_timeout and not m.no_ack:
            self.start_ack_timer()
        self.release()

    def _consume_reply_to(self, m: spec.BasicConsume, tag: str) -> None:
        """RabbitMQ's direct reply-to: a pseudo-queue answered straight to this channel."""
        if not m.no_ack:
            raise PreconditionFailed("reply consumer cannot acknowledge")
        if self.reply_to_name is not None:
            raise PreconditionFailed("reply consumer already set")
        self.reply_to_name = f"{REPLY_TO}.{_token()}"
        vhost = self.conn.vhost

        class _ReplyQueue:  # stands in for a queue in the consumer record
            name = REPLY_TO

            @staticmethod
            def remove_consumer(consumer: Consumer) -> None:
                vhost.direct_reply.pop(self.reply_to_name or "", None)

        consumer = Consumer(_ReplyQueue, tag, self, True)  # type: ignore[arg-type]
        self.consumers[tag] = consumer

        def reply(message: Message) -> bool:
            if self.closing:
                return False
            self.deliver(consumer, QueueEntry(message, None))
            return True

        vhost.direct_reply[self.reply_to_name] = reply
        self._ok(m, spec.BasicConsumeOk(consumer_tag=tag))

    def _on_cancel(self, m: spec.BasicCancel) -> None:
        c = self.consumers.pop(m.consumer_tag, None)
        if c is not None:
            c.queue.remove_consumer(c)
            if c.queue.name == REPLY_TO:
                self.reply_to_name = None
        self._ok(m, spec.BasicCancelOk(consumer_tag=m.consumer_tag))

    def _on_cancel_ok(self, m: spec.BasicCancelOk) -> None:
        pass  # the client's answer to a server-sent basic.cancel

    def _on_get(self, m: spec.BasicGet) -> None:
        queue = self._queue_name(m.queue)
        self._check("read", "queue", queue)
        q = self.conn.vhost.get_queue(queue, owner=self.conn)
        later = getattr(q, "get_later", None)
        if later is not None:  # a cluster's stand-in: the queue's node answers (get-ok comes later)
            self.hold()  # the channel's later methods are answered after it
            later(m.no_ack, lambda entry: self._got_later(q, m, entry))
            return
        self._got(q, m, q.get(m.no_ack))

    def _got_later(self, q: Any, m: spec.BasicGet, entry: QueueEntry | None) -> None:
        self._got(q, m, entry)
        if self.conn.channels.get(self.number) is self:
            self.release()

    def _got(self, q: Any, m: spec.BasicGet, entry: QueueEntry | None) -> None:
        if self.closing or self.conn.channels.get(self.number) is not self:
            if entry is not None and not m.no_ack:
                q.release_consumer_entries(None, [entry])
            return
        if entry is None:
            self.conn.send(encode_method(self.number, spec.BasicGetEmpty()))
            return
        self.delivery_tag = tag = self.delivery_tag + 1
        if not m.no_ack:
            self.unacked[tag] = (q, None, entry)
            if self.ack_timeout and not self._ack_ticking:
                self.start_ack_timer()
        msg = entry.message
        props = msg.encoded_properties
        if props is None:
            props = msg.encoded_properties = wire_properties(msg, self.conn)
        if len(props) > self.conn.frame_max - 20:
            props = framed_properties(msg, self.conn)
        count = getattr(q, "ready_count", None)  # a quorum queue's: less what it is taking
        ok = spec.BasicGetOk(delivery_tag=tag, redelivered=entry.redelivered, exchange=msg.exchange,
                             routing_key=fit_shortstr(msg.routing_key),
                             message_count=len(q.ready) if count is None else count)
        self.conn.send(encode_content(self.number, ok, None, msg.body, self.conn.frame_max, props))

    # -- basic class: settling ----------------------------------------------------------
    def _take(self, tag: int, multiple: bool) -> list[tuple[Any, Consumer | None, QueueEntry]]:
        unacked = self.unacked
        if multiple:
            if tag == 0:
                taken = list(unacked.values())
                unacked.clear()
                return taken
            keys = [t for t in unacked if t <= tag]
            if not keys:
                raise PreconditionFailed(f"unknown delivery tag {tag}")
            return [unacked.pop(t) for t in keys]
        item = unacked.pop(tag, None)
        if item is None:
            raise PreconditionFailed(f"unknown delivery tag {tag}")
        return [item]

    def _on_ack(self, m: spec.BasicAck) -> None:
        if self.tx is not None:  # acted on at tx.commit, forgotten at tx.rollback (§1.9.2)
            self.tx.append(("ack", (m.delivery_tag, m.multiple, False)))
            return
        self._settle(self._take(m.delivery_tag, m.multiple))

    def _settle(self, items: list) -> None:
        dirty = self.conn.dirty_queues
        for queue, consumer, entry in items:
            queue.ack(entry, consumer)
            dirty.add(queue)
        if self.global_prefetch:
            self.update_blocked()

    def _on_reject(self, m: spec.BasicReject) -> None:
        self._reject(m.delivery_tag, False, m.requeue)

    def _on_nack(self, m: spec.BasicNack) -> None:
        self._reject(m.delivery_tag, m.multiple, m.requeue)

    def _reject(self, tag: int, multiple: bool, requeue: bool) -> None:
        if self.tx is not None:
            self.tx.append(("reject", (tag, multiple, requeue)))
            return
        self._reject_now(self._take(tag, multiple), requeue)

    def _reject_now(self, items: list, requeue: bool) -> None:
        by_queue: dict[Any, list] = {}
        for queue, consumer, entry in items:
            by_queue.setdefault((queue, consumer), []).append(entry)
        for (queue, consumer), entries in by_queue.items():
            queue.reject(entries, consumer, requeue)
        if self.global_prefetch:
            self.update_blocked()
            self.resume_consumers()

    def _on_recover(self, m: spec.BasicRecover) -> None:
        self._requeue_all()
        if isinstance(m, spec.BasicRecover):
            self.conn.send(encode_method(self.number, spec.BasicRecoverOk()))

    # -- basic class: publishing --------------------------------------------------------
    def _on_publish(self, m: spec.BasicPublish) -> None:
        if m.immediate:
            raise HardError(NOT_IMPLEMENTED, "immediate=true", 60, 40)
        self._publish = m

    def _content_complete(self, body: bytes) -> None:
        m, header = self._publish, self._header
        self._publish = self._header = None
        props, raw = header.properties, header.raw
        msg = Message(m.exchange, m.routing_key, body, props, raw)
        try:
            # The property flags (§4.2.6.1: reply-to 0x0200, expiration 0x0100, user-id
            # 0x0010) say whether there is anything to check; most publishes carry none.
            if raw[0] & 0x03 or raw[1] & 0x10:
                self._check_properties(msg, props)
            self._check("write", "exchange", m.exchange)
            if m.exchange == "amq.topic" and self.conn.topic_guard and m.routing_key not in self.conn.topics_allowed:
                # The topic rules MQTT and STOMP topics obey (RabbitMQ: topic permissions
                # are checked on the routing key of each publish to a topic exchange); the
                # keys allowed are remembered per connection.
                conn = self.conn
                conn.broker.auth.check_topic(conn.user, conn.vhost.name, "write", m.routing_key)
                if len(conn.topics_allowed) < 1024:
                    conn.topics_allowed.add(m.routing_key)
            if self.tx is not None:
                self.tx.append(("publish", (m, msg)))
                return
            self._route(m, msg)
        except BrokerError as e:
            if not e.soft:
                raise HardError(e.code, e.text, 60, 40) from None
            self.close(e.code, f"{e.name} - {e.text}", 60, 40)

    def _check_properties(self, msg: Message, props: dict) -> None:
        """user-id must be the connection's user, expiration a valid TTL, and reply-to
        ``amq.rabbitmq.reply-to`` needs this channel's direct reply-to consumer."""
        user_id = props.get("user_id")
        if user_id is not None and user_id != self.conn.user.name:
            raise PreconditionFailed(f"user_id property set to '{user_id}' but authenticated user "
                                     f"was '{self.conn.user.name}'")
        expiration = props.get("expiration")
        if expiration is not None:
            check_expiration(expiration)
        if props.get("reply_to") == REPLY_TO:
            if self.reply_to_name is None:
                raise PreconditionFailed("fast reply consumer does not exist")
            msg.properties = dict(props, reply_to=self.reply_to_name)
            msg.encoded_properties = None

    def _route(self, m: spec.BasicPublish, msg: Message) -> None:
        conn = self.conn
        conn.published = True
        routed, refused, safe = conn.vhost.publish_safe(m.exchange, m.routing_key, msg)
        if not routed and m.mandatory:
            ret = spec.BasicReturn(reply_code=312, reply_text="NO_ROUTE", exchange=m.exchange,
                                   routing_key=m.routing_key)
            props = msg.encoded_properties
            if props is None:
                props = msg.encoded_properties = wire_properties(msg, conn)
            if len(props) > conn.frame_max - 20:
                props = framed_properties(msg, conn)
            conn.send(encode_content(self.number, ret, None, msg.body, conn.frame_max, props))
        if self.confirm:
            self.publish_seq = seq = self.publish_seq + 1
            if refused:
                if self._unsafe:  # nacked once the publishes before it are confirmed
                    self._unsafe.append(-seq)
                else:
                    self._nack(seq)
                return
            if safe is not None:  # the core's promise: on disk (or, replicated, on a majority)
                self._unsafe.append(seq)
                if safe.can_break:  # another node's queue (nacked if lost), a quorum queue's
                    if safe.forgets:  # may wait long (no leader): its callback is dropped at close
                        kept = lambda: self._confirm_waiting(seq)  # noqa: E731
                        self._waiting[seq] = (safe, kept)
                    else:
                        kept = lambda: self._confirm_safe(seq)  # noqa: E731
                    safe.then_or(kept, lambda: self._confirm_waiting(seq, False))
                else:
                    safe.then(lambda: self._confirm_safe(seq))
            elif not self._unsafe:
                self._confirm_upto = seq
                conn.confirming.add(self)
            # else: safe now, confirmed with the older publishes still waiting

    def _confirm_safe(self, seq: int, kept: bool = True) -> None:
        if self.closing or self.conn.channels.get(self.number) is not self:
            return
        unsafe = self._unsafe
        if not kept:  # broken: nacked as a refused publish once those before it are answered
            unsafe[unsafe.index(seq)] = -seq
        elif unsafe[0] == seq:
            unsafe.popleft()
        else:  # kept before an older promise (promises of different queues)
            unsafe.remove(seq)
        if unsafe:
            nxt = unsafe[0]
            while nxt < 0:  # a refused publish, now that those before it are safe
                unsafe.popleft()
                self._confirm_upto = max(self._confirm_upto, -nxt - 1)
                self._nack(-nxt)
                if not unsafe:
                    break
                nxt = unsafe[0]
            upto = nxt - 1 if unsafe else self.publish_seq
        else:
            upto = self.publish_seq
        if upto > self._confirm_upto:
            self._confirm_upto = upto
        self.flush_confirms()

    def _confirm_waiting(self, seq: int, kept: bool = True) -> None:
        """``_confirm_safe`` for a publish whose promise breaks or forgets (not the store's)."""
        if self._waiting:
            self._waiting.pop(seq, None)
        self._confirm_safe(seq, kept)

    def _nack(self, seq: int) -> None:
        """basic.nack for a refused publish, after the acks of every publish before it."""
        self.flush_confirms()
        self._confirmed = seq
        self.conn.send(encode_method(self.number, spec.BasicNack(delivery_tag=seq, multiple=False, requeue=False)))

    def flush_confirms(self) -> None:
        """Send one basic.ack for every publish confirmed since the last (multiple=true)."""
        upto = self._confirm_upto
        if upto <= self._confirmed or self.closing:
            return
        multiple = upto - self._confirmed > 1
        self._confirmed = upto
        self.conn.send(encode_method(self.number, spec.BasicAck(delivery_tag=upto, multiple=multiple)))

    # -- tx and confirm classes ---------------------------------------------------------
    def _on_tx_select(self, m: spec.TxSelect) -> None:
        if self.confirm:
            raise PreconditionFailed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = []
        self.conn.send(encode_method(self.number, spec.TxSelectOk()))

    def _on_tx_commit(self, m: spec.TxCommit) -> None:
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        work, self.tx = self.tx, []
        for kind, item in work:
            if kind == "publish":
                self._route(*item)
            elif kind == "ack":
                self._settle(self._take(item[0], item[1]))
            else:
                self._reject_now(self._take(item[0], item[1]), item[2])
        self.conn.send(encode_method(self.number, spec.TxCommitOk()))

    def _on_tx_rollback(self, m: spec.TxRollback) -> None:
        """Drop the transaction's publishes and acks; its deliveries stay unacknowledged."""
        if self.tx is None:
            raise PreconditionFailed("channel is not transactional")
        self.tx = []
        self.conn.send(encode_method(self.number, spec.TxRollbackOk()))

    def _on_confirm_select(self, m: spec.ConfirmSelect) -> None:
        if self.tx is not None:
            raise PreconditionFailed("cannot switch from tx to confirm mode")
        self.confirm = True
        self._ok(m, spec.ConfirmSelectOk())
