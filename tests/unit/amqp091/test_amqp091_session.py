"""The AMQP connection state machine driven with frames, against a real core (no sockets)."""

import pytest

from mqemu.broker.core import Broker
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import (
    PROTOCOL_HEADER, BodyFrame, ContentFrames, FrameDecoder, HeaderFrame, MethodFrame, encode_content,
    encode_method,
)
from mqemu.protocols.amqp091.session import AMQPConnection, State
from mqemu.protocols.session_base import ClosedReason


class Client:
    """Feeds the session bytes and decodes what it sends back."""

    def __init__(self, broker=None, heartbeat=0, peer="127.0.0.1"):
        self.broker = broker or Broker()
        self.conn = AMQPConnection(self.broker, peer=peer)
        self.conn.bind_transport(lambda: None, lambda: None)
        self.conn.connection_made(0.0)
        self.decoder = FrameDecoder(0)
        self.decoder.feed(PROTOCOL_HEADER)
        self.decoder.read_frames()
        self.now = 0.0
        self.heartbeat = heartbeat

    def send(self, data: bytes) -> list:
        self.conn.data_received(data, self.now)
        return self.received()

    def received(self) -> list:
        out = b"".join(self.conn.outbound)
        self.conn.outbound.clear()
        self.conn.outbound_bytes = 0
        self.decoder.feed(out)
        frames = []
        for f in self.decoder.read_frames():
            frames.extend(f.frames() if isinstance(f, ContentFrames) else [f])
        return frames

    def method(self, channel, m) -> list:
        return self.send(encode_method(channel, m))

    def methods(self, frames):
        return [f.method for f in frames if isinstance(f, MethodFrame)]

    def open(self, caps=None):
        start = self.send(PROTOCOL_HEADER)[0].method
        assert isinstance(start, spec.ConnectionStart)
        tune = self.method(0, spec.ConnectionStartOk(
            client_properties={"capabilities": caps or {}}, mechanism="PLAIN", response=b"\0guest\0guest",
            locale="en_US"))[0].method
        assert isinstance(tune, spec.ConnectionTune)
        assert self.method(0, spec.ConnectionTuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max,
                                                     heartbeat=self.heartbeat)) == []
        assert self.methods(self.method(0, spec.ConnectionOpen(virtual_host="/"))) == [spec.ConnectionOpenOk()]
        return self

    def channel(self, n=1):
        assert self.methods(self.method(n, spec.ChannelOpen())) == [spec.ChannelOpenOk()]


def test_handshake_advertises_rabbitmq_capabilities():
    c = Client()
    start = c.send(PROTOCOL_HEADER)[0].method
    assert (start.version_major, start.version_minor) == (0, 9)
    assert start.mechanisms == b"PLAIN AMQPLAIN"
    caps = start.server_properties["capabilities"]
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "connection.blocked",
                "authentication_failure_close", "direct_reply_to", "exchange_exchange_bindings"):
        assert caps[cap] is True


def test_wrong_protocol_header_gets_ours_and_close():
    c = Client()
    c.conn.data_received(b"AMQP\x00\x00\x08\x00", 0.0)
    assert b"".join(c.conn.outbound) == PROTOCOL_HEADER
    assert c.conn.closing and c.conn.close_reason is ClosedReason.PROTOCOL_ERROR


def test_bad_password_with_failure_close_capability():
    c = Client()
    c.send(PROTOCOL_HEADER)
    frames = c.method(0, spec.ConnectionStartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        mechanism="PLAIN", response=b"\0guest\0wrong", locale="en_US"))
    close = frames[0].method
    assert isinstance(close, spec.ConnectionClose) and close.reply_code == 403
    assert close.reply_text.startswith("ACCESS_REFUSED - Login was refused")


def test_guest_from_another_host_is_refused():
    c = Client(peer="10.1.2.3")
    c.send(PROTOCOL_HEADER)
    c.method(0, spec.ConnectionStartOk(client_properties={}, mechanism="PLAIN",
                                        response=b"\0guest\0guest", locale="en_US"))
    assert c.conn.closing and c.conn.close_reason is ClosedReason.AUTH_FAILED


def test_amqplain_login():
    from mqemu.protocols.amqp091.fieldtable import encode_table
    c = Client()
    c.send(PROTOCOL_HEADER)
    response = encode_table({"LOGIN": "guest", "PASSWORD": "guest"})  # a table body, without its length
    tune = c.method(0, spec.ConnectionStartOk(client_properties={}, mechanism="AMQPLAIN", response=response,
                                               locale="en_US"))[0].method
    assert isinstance(tune, spec.ConnectionTune)


