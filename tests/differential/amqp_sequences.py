"""Raw AMQP 0-9-1 scenarios whose outcome is the order of the frames the server sends, for
the places where clients depend on it (py-amqp and pika raise on an unexpected frame).

Each scenario returns the methods that arrived after its trigger, as ``(channel, name)``
pairs; ``test_amqp_sequences`` checks them against mqemu and, with ``MQEMU_REF_AMQP``,
against RabbitMQ.
"""

from __future__ import annotations

from typing import Callable

from amqp_raw import RawAMQP, _unique, body_frame, content_header

from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import MethodFrame

Sequence = list[tuple[int, str]]


def _collect(c: RawAMQP, until: type, timeout: float = 3.0) -> Sequence:
    """Method frames up to and including the first ``until``."""
    out: Sequence = []
    while True:
        f = c.read_frame(timeout)
        if f is None:
            out.append((-1, "EOF" if c.eof else "TIMEOUT"))
            return out
        if isinstance(f, MethodFrame):
            out.append((f.channel, type(f.method).__name__))
            if isinstance(f.method, until):
                return out


def delete_consumed_queue(host: str, port: int) -> Sequence:
    """A channel deletes the queue it consumes from: delete-ok, then the cancel."""
    with RawAMQP(host, port) as c:
        c.handshake()
        c.open_channel(1)
        q = _unique("q")
        c.method(1, spec.QueueDeclare(queue=q, exclusive=True))
        c.expect(spec.QueueDeclareOk)
        c.method(1, spec.BasicConsume(queue=q, consumer_tag="ctag"))
        c.expect(spec.BasicConsumeOk)
        c.method(1, spec.QueueDelete(queue=q))
        seq = _collect(c, spec.QueueDeleteOk)
        c.method(1, spec.BasicQos(prefetch_count=0))  # anything the server still sends comes first
        return seq + _collect(c, spec.BasicQosOk)


def close_confirm_channel_after_publishes(host: str, port: int, n: int = 1000) -> Sequence:
    """Publishes on a confirm channel then channel.close in one write: every ack comes before
    close-ok, and nothing after it on that channel."""
    with RawAMQP(host, port) as c:
        c.handshake()
        c.open_channel(1)
        c.method(1, spec.ConfirmSelect())
        c.expect(spec.ConfirmSelectOk)
        q = _unique("q")
        c.method(1, spec.QueueDeclare(queue=q, exclusive=True))
        c.expect(spec.QueueDeclareOk)
        one = (_encode(spec.BasicPublish(exchange="", routing_key=q)) + content_header(1, 1) + body_frame(1, b"x"))
        c.send(one * n + _encode(spec.ChannelClose(reply_code=200, reply_text="bye")))
        seq = _collect(c, spec.ChannelCloseOk)
        c.method(2, spec.ChannelOpen())
        c.method(2, spec.BasicQos(prefetch_count=0))
        rest = _collect(c, spec.BasicQosOk)  # a stray ack on channel 1 would show up here
        # Coalesced acks differ in count between brokers: keep the kinds before close-ok.
        before = sorted({name for _, name in seq[:-1]})
        return [(1, k) for k in before] + seq[-1:] + rest


def _encode(m) -> bytes:
    from mqemu.protocols.amqp091.codec import encode_method
    return encode_method(1, m)


SEQUENCES: dict[str, tuple[Callable[[str, int], Sequence], Sequence]] = {
    "delete_consumed_queue": (delete_consumed_queue,
                              [(1, "QueueDeleteOk"), (1, "BasicCancel"), (1, "BasicQosOk")]),
    "close_confirm_channel_after_publishes": (close_confirm_channel_after_publishes,
                                              [(1, "BasicAck"), (1, "ChannelCloseOk"), (2, "ChannelOpenOk"),
                                               (2, "BasicQosOk")]),
}
