"""One AMQP 0-9-1 channel: the exchange, queue, basic, tx and confirm classes (sans-IO).

A channel is OPEN until either side closes it. After the server sends ``channel.close``
it is CLOSING: every frame but ``channel.close``/``close-ok`` is dropped (AMQP 0-9-1
§4.2.1, the channel class) and its resources are already released. Soft errors from the
core (``BrokerError.soft``) close the channel; the rest close the connection.

The channel is also the owner of its consumers (``mqemu.broker.queue.ConsumerOwner``):
the queue calls ``deliver``, which encodes the frames straight into the connection's
outbound buffer.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from mqemu.broker.definition_hook import after_spread, change_mark
from mqemu.broker.errors import BrokerError, NotFound
from mqemu.broker.message import QueueEntry
from mqemu.broker.queue import Consumer

from . import spec
from .codec import BodyFrame, ContentFrames, HeaderFrame, MethodFrame, encode_deliver, encode_method
from .basic import REPLY_TO, BasicMethods, framed_properties, wire_properties
from .replies import (
    CHANNEL_ERROR, COMMAND_INVALID, FRAME_ERROR, MAX_MESSAGE_SIZE, NOT_IMPLEMENTED,
    UNEXPECTED_FRAME, HardError,
)

if TYPE_CHECKING:
    from .session import AMQPConnection

class Channel(BasicMethods):
    def __init__(self, conn: "AMQPConnection", number: int) -> None:
        self.conn = conn
        self.number = number
        self.closing = False
        self.blocked = conn.over_budget
        self.flow_active = True
        self.consumers: dict[str, Consumer] = {}
        self.unacked: dict[int, tuple[Any, Consumer | None, QueueEntry]] = {}
        self.delivery_tag = 0
        self.consumer_prefetch = 0
        self.global_prefetch = 0
        self.last_queue: str | None = None
        # content being assembled (basic.publish, then header, then body frames)
        self._publish: spec.BasicPublish | None = None
        self._header: HeaderFrame | None = None
        self._body: list[bytes] = []
        self._body_left = 0
        # confirm and tx modes
        self.confirm = False
        self.publish_seq = 0
        self._confirm_upto = 0
        self._confirmed = 0
        # Publishes waiting for their promise (``VirtualHost.publish_safe``), in order: no
        # confirm covers one of them before it is safe (-seq: a refused publish behind
        # them, nacked when they are confirmed).
        self._unsafe: deque[int] = deque()
        # Frames that came while a synchronous method waits for another node (a stand-in's
        # basic.get or basic.consume): handled, in order, once its reply is written, so replies
        # keep the order of the methods (RabbitMQ's channel waits in its call to the queue)
        self.held: list[Any] | None = None
        # seq -> (promise, its callback) for promises that forget (``Promise.forgets``): a
        # quorum queue's may wait as long as its group has no leader; teardown drops them
        self._waiting: dict[int, tuple[Any, Any]] = {}
        self.tx: list[tuple[str, Any]] | None = None
        self.reply_to_name: str | None = None
        # While this channel deletes a queue, its own cancel notifications wait here: they
        # follow queue.delete-ok, as RabbitMQ sends them.
        self._held_cancels: list[bytes] | None = None
        # consumer_timeout (``_ack_tick``): seconds, 0.0 when off; the timer runs while the
        # channel has consumers or unacknowledged deliveries.
        self.ack_timeout = conn.ack_timeout
        self._ack_ticking = False
        self._ack_samples: deque[tuple[float, int]] = deque()

    # -- frames -------------------------------------------------------------------------
    def handle(self, frame: Any) -> None:

        cls = frame.__class__
        if self.closing:
            if cls is MethodFrame:
                m = frame.method
                if m.__class__ is spec.ChannelCloseOk:
                    self.conn.channel_closed(self.number)
                elif m.__class__ is spec.ChannelClose:
                    self.conn.send(encode_method(self.number, spec.ChannelCloseOk()))
            return
        if cls is MethodFrame:
            if self._publish is not None:
                self._unexpected_during_content()
            m = frame.method
            handler = _HANDLERS.get(m.__class__)
            if handler is None:
                raise HardError(COMMAND_INVALID, f"unimplemented method {m.NAME}", m.CLASS_ID, m.METHOD_ID)
            try:
                handler(self, m)
            except BrokerError as e:
                if e.soft:
                    self.close(e.code, f"{e.name} - {e.text}", m.CLASS_ID, m.METHOD_ID)
                else:
                    raise HardError(e.code, e.text, m.CLASS_ID, m.METHOD_ID) from None
            return
        if cls is ContentFrames:
            if self._publish is not None:
                self._unexpected_during_content()
            m = frame.method
            if m.immediate:
                raise HardError(NOT_IMPLEMENTED, "immediate=true", 60, 40)
            header = frame.header
            if header.body_size > MAX_MESSAGE_SIZE:
                self._too_large(header.body_size)
                return
            self._publish, self._header = m, header
            self._content_complete(frame.body)
            return
        if cls is HeaderFrame:
            if self._publish is None or self._header is not None:
                raise HardError(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
            if frame.class_id != 60:
                raise HardError(UNEXPECTED_FRAME, f"expected content header for class 60, "
                                f"got one for class {frame.class_id} instead", 60, 40)
            if frame.body_size > MAX_MESSAGE_SIZE:
                self._too_large(frame.body_size)
                return
            self._header = frame
            self._body_left = frame.body_size
            if frame.body_size == 0:
                self._content_complete(b"")
            return
        if cls is BodyFrame:
            if self._header is None:
                if self._publish is not None:
                    self._unexpected_during_content()
                raise HardError(UNEXPECTED_FRAME, "expected method frame, got non method frame instead")
            data = frame.data
            self._body_left -= len(data)
            if self._body_left < 0:
                raise HardError(FRAME_ERROR, "content body is longer than the size its header declared")
            if self._body_left == 0 and not self._body:
                self._content_complete(data)
                return
            self._body.append(data)
            self.conn.partial_bodies += len(data)
            if self._body_left == 0:
                body = b"".join(self._body)
                self._body = []
                self.conn.partial_bodies -= len(body)
                self._content_complete(body)

    def _unexpected_during_content(self) -> None:
        """A frame that breaks off a publish's content: RabbitMQ names basic.publish (60, 40)."""
        if self._header is None:
            raise HardError(UNEXPECTED_FRAME, "expected content header for class 60, "
                            "got non content header frame instead", 60, 40)
        raise HardError(UNEXPECTED_FRAME, "expected content body, got non content body frame instead", 60, 40)

    def _too_large(self, size: int) -> None:
        self._publish = None
        self.close(406, f"PRECONDITION_FAILED - message size {size} is larger than "
                   f"configured max size {MAX_MESSAGE_SIZE}", 60, 40)

    def close(self, code: int, text: str, class_id: int = 0, method_id: int = 0) -> None:
        """Close this channel with an error (a soft error: the connection stays)."""
        self.conn.send(encode_method(self.number, spec.ChannelClose(
            reply_code=code, reply_text=text[:255], class_id=class_id, method_id=method_id)))
        self.closing = True
        self.teardown()

    def hold(self) -> None:
        """Later frames wait until ``release`` (a synchronous method's answer is not here yet).
        The instance's ``handle`` is replaced while it holds, so the frames of a channel that
        holds nothing pay no test."""
        if self.held is None:
            self.held = []
            self.handle = self._held_frame  # type: ignore[method-assign]

    def _held_frame(self, frame: Any) -> None:
        if self.closing or self.held is None:
            Channel.handle(self, frame)
        else:
            self.held.append(frame)

    def _unhold(self) -> list[Any] | None:
        held, self.held = self.held, None
        self.__dict__.pop("handle", None)
        return held

    def release(self) -> None:
        """The waiting method's reply is written: handle the frames that came meanwhile (they
        may hold the channel again; the rest then wait anew)."""
        held = self._unhold()
        if held:
            self.conn.handle_held(held)

    def teardown(self) -> None:
        """Cancel consumers and requeue unacknowledged deliveries (§1.8.3.6 and §1.5.2.14)."""
        self._unhold()
        self._ack_ticking = False
        self._publish = self._header = None
        self.conn.partial_bodies -= sum(map(len, self._body))
        self._body = []
        for c in list(self.consumers.values()):
            c.queue.remove_consumer(c)
        self.consumers.clear()
        if self.reply_to_name is not None and self.conn.vhost is not None:
            self.conn.vhost.direct_reply.pop(self.reply_to_name, None)
            self.reply_to_name = None
        self._requeue_all()
        if self._waiting:  # nothing of this channel stays held by a promise that may wait long
            for promise, kept in self._waiting.values():
                promise.forget(kept)
            self._waiting.clear()

    def _requeue_all(self) -> None:
        by_queue: dict[Any, list[QueueEntry]] = {}
        for queue, _consumer, entry in self.unacked.values():
            by_queue.setdefault(queue, []).append(entry)
        self.unacked.clear()
        for queue, entries in by_queue.items():
            queue.release_consumer_entries(None, entries)

    # -- consumer_timeout -----------------------------------------------------------------
    # RabbitMQ's consumer_timeout, checked by a timer per channel off the delivery path: at
    # every tick the channel notes (now, its last delivery tag); a delivery is late once the
    # oldest unacknowledged tag is at most the tag noted at a tick at least the timeout ago.
    # So a delivery is never judged late early, and is found within two ticks past the
    # timeout (a tick: a quarter of the timeout, at most 15 s).
    def start_ack_timer(self) -> None:
        if not self._ack_ticking and not self.closing:
            self._ack_ticking = True
            vhost = self.conn.vhost
            self._ack_tick(vhost.clock())

    def _ack_tick(self, now: float) -> None:
        if not self._ack_ticking or self.closing:
            self._ack_ticking = False
            return
        timeout, unacked, samples = self.ack_timeout, self.unacked, self._ack_samples
        if unacked:
            before = now - timeout
            while len(samples) > 1 and samples[1][0] <= before:
                samples.popleft()
            if samples and samples[0][0] <= before and next(iter(unacked)) <= samples[0][1]:
                self._ack_ticking = False
                self.close(406, f"PRECONDITION_FAILED - delivery acknowledgement on channel {self.number} "
                           f"timed out. Timeout value used: {round(timeout * 1000)} ms. This timeout value "
                           "can be configured, see consumers doc guide to learn more")
                self.conn.end_of_batch()  # redispatch what the close requeued
                return
        else:
            samples.clear()
        if not (unacked or self.consumers):
            self._ack_ticking = False
            return
        samples.append((now, self.delivery_tag))
        vhost = self.conn.vhost
        vhost.timers.call_at(now + min(timeout / 4, 15.0), self._ack_tick)

    # -- consumer owner -----------------------------------------------------------------
    def update_blocked(self) -> None:
        self.blocked = (self.conn.over_budget or not self.flow_active
                        or (self.global_prefetch and len(self.unacked) >= self.global_prefetch) or self.closing)

    def resume_consumers(self) -> None:
        if not self.blocked:
            for q in {c.queue for c in self.consumers.values()}:
                q.dispatch()

    def deliver(self, consumer: Consumer, entry: QueueEntry) -> None:
        self.delivery_tag = tag = self.delivery_tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = (consumer.queue, consumer, entry)
            if self.global_prefetch and len(self.unacked) >= self.global_prefetch:
                self.blocked = True
        msg = entry.message
        props = msg.encoded_properties
        conn = self.conn
        if props is None:
            props = msg.encoded_properties = wire_properties(msg, conn)
        if len(props) > conn.frame_max - 20:  # a content header frame over frame_max
            props = framed_properties(msg, conn)
        conn.send(encode_deliver(self.number, consumer.tag, tag, entry.redelivered, msg.exchange,
                                 msg.routing_key, props, msg.body, conn.frame_max))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.consumers.pop(consumer.tag, None)
        if self.conn.capabilities.get("consumer_cancel_notify") and not self.closing:
            frame = encode_method(self.number, spec.BasicCancel(consumer_tag=consumer.tag, no_wait=True))
            if self._held_cancels is not None:
                self._held_cancels.append(frame)
            else:
                self.conn.send(frame)

    # -- channel class ------------------------------------------------------------------
    def _on_channel_open(self, m: spec.ChannelOpen) -> None:
        raise HardError(CHANNEL_ERROR, f"second 'channel.open' seen on channel {self.number}", 20, 10)

    def _on_channel_close(self, m: spec.ChannelClose) -> None:
        # Confirms due so far go out before close-ok; nothing may follow it on this channel.
        self.flush_confirms()
        self.closing = True
        self.teardown()
        self.conn.send(encode_method(self.number, spec.ChannelCloseOk()))
        self.conn.channel_closed(self.number)

    def _on_channel_close_ok(self, m: spec.ChannelCloseOk) -> None:
        pass  # a close-ok for a close we never sent: ignore

    def _on_flow(self, m: spec.ChannelFlow) -> None:
        if not m.active:  # RabbitMQ 3.x does not implement client-side flow control
            raise HardError(NOT_IMPLEMENTED, "active=false", 20, 20)
        self.flow_active = m.active
        self.update_blocked()
        self.conn.send(encode_method(self.number, spec.ChannelFlowOk(active=m.active)))
        self.resume_consumers()

    def _on_flow_ok(self, m: spec.ChannelFlowOk) -> None:
        pass

    def _on_access_request(self, m: spec.AccessRequest) -> None:
        self.conn.send(encode_method(self.number, spec.AccessRequestOk()))

    # -- exchange class -----------------------------------------------------------------
    def _check(self, what: str, kind: str, name: str) -> None:
        conn = self.conn
        conn.broker.auth.check(conn.user, conn.vhost.name, what, kind, name or "amq.default")

    def _on_exchange_declare(self, m: spec.ExchangeDeclare) -> None:
        if not m.passive:
            self._check("configure", "exchange", m.exchange)
        ae = (m.arguments or {}).get("alternate-exchange")
        mark = change_mark(self.conn.vhost.definitions_hook)
        self.conn.vhost.declare_exchange(m.exchange, m.type, m.durable, m.auto_delete, m.internal,
                                         m.arguments, m.passive)
        if ae is not None and not m.passive:
            self._check("read", "exchange", m.exchange)
        self._ok_spread(m, spec.ExchangeDeclareOk(), mark)

    def _on_exchange_delete(self, m: spec.ExchangeDelete) -> None:
        self._check("configure", "exchange", m.exchange)
        self.conn.vhost.delete_exchange(m.exchange, m.if_unused)
        self._ok(m, spec.ExchangeDeleteOk())

    def _on_exchange_bind(self, m: spec.ExchangeBind) -> None:
        self._check("write", "exchange", m.destination)
        self._check("read", "exchange", m.source)
        if m.source == "amq.topic":  # the topic rules on the binding key (AuthRegistry.check_topic)
            self.conn.broker.auth.check_topic(self.conn.user, self.conn.vhost.name, "read", m.routing_key)
        mark = change_mark(self.conn.vhost.definitions_hook)
        self.conn.vhost.bind(m.source, m.destination, m.routing_key, m.arguments, "exchange")
        self._ok_spread(m, spec.ExchangeBindOk(), mark)

    def _on_exchange_unbind(self, m: spec.ExchangeUnbind) -> None:
        self._check("write", "exchange", m.destination)
        self._check("read", "exchange", m.source)
        self.conn.vhost.unbind(m.source, m.destination, m.routing_key, m.arguments, "exchange")
        self._ok(m, spec.ExchangeUnbindOk())

    def _ok(self, m: Any, reply: Any) -> None:
        if not getattr(m, "no_wait", False):
            self.conn.send(encode_method(self.number, reply))

    def _ok_spread(self, m: Any, reply: Any, mark: int) -> None:
        """The -ok of a declaration, once a cluster has it on every node this one reaches
        (``definition_hook.after_spread``); the channel's later methods wait behind it."""
        if getattr(m, "no_wait", False):
            return
        if after_spread(self.conn.vhost.definitions_hook, mark, lambda: self._spread(reply)):
            self.hold()
        else:
            self.conn.send(encode_method(self.number, reply))

    def _spread(self, reply: Any) -> None:
        if self.closing or self.conn.channels.get(self.number) is not self:
            return
        self.conn.send(encode_method(self.number, reply))
        self.release()

    # -- queue class --------------------------------------------------------------------
    def _queue_name(self, name: str) -> str:
        """An empty queue name means the last queue declared on this channel (§1.7.2.3)."""
        if name:
            return name
        if self.last_queue is None:
            raise NotFound("no previously declared queue")
        return self.last_queue

    def _on_queue_declare(self, m: spec.QueueDeclare) -> None:
        vhost, conn = self.conn.vhost, self.conn
        if m.queue == REPLY_TO or (self.reply_to_name and m.queue == self.reply_to_name):
            self._ok(m, spec.QueueDeclareOk(queue=m.queue, message_count=0, consumer_count=0))
            return
        if not m.passive:
            self._check("configure", "queue", m.queue or "amq.gen")
        # RabbitMQ (rabbit_channel): an exclusive queue is never durable, whatever was asked
        mark = change_mark(vhost.definitions_hook)
        q = vhost.declare_queue(m.queue, m.durable and not m.exclusive, conn if m.exclusive else None,
                                m.auto_delete, m.arguments, m.passive, owner=conn)
        self.last_queue = q.name
        self._ok_spread(m, spec.QueueDeclareOk(queue=q.name, message_count=len(q.ready),
                                               consumer_count=len(q.consumers)), mark)

    def _on_queue_bind(self, m: spec.QueueBind) -> None:
        queue = self._queue_name(m.queue)
        self._check("write", "queue", queue)
        self._check("read", "exchange", m.exchange)
        if m.exchange == "amq.topic":  # the topic rules on the binding key (AuthRegistry.check_topic)
            self.conn.broker.auth.check_topic(self.conn.user, self.conn.vhost.name, "read", m.routing_key)
        mark = change_mark(self.conn.vhost.definitions_hook)
        self.conn.vhost.bind(m.exchange, queue, m.routing_key, m.arguments, "queue", owner=self.conn)
        self._ok_spread(m, spec.QueueBindOk(), mark)

    def _on_queue_unbind(self, m: spec.QueueUnbind) -> None:
        queue = self._queue_name(m.queue)
        self._check("write", "queue", queue)
        self._check("read", "exchange", m.exchange)
        self.conn.vhost.unbind(m.exchange, queue, m.routing_key, m.arguments, "queue", owner=self.conn)
        self.conn.send(encode_method(self.number, spec.QueueUnbindOk()))

    def _on_queue_purge(self, m: spec.QueuePurge) -> None:
        queue = self._queue_name(m.queue)
        self._check("read", "queue", queue)
        n = self.conn.vhost.get_queue(queue, owner=self.conn).purge()
        self._ok(m, spec.QueuePurgeOk(message_count=n))

    def _on_queue_delete(self, m: spec.QueueDelete) -> None:
        queue = self._queue_name(m.queue)
        self._check("configure", "queue", queue)
        held: list[bytes] = []
        self._held_cancels = held
        try:
            n = self.conn.vhost.delete_queue(queue, m.if_unused, m.if_empty, owner=self.conn)
        finally:
            self._held_cancels = None
        self._ok(m, spec.QueueDeleteOk(message_count=n))
        for frame in held:
            self.conn.send(frame)