def test_unknown_vhost_is_530():
    c = Client()
    c.send(PROTOCOL_HEADER)
    c.method(0, spec.ConnectionStartOk(client_properties={}, mechanism="PLAIN", response=b"\0guest\0guest",
                                       locale="en_US"))
    c.method(0, spec.ConnectionTuneOk(channel_max=0, frame_max=131072, heartbeat=0))
    close = c.method(0, spec.ConnectionOpen(virtual_host="nope"))[0].method
    assert (close.reply_code, close.class_id, close.method_id) == (530, 10, 40)


@pytest.mark.parametrize("frame_max, code", [(1024, 530), (1 << 20, 530)])
def test_tune_ok_frame_max_out_of_range(frame_max, code):
    c = Client()
    c.send(PROTOCOL_HEADER)
    c.method(0, spec.ConnectionStartOk(client_properties={}, mechanism="PLAIN", response=b"\0guest\0guest",
                                       locale="en_US"))
    close = c.method(0, spec.ConnectionTuneOk(channel_max=0, frame_max=frame_max, heartbeat=0))[0].method
    assert close.reply_code == code


def test_publish_get_and_ack_round_trip():
    c = Client().open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    assert c.send(encode_content(1, spec.BasicPublish(routing_key="q"), {"content_type": "text/plain"},
                                 b"hello", 131072)) == []
    frames = c.method(1, spec.BasicGet(queue="q"))
    ok, header, body = frames
    assert ok.method == spec.BasicGetOk(delivery_tag=1, routing_key="q", message_count=0)
    assert header.properties == {"content_type": "text/plain"} and body == BodyFrame(1, b"hello")
    assert c.method(1, spec.BasicAck(delivery_tag=1)) == []
    assert c.methods(c.method(1, spec.BasicGet(queue="q"))) == [spec.BasicGetEmpty()]


def test_confirms_are_coalesced_into_one_multiple_ack():
    c = Client().open()
    c.channel()
    c.method(1, spec.ConfirmSelect())
    c.method(1, spec.QueueDeclare(queue="q"))
    wire = b"".join(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"m", 131072) for _ in range(5))
    assert c.methods(c.send(wire)) == [spec.BasicAck(delivery_tag=5, multiple=True)]


def test_mandatory_unroutable_is_returned_before_the_confirm():
    c = Client().open()
    c.channel()
    c.method(1, spec.ConfirmSelect())
    frames = c.send(encode_content(1, spec.BasicPublish(routing_key="nowhere", mandatory=True), None, b"m", 131072))
    assert [type(f) for f in frames] == [MethodFrame, HeaderFrame, BodyFrame, MethodFrame]
    assert frames[0].method == spec.BasicReturn(reply_code=312, reply_text="NO_ROUTE", routing_key="nowhere")
    assert frames[3].method == spec.BasicAck(delivery_tag=1)


def test_consume_gets_consume_ok_before_deliveries():
    c = Client().open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"early", 131072))
    frames = c.method(1, spec.BasicConsume(queue="q", consumer_tag="ct"))
    assert frames[0].method == spec.BasicConsumeOk(consumer_tag="ct")
    assert frames[1].method == spec.BasicDeliver(consumer_tag="ct", delivery_tag=1, routing_key="q")


def test_channel_error_closes_only_the_channel_and_drops_frames_until_close_ok():
    c = Client().open()
    c.channel(1)
    c.channel(2)
    close = c.method(1, spec.QueueDeclare(queue="missing", passive=True))[0].method
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert close.reply_text == "NOT_FOUND - no queue 'missing' in vhost '/'"
    assert c.method(1, spec.QueueDeclare(queue="x")) == []  # dropped while closing
    assert c.method(1, spec.ChannelCloseOk()) == []
    assert c.methods(c.method(2, spec.QueueDeclare(queue="x"))) == [spec.QueueDeclareOk(queue="x")]
    c.channel(1)  # the number can be opened again


@pytest.mark.parametrize("frames, code", [
    (lambda: encode_method(3, spec.BasicQos(prefetch_count=1)), 504),  # channel not open
    (lambda: encode_method(1, spec.ChannelOpen()), 504),  # second channel.open
    (lambda: encode_method(1, spec.BasicPublish(routing_key="q")) + encode_method(1, spec.BasicQos()), 505),
    (lambda: encode_method(1, spec.BasicPublish(immediate=True)), 540),
    (lambda: encode_method(1, spec.BasicDeliver()), 503),  # a server-only method
    (lambda: encode_method(1, spec.ConnectionOpen()), 503),  # a connection method on channel 1
])
def test_hard_errors_close_the_connection(frames, code):
    c = Client().open()
    c.channel()
    close = c.methods(c.send(frames()))[-1]
    assert isinstance(close, spec.ConnectionClose) and close.reply_code == code
    assert c.conn.state is State.CLOSING
    assert c.method(0, spec.ConnectionCloseOk()) == []
    assert c.conn.closing