def _connection_method(self: Channel, m: Any) -> None:
    raise HardError(COMMAND_INVALID, f"{m.NAME} is only allowed on channel 0", m.CLASS_ID, m.METHOD_ID)


_HANDLERS = {
    spec.ChannelOpen: Channel._on_channel_open,
    spec.ChannelClose: Channel._on_channel_close,
    spec.ChannelCloseOk: Channel._on_channel_close_ok,
    spec.ChannelFlow: Channel._on_flow,
    spec.ChannelFlowOk: Channel._on_flow_ok,
    spec.AccessRequest: Channel._on_access_request,
    spec.ExchangeDeclare: Channel._on_exchange_declare,
    spec.ExchangeDelete: Channel._on_exchange_delete,
    spec.ExchangeBind: Channel._on_exchange_bind,
    spec.ExchangeUnbind: Channel._on_exchange_unbind,
    spec.QueueDeclare: Channel._on_queue_declare,
    spec.QueueBind: Channel._on_queue_bind,
    spec.QueueUnbind: Channel._on_queue_unbind,
    spec.QueuePurge: Channel._on_queue_purge,
    spec.QueueDelete: Channel._on_queue_delete,
    spec.BasicQos: Channel._on_qos,
    spec.BasicConsume: Channel._on_consume,
    spec.BasicCancel: Channel._on_cancel,
    spec.BasicCancelOk: Channel._on_cancel_ok,
    spec.BasicPublish: Channel._on_publish,
    spec.BasicGet: Channel._on_get,
    spec.BasicAck: Channel._on_ack,
    spec.BasicReject: Channel._on_reject,
    spec.BasicNack: Channel._on_nack,
    spec.BasicRecover: Channel._on_recover,
    spec.BasicRecoverAsync: Channel._on_recover,
    spec.TxSelect: Channel._on_tx_select,
    spec.TxCommit: Channel._on_tx_commit,
    spec.TxRollback: Channel._on_tx_rollback,
    spec.ConfirmSelect: Channel._on_confirm_select,
}
for _name in dir(spec):
    _cls = getattr(spec, _name)
    if isinstance(_cls, type) and getattr(_cls, "CLASS_ID", None) == 10:
        _HANDLERS.setdefault(_cls, _connection_method)