def test_body_frame_without_header_is_505():
    c = Client().open()
    c.channel()
    from mqemu.protocols.amqp091.codec import _FRAME_HEAD
    body = _FRAME_HEAD.pack(3, 1, 2) + b"hi\xce"
    close = c.methods(c.send(body))[0]
    assert close.reply_code == 505


def test_heartbeats_sent_and_silent_peer_closed():
    c = Client(heartbeat=2).open()
    assert c.conn.next_deadline() == pytest.approx(1.0)
    c.conn.on_timer(1.0)
    assert c.conn.outbound == [b"\x08\x00\x00\x00\x00\x00\x00\xce"]
    c.received()
    c.conn.on_drained()
    assert c.conn.next_deadline() == pytest.approx(2.0)  # the next heartbeat, not a busy loop
    c.conn.on_timer(4.0)
    assert c.conn.closing and c.conn.close_reason is ClosedReason.HEARTBEAT_TIMEOUT


def test_memory_alarm_sends_blocked_to_clients_that_support_it():
    c = Client().open(caps={"connection.blocked": True})
    c.broker.config.memory_high_watermark = 1
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"fill", 131072))
    c.broker.check_memory()
    assert c.methods(c.received()) == [spec.ConnectionBlocked(reason="low on memory")]
    assert c.conn.reading_paused
    c.method(1, spec.QueuePurge(queue="q"))
    c.broker.check_memory()
    assert c.methods(c.received()) == [spec.ConnectionUnblocked()]
    assert not c.conn.reading_paused


def test_exclusive_queue_is_locked_to_its_connection_and_deleted_with_it():
    broker = Broker()
    a, b = Client(broker).open(), Client(broker).open()
    a.channel()
    b.channel()
    a.method(1, spec.QueueDeclare(queue="mine", exclusive=True))
    close = b.method(1, spec.BasicConsume(queue="mine"))[0].method
    assert close.reply_code == 405
    a.conn.connection_lost()
    assert "mine" not in broker.vhosts["/"].queues


def test_a_client_s_connection_close_gives_up_its_exclusive_queues_before_close_ok():
    """Another connection's next request after close-ok must find the queue gone (405 was
    seen under load when the queue waited for the socket's end)."""
    broker = Broker()
    a = Client(broker).open()
    a.channel()
    a.method(1, spec.QueueDeclare(queue="mine", exclusive=True))
    a.method(1, spec.BasicGet(queue="mine"))
    assert a.methods(a.method(0, spec.ConnectionClose(reply_code=200, reply_text="bye"))) == \
        [spec.ConnectionCloseOk()]
    assert "mine" not in broker.vhosts["/"].queues
    assert a.conn.channels == {}
    a.conn.connection_lost()  # the socket's end later: nothing is released twice
    assert "mine" not in broker.vhosts["/"].queues


def test_closing_a_channel_requeues_its_unacked_messages():
    broker = Broker()
    c = Client(broker).open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"m", 131072))
    c.method(1, spec.BasicGet(queue="q"))
    assert c.methods(c.method(1, spec.ChannelClose())) == [spec.ChannelCloseOk()]
    entry = broker.vhosts["/"].queues["q"].ready[0]
    assert entry.redelivered and entry.message.body == b"m"


def test_tx_rollback_forgets_publishes_and_acks_but_keeps_delivery_tags():
    broker = Broker()
    c = Client(broker).open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="q"))
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"before", 131072))
    c.method(1, spec.BasicGet(queue="q"))  # delivery tag 1
    assert c.methods(c.method(1, spec.TxSelect())) == [spec.TxSelectOk()]
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"in-tx", 131072))
    c.method(1, spec.BasicAck(delivery_tag=1))
    assert c.methods(c.method(1, spec.TxRollback())) == [spec.TxRollbackOk()]
    queue = broker.vhosts["/"].queues["q"]
    assert len(queue.ready) == 0 and queue.unacked == 1
    c.method(1, spec.BasicAck(delivery_tag=1))
    c.send(encode_content(1, spec.BasicPublish(routing_key="q"), None, b"committed", 131072))
    assert c.methods(c.method(1, spec.TxCommit())) == [spec.TxCommitOk()]
    assert queue.unacked == 0 and [e.message.body for e in queue.ready] == [b"committed"]


def test_a_client_that_never_finishes_the_handshake_is_closed():
    c = Client()
    c.send(PROTOCOL_HEADER)
    assert c.conn.next_deadline() == pytest.approx(10.0)
    c.conn.on_timer(10.0)
    assert c.conn.closing and c.conn.close_reason is ClosedReason.PROTOCOL_ERROR
