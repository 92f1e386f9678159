"""A raw-socket AMQP 0-9-1 client and the bad-input / channel-error scenarios run with it.

The scenarios are plain functions ``scenario(host, port) -> Outcome`` so the same bytes go to
mqemu (``tests/integration/test_amqp_bad_input.py`` asserts the exact codes) and to a
reference RabbitMQ (``tests/differential/test_amqp_differential.py`` compares both).

Frames are built with mqemu's own encoder (``encode_method``) except where the point of the
scenario is a frame that encoder would never write.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.fieldtable import encode_table
from mqemu.protocols.amqp091.codec import (
    NEED_DATA, PROTOCOL_HEADER, FrameDecoder, Heartbeat, MethodFrame, encode_method,
)

CLIENT_PROPERTIES = {
    "product": "mqemu-raw-test",
    "capabilities": {
        "authentication_failure_close": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "basic.nack": True,
        "publisher_confirms": True,
    },
}


def ref_address(value: str) -> tuple[str, int]:
    """``MQEMU_REF_AMQP`` as host and port: accepts ``host:port`` or an ``amqp://`` URL."""
    if "://" in value:
        parts = urlsplit(value)
        return parts.hostname or "127.0.0.1", parts.port or 5672
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class Outcome:
    """How the server ended a scenario.

    kind: "connection" (connection.close), "channel" (channel.close), "header" (the server
    answered with a protocol header and closed), "eof" (socket closed without a close
    method), "ok" (nothing closed within the wait).
    """

    kind: str
    code: int = 0
    class_id: int = 0
    method_id: int = 0
    text: str = ""
    raw: bytes = b""

    def key(self) -> tuple:
        return (self.kind, self.code, self.class_id, self.method_id)


def frame(ftype: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


def content_header(channel: int, body_size: int, class_id: int = 60, props: bytes = b"\x00\x00") -> bytes:
    return frame(2, channel, struct.pack(">HHQ", class_id, 0, body_size) + props)


def body_frame(channel: int, data: bytes) -> bytes:
    return frame(3, channel, data)


class RawAMQP:
    """One raw connection. Every read is bounded by ``timeout`` seconds."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.decoder = FrameDecoder(0)
        self.decoder.feed(PROTOCOL_HEADER)  # the decoder expects a greeting first
        self.decoder.next_frame()
        self.raw = b""
        self.eof = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawAMQP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def method(self, channel: int, m: Any) -> None:
        self.send(encode_method(channel, m))

    def _recv(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.raw += data
        self.decoder.feed(data)
        return True

    def read_frame(self, timeout: float | None = None) -> Any:
        """The next frame, or None at EOF or after timeout (heartbeats are skipped)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            f = self.decoder.next_frame()
            if f is not NEED_DATA:
                if f.__class__ is Heartbeat:
                    continue
                return f
            if self.eof or not self._recv(deadline):
                return None

    def expect(self, cls: type, timeout: float | None = None) -> Any:
        f = self.read_frame(timeout)
        if not (isinstance(f, MethodFrame) and isinstance(f.method, cls)):
            raise AssertionError(f"expected {cls.__name__}, got {f!r}")
        return f.method

    def read_raw(self, n: int, timeout: float | None = None) -> bytes:
        """Up to n raw bytes (for the protocol-header answer)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while len(self.raw) < n and not self.eof and self._recv(deadline):
            pass
        return self.raw[:n]

    def wait_eof(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._recv(deadline)
        return self.eof

    # -- handshake --------------------------------------------------------------------
    def handshake(self, user: str = "guest", password: str = "guest", vhost: str = "/",
                  frame_max: int = 131072, channel_max: int = 0, heartbeat: int = 0) -> spec.ConnectionTune:
        self.send(PROTOCOL_HEADER)
        self.expect(spec.ConnectionStart)
        self.method(0, spec.ConnectionStartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                              response=f"\x00{user}\x00{password}".encode(), locale="en_US"))
        tune = self.expect(spec.ConnectionTune)
        self.method(0, spec.ConnectionTuneOk(channel_max=channel_max or tune.channel_max,
                                             frame_max=frame_max, heartbeat=heartbeat))
        self.method(0, spec.ConnectionOpen(virtual_host=vhost))
        self.expect(spec.ConnectionOpenOk)
        return tune

    def open_channel(self, number: int = 1) -> None:
        self.method(number, spec.ChannelOpen())
        self.expect(spec.ChannelOpenOk)

    def outcome(self, timeout: float = 3.0) -> Outcome:
        """Read until the server closes something; answer a connection.close with close-ok."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.0, deadline - time.monotonic()))
            if f is None:
                return Outcome("eof", raw=self.raw[:64]) if self.eof else Outcome("ok")
            if not isinstance(f, MethodFrame):
                continue
            m = f.method
            if isinstance(m, spec.BasicQosOk):  # the answer to alive(): nothing was closed
                return Outcome("ok")
            if isinstance(m, spec.ConnectionClose):
                try:
                    self.method(0, spec.ConnectionCloseOk())
                except OSError:
                    pass
                return Outcome("connection", m.reply_code, m.class_id, m.method_id, m.reply_text)
            if isinstance(m, spec.ChannelClose):
                try:
                    self.method(f.channel, spec.ChannelCloseOk())
                except OSError:
                    pass
                return Outcome("channel", m.reply_code, m.class_id, m.method_id, m.reply_text)


def alive(c: RawAMQP, channel: int = 1) -> None:
    """Ask for basic.qos-ok: ``outcome`` returns "ok" at once when it comes back."""
    c.method(channel, spec.BasicQos(prefetch_count=0))


# -- scenarios ----------------------------------------------------------------------------
# Each opens its own connection(s) and returns the Outcome of the last one.

Scenario = Callable[[str, int], Outcome]


def _opened(host: str, port: int, frame_max: int = 131072) -> RawAMQP:
    c = RawAMQP(host, port)
    c.handshake(frame_max=frame_max)
    c.open_channel(1)
    return c


def _unique(prefix: str) -> str:
    return f"mqemu-diff-{prefix}-{os.urandom(4).hex()}"


def bad_protocol_header(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.send(b"AMQP\x01\x01\x00\x0a")  # the AMQP 0-10 greeting
        got = c.read_raw(8)
        c.wait_eof(3)
        return Outcome("header", raw=got) if got else Outcome("eof")


def http_request(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = c.read_raw(8)
        c.wait_eof(3)
        return Outcome("header", raw=got) if got else Outcome("eof")


def truncated_frame_then_eof(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.send(encode_method(0, spec.ChannelOpen())[:5])
        c.sock.shutdown(socket.SHUT_WR)
        return c.outcome(3)


def bad_frame_end(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        wire = encode_method(1, spec.ChannelOpen())
        c.send(wire[:-1] + b"\x00")
        return c.outcome()


def frame_over_frame_max(host: str, port: int) -> Outcome:
    with _opened(host, port, frame_max=8192) as c:  # 8192: the floor of RabbitMQ 4.1+
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 16384))
        c.send(body_frame(1, b"x" * 16384))
        return c.outcome()


def unknown_method(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(frame(1, 1, struct.pack(">HH", 60, 999)))
        return c.outcome()


def unknown_class(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(frame(1, 1, struct.pack(">HH", 77, 10)))
        return c.outcome()


def unknown_frame_type(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(frame(9, 1, b"abc"))
        return c.outcome()


def method_on_unopened_channel(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.method(5, spec.QueueDeclare(queue=_unique("q"), exclusive=True))
        return c.outcome()


def publish_before_channel_open(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 2))
        c.send(body_frame(1, b"hi"))
        return c.outcome()


def header_without_publish(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(content_header(1, 2))
        return c.outcome()


def body_without_header(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(body_frame(1, b"hi"))
        return c.outcome()


def body_without_publish(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(body_frame(1, b"hi"))
        return c.outcome()


def method_instead_of_header(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.method(1, spec.BasicQos(prefetch_count=1))
        return c.outcome()


def header_wrong_class(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 2, class_id=50))
        return c.outcome()


def bad_field_table_type(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        # queue.declare whose arguments table holds one entry of type 'Z' (unknown)
        name = _unique("q").encode()
        table = bytes([1]) + b"k" + b"Z" + b"\x00"
        payload = (struct.pack(">HHH", 50, 10, 0) + bytes([len(name)]) + name + bytes([0b01000])
                   + struct.pack(">I", len(table)) + table)  # bits: exclusive
        c.send(frame(1, 1, payload))
        return c.outcome()


def absurd_body_size(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 1 << 62))
        return c.outcome()


def body_longer_than_header(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 2))
        c.send(body_frame(1, b"hello"))
        return c.outcome()


def heartbeat_on_channel(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.send(frame(8, 1, b""))
        return c.outcome()


def second_channel_open(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.ChannelOpen())
        return c.outcome()


def channel_number_above_max(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake(channel_max=2)
        c.method(7, spec.ChannelOpen())
        c.expect(spec.ChannelOpenOk)
        alive(c, 7)
        return c.outcome()


def channel_count_over_max(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake(channel_max=2)
        for n in (1, 2):
            c.open_channel(n)
        c.method(3, spec.ChannelOpen())
        return c.outcome()


def connection_open_twice(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.method(0, spec.ConnectionOpen(virtual_host="/"))
        return c.outcome()


def header_on_channel_zero(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.send(content_header(0, 2))
        return c.outcome()


def method_instead_of_body(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 4) + body_frame(1, b"ab"))
        c.method(1, spec.BasicQos(prefetch_count=1))
        return c.outcome()


def connection_method_on_channel(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.ConnectionOpen(virtual_host="/"))
        return c.outcome()


def channel_method_on_channel_zero(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.handshake()
        c.method(0, spec.QueueDeclare(queue=_unique("q"), exclusive=True))
        return c.outcome()


def immediate_publish(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere", immediate=True))
        c.send(content_header(1, 0))
        return c.outcome()


def prefetch_size(host: str, port: int) -> Outcome:
    with _opened(host, port) as c:
        c.method(1, spec.BasicQos(prefetch_size=1000, prefetch_count=0))
        return c.outcome()


def unknown_vhost(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(spec.ConnectionStart)
        c.method(0, spec.ConnectionStartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                           response=b"\x00guest\x00guest", locale="en_US"))
        tune = c.expect(spec.ConnectionTune)
        c.method(0, spec.ConnectionTuneOk(channel_max=tune.channel_max, frame_max=tune.frame_max, heartbeat=0))
        c.method(0, spec.ConnectionOpen(virtual_host="no-such-vhost"))
        return c.outcome()


def wrong_password(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(spec.ConnectionStart)
        c.method(0, spec.ConnectionStartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                           response=b"\x00guest\x00wrong", locale="en_US"))
        return c.outcome()


def frame_max_too_small(host: str, port: int) -> Outcome:
    with RawAMQP(host, port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(spec.ConnectionStart)
        c.method(0, spec.ConnectionStartOk(client_properties=CLIENT_PROPERTIES, mechanism="PLAIN",
                                           response=b"\x00guest\x00guest", locale="en_US"))
        c.expect(spec.ConnectionTune)
        c.method(0, spec.ConnectionTuneOk(channel_max=0, frame_max=1024, heartbeat=0))
        c.method(0, spec.ConnectionOpen(virtual_host="/"))
        return c.outcome(timeout=8)  # RabbitMQ drops a failed handshake after about 3 s


def start_ok_over_frame_min(host: str, port: int) -> Outcome:
    """A connection.start-ok of 5 KB: before tune-ok a frame may be 4096 octets at most."""
    with RawAMQP(host, port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(spec.ConnectionStart)
        c.method(0, spec.ConnectionStartOk(client_properties=dict(CLIENT_PROPERTIES, pad="x" * 5000),
                                           mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US"))
        return c.outcome(timeout=8)  # RabbitMQ drops the socket after about 3 s


def amqplain_nested_deep(host: str, port: int) -> Outcome:
    """An AMQPLAIN response with good credentials and a table nested 500 levels deep."""
    nested = b""
    for _ in range(500):
        nested = b"\x01kF" + struct.pack(">I", len(nested)) + nested
    response = encode_table({"LOGIN": "guest", "PASSWORD": "guest"}) + nested
    with RawAMQP(host, port) as c:
        c.send(PROTOCOL_HEADER)
        c.expect(spec.ConnectionStart)
        c.method(0, spec.ConnectionStartOk(client_properties=CLIENT_PROPERTIES, mechanism="AMQPLAIN",
                                           response=response, locale="en_US"))
        return c.outcome()


# -- channel errors -----------------------------------------------------------------------

def _channel_scenario(body: Callable[[RawAMQP], None]) -> Scenario:
    def run(host: str, port: int) -> Outcome:
        with _opened(host, port) as c:
            body(c)
            return c.outcome()
    run.__name__ = body.__name__
    return run


@_channel_scenario
def passive_missing_queue(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue=_unique("missing"), passive=True))


@_channel_scenario
def passive_missing_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange=_unique("missing"), type="direct", passive=True))


@_channel_scenario
def bind_missing_queue(c: RawAMQP) -> None:
    c.method(1, spec.QueueBind(queue=_unique("missing"), exchange="amq.direct", routing_key="k"))


@_channel_scenario
def publish_missing_exchange(c: RawAMQP) -> None:
    c.method(1, spec.BasicPublish(exchange=_unique("missing"), routing_key="k"))
    c.send(content_header(1, 0))


@_channel_scenario
def consume_missing_queue(c: RawAMQP) -> None:
    c.method(1, spec.BasicConsume(queue=_unique("missing")))


@_channel_scenario
def declare_reserved_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange="amq.mqemu-test", type="direct"))


@_channel_scenario
def declare_reserved_queue(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue="amq.mqemu-test"))


@_channel_scenario
def delete_default_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDelete(exchange="amq.direct"))


@_channel_scenario
def bind_default_exchange(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueBind(queue=name, exchange="", routing_key="k"))


@_channel_scenario
def unknown_exchange_type(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange=_unique("x"), type="no-such-type"))


@_channel_scenario
def exchange_redeclare_other_type(c: RawAMQP) -> None:
    name = _unique("x")
    c.method(1, spec.ExchangeDeclare(exchange=name, type="direct", auto_delete=True))
    c.expect(spec.ExchangeDeclareOk)
    c.method(1, spec.QueueDeclare(queue="", exclusive=True))
    q = c.expect(spec.QueueDeclareOk).queue
    c.method(1, spec.QueueBind(queue=q, exchange=name, routing_key="k"))  # so auto-delete cleans it up
    c.expect(spec.QueueBindOk)
    c.method(1, spec.ExchangeDeclare(exchange=name, type="fanout", auto_delete=True))


@_channel_scenario
def queue_inequivalent_durable(c: RawAMQP) -> None:
    name = _unique("q")
    args = {"x-expires": 5000}  # not exclusive: let the reference broker drop it soon
    c.method(1, spec.QueueDeclare(queue=name, arguments=args))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, durable=True, arguments=args))


@_channel_scenario
def exclusive_queue_durable_ignored(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, durable=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, durable=False))
    c.expect(spec.QueueDeclareOk)
    alive(c)


@_channel_scenario
def queue_inequivalent_args_missing(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, arguments={"x-message-ttl": 1000}))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))


@_channel_scenario
def queue_inequivalent_args_added(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, arguments={"x-message-ttl": 1000}))


@_channel_scenario
def queue_inequivalent_auto_delete(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, auto_delete=True))


@_channel_scenario
def exclusive_queue_redeclared_shared(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=False, durable=True))  # exclusivity first


@_channel_scenario
def shared_queue_redeclared_exclusive(c: RawAMQP) -> None:
    name = _unique("q")
    args = {"x-expires": 5000}  # not exclusive: let the reference broker drop it soon
    c.method(1, spec.QueueDeclare(queue=name, arguments=args))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, arguments=args))


def _bad_args(args: dict) -> Callable[[RawAMQP], None]:
    def body(c: RawAMQP) -> None:
        c.method(1, spec.QueueDeclare(queue=_unique("q"), exclusive=True, arguments=args))
    return body


queue_arg_ttl_string = _channel_scenario(_bad_args({"x-message-ttl": "abc"}))
queue_arg_max_length_float = _channel_scenario(_bad_args({"x-max-length": 1.5}))
queue_arg_max_length_negative = _channel_scenario(_bad_args({"x-max-length": -1}))
queue_arg_expires_zero = _channel_scenario(_bad_args({"x-expires": 0}))
queue_arg_priority_too_large = _channel_scenario(_bad_args({"x-max-priority": 300}))
queue_arg_overflow_bogus = _channel_scenario(_bad_args({"x-overflow": "bogus"}))
queue_arg_type_bogus = _channel_scenario(_bad_args({"x-queue-type": "bogus"}))
queue_arg_sac_string = _channel_scenario(_bad_args({"x-single-active-consumer": "yes"}))
queue_arg_dlx_integer = _channel_scenario(_bad_args({"x-dead-letter-exchange": 5}))
queue_arg_dlrk_without_dlx = _channel_scenario(_bad_args({"x-dead-letter-routing-key": "k"}))
for _name in [n for n in list(globals()) if n.startswith("queue_arg_")]:
    globals()[_name].__name__ = _name


@_channel_scenario
def passive_default_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange="", type="direct", passive=True))


@_channel_scenario
def declare_default_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange="", type="direct", durable=True))


@_channel_scenario
def redeclare_amq_direct_as_is(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange="amq.direct", type="direct", durable=True))
    c.expect(spec.ExchangeDeclareOk)
    alive(c)


@_channel_scenario
def redeclare_amq_direct_not_durable(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDeclare(exchange="amq.direct", type="direct", durable=False))


@_channel_scenario
def delete_missing_amq_exchange(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDelete(exchange="amq.mqemu-missing"))


@_channel_scenario
def delete_default_exchange_itself(c: RawAMQP) -> None:
    c.method(1, spec.ExchangeDelete(exchange=""))


@_channel_scenario
def publish_to_trace_exchange(c: RawAMQP) -> None:
    c.method(1, spec.BasicPublish(exchange="amq.rabbitmq.trace", routing_key="x"))
    c.send(content_header(1, 0))


@_channel_scenario
def unbind_missing_everything(c: RawAMQP) -> None:
    c.method(1, spec.QueueUnbind(queue=_unique("missing"), exchange=_unique("missing"), routing_key="k"))
    c.expect(spec.QueueUnbindOk)
    c.method(1, spec.ExchangeUnbind(destination=_unique("missing"), source=_unique("missing"), routing_key="k"))
    c.expect(spec.ExchangeUnbindOk)
    alive(c)


@_channel_scenario
def headers_bind_bad_x_match(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue="", exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueBind(queue="", exchange="amq.headers", arguments={"x-match": "some"}))


@_channel_scenario
def channel_flow_inactive(c: RawAMQP) -> None:
    c.method(1, spec.ChannelFlow(active=False))


@_channel_scenario
def get_without_previous_queue(c: RawAMQP) -> None:
    c.method(1, spec.BasicGet(queue=""))


@_channel_scenario
def reject_unknown_tag(c: RawAMQP) -> None:
    c.method(1, spec.BasicReject(delivery_tag=3))


@_channel_scenario
def nack_unknown_tag_multiple(c: RawAMQP) -> None:
    c.method(1, spec.BasicNack(delivery_tag=5, multiple=True))


@_channel_scenario
def ack_all_when_nothing_unacked(c: RawAMQP) -> None:
    c.method(1, spec.BasicAck(delivery_tag=0, multiple=True))
    alive(c)


@_channel_scenario
def queue_inequivalent_args(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, arguments={"x-max-length": 10}))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True, arguments={"x-max-length": 20}))


@_channel_scenario
def queue_bad_argument(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue=_unique("q"), exclusive=True, arguments={"x-max-length": "ten"}))


@_channel_scenario
def quorum_not_durable(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue=_unique("q"), arguments={"x-queue-type": "quorum"}))


@_channel_scenario
def delete_if_empty(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.BasicPublish(exchange="", routing_key=name))
    c.send(content_header(1, 1) + body_frame(1, b"x"))
    c.method(1, spec.QueueDelete(queue=name, if_empty=True))


@_channel_scenario
def delete_if_unused(c: RawAMQP) -> None:
    name = _unique("q")
    c.method(1, spec.QueueDeclare(queue=name, exclusive=True))
    c.expect(spec.QueueDeclareOk)
    c.method(1, spec.BasicConsume(queue=name, consumer_tag="c1"))
    c.expect(spec.BasicConsumeOk)
    c.method(1, spec.QueueDelete(queue=name, if_unused=True))


@_channel_scenario
def ack_unknown_tag(c: RawAMQP) -> None:
    c.method(1, spec.BasicAck(delivery_tag=42))


@_channel_scenario
def internal_exchange_publish(c: RawAMQP) -> None:
    name = _unique("x")
    c.method(1, spec.ExchangeDeclare(exchange=name, type="fanout", internal=True, auto_delete=True))
    c.expect(spec.ExchangeDeclareOk)
    c.method(1, spec.QueueDeclare(queue="", exclusive=True))
    q = c.expect(spec.QueueDeclareOk).queue
    c.method(1, spec.QueueBind(queue=q, exchange=name))
    c.expect(spec.QueueBindOk)
    c.method(1, spec.BasicPublish(exchange=name, routing_key=""))
    c.send(content_header(1, 0))


@_channel_scenario
def user_id_mismatch(c: RawAMQP) -> None:
    from mqemu.protocols.amqp091.properties import encode_properties
    c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
    c.send(content_header(1, 0, props=encode_properties({"user_id": "someone-else"})))


def _expiration(value: str) -> Scenario:
    def body(c: RawAMQP) -> None:
        from mqemu.protocols.amqp091.properties import encode_properties
        c.method(1, spec.BasicPublish(exchange="", routing_key="nowhere"))
        c.send(content_header(1, 0, props=encode_properties({"expiration": value})))
    body.__name__ = f"expiration_{value}"
    return _channel_scenario(body)


expiration_not_an_integer = _expiration("abc")
expiration_negative = _expiration("-5")
expiration_over_ten_years = _expiration("315360000001")


@_channel_scenario
def tx_commit_without_select(c: RawAMQP) -> None:
    c.method(1, spec.TxCommit())


@_channel_scenario
def confirm_after_tx(c: RawAMQP) -> None:
    c.method(1, spec.TxSelect())
    c.expect(spec.TxSelectOk)
    c.method(1, spec.ConfirmSelect())


@_channel_scenario
def reuse_consumer_tag(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue="", exclusive=True))
    q = c.expect(spec.QueueDeclareOk).queue
    c.method(1, spec.BasicConsume(queue=q, consumer_tag="same"))
    c.expect(spec.BasicConsumeOk)
    c.method(1, spec.BasicConsume(queue=q, consumer_tag="same"))


@_channel_scenario
def exclusive_consumer_taken(c: RawAMQP) -> None:
    c.method(1, spec.QueueDeclare(queue="", exclusive=True))
    q = c.expect(spec.QueueDeclareOk).queue
    c.method(1, spec.BasicConsume(queue=q, consumer_tag="a", exclusive=True))
    c.expect(spec.BasicConsumeOk)
    c.method(1, spec.BasicConsume(queue=q, consumer_tag="b"))


@_channel_scenario
def reply_to_consumer_with_ack(c: RawAMQP) -> None:
    c.method(1, spec.BasicConsume(queue="amq.rabbitmq.reply-to", no_ack=False))


def exclusive_queue_other_connection(host: str, port: int) -> Outcome:
    with _opened(host, port) as owner, _opened(host, port) as other:
        name = _unique("excl")
        owner.method(1, spec.QueueDeclare(queue=name, exclusive=True))
        owner.expect(spec.QueueDeclareOk)
        other.method(1, spec.QueueDeclare(queue=name, passive=True))
        return other.outcome()


def exclusive_queue_consume_other_connection(host: str, port: int) -> Outcome:
    with _opened(host, port) as owner, _opened(host, port) as other:
        name = _unique("excl")
        owner.method(1, spec.QueueDeclare(queue=name, exclusive=True))
        owner.expect(spec.QueueDeclareOk)
        other.method(1, spec.BasicConsume(queue=name))
        return other.outcome()


# name -> (scenario, what mqemu answers: the Outcome key)
SCENARIOS: dict[str, tuple[Scenario, tuple]] = {}


def _add(fn: Scenario, expected: tuple) -> None:
    SCENARIOS[fn.__name__] = (fn, expected)


_add(bad_protocol_header, ("header", 0, 0, 0))
_add(http_request, ("header", 0, 0, 0))
_add(truncated_frame_then_eof, ("eof", 0, 0, 0))
_add(bad_frame_end, ("connection", 501, 0, 0))
_add(frame_over_frame_max, ("connection", 501, 0, 0))
_add(unknown_method, ("connection", 540, 60, 999))
_add(unknown_class, ("connection", 540, 77, 10))
_add(unknown_frame_type, ("connection", 501, 0, 0))
_add(method_on_unopened_channel, ("connection", 504, 50, 10))
_add(publish_before_channel_open, ("connection", 504, 60, 40))
_add(header_without_publish, ("connection", 505, 0, 0))
_add(body_without_header, ("connection", 505, 60, 40))
_add(body_without_publish, ("connection", 505, 0, 0))
_add(method_instead_of_header, ("connection", 505, 60, 40))
_add(header_wrong_class, ("connection", 505, 60, 40))
_add(bad_field_table_type, ("connection", 502, 50, 10))
_add(absurd_body_size, ("channel", 406, 60, 40))
_add(body_longer_than_header, ("connection", 501, 0, 0))
_add(heartbeat_on_channel, ("connection", 505, 0, 0))
_add(second_channel_open, ("connection", 504, 20, 10))
_add(channel_number_above_max, ("ok", 0, 0, 0))
_add(channel_count_over_max, ("connection", 530, 0, 0))
_add(connection_open_twice, ("connection", 504, 10, 40))
_add(header_on_channel_zero, ("connection", 505, 0, 0))
_add(method_instead_of_body, ("connection", 505, 60, 40))
_add(connection_method_on_channel, ("connection", 503, 10, 40))
_add(channel_method_on_channel_zero, ("connection", 504, 50, 10))
_add(immediate_publish, ("connection", 540, 60, 40))
_add(prefetch_size, ("connection", 540, 60, 10))
_add(unknown_vhost, ("connection", 530, 10, 40))
_add(wrong_password, ("connection", 403, 0, 0))
_add(frame_max_too_small, ("connection", 530, 10, 31))
_add(start_ok_over_frame_min, ("connection", 501, 0, 0))
_add(amqplain_nested_deep, ("connection", 502, 10, 11))
_add(passive_missing_queue, ("channel", 404, 50, 10))
_add(passive_missing_exchange, ("channel", 404, 40, 10))
_add(bind_missing_queue, ("channel", 404, 50, 20))
_add(publish_missing_exchange, ("channel", 404, 60, 40))
_add(consume_missing_queue, ("channel", 404, 60, 20))
_add(declare_reserved_exchange, ("channel", 403, 40, 10))
_add(declare_reserved_queue, ("channel", 403, 50, 10))
_add(delete_default_exchange, ("channel", 403, 40, 20))
_add(bind_default_exchange, ("channel", 403, 50, 20))
_add(unknown_exchange_type, ("connection", 503, 40, 10))  # RabbitMQ 3.x (4.x: channel 406)
_add(exchange_redeclare_other_type, ("channel", 406, 40, 10))
_add(queue_inequivalent_durable, ("channel", 406, 50, 10))
_add(exclusive_queue_durable_ignored, ("ok", 0, 0, 0))
_add(queue_inequivalent_args_missing, ("channel", 406, 50, 10))
_add(queue_inequivalent_args_added, ("channel", 406, 50, 10))
_add(queue_inequivalent_auto_delete, ("channel", 406, 50, 10))
_add(exclusive_queue_redeclared_shared, ("channel", 405, 50, 10))
_add(shared_queue_redeclared_exclusive, ("channel", 405, 50, 10))
for _fn in (queue_arg_ttl_string, queue_arg_max_length_float, queue_arg_max_length_negative, queue_arg_expires_zero,
            queue_arg_priority_too_large, queue_arg_overflow_bogus, queue_arg_type_bogus, queue_arg_sac_string,
            queue_arg_dlx_integer, queue_arg_dlrk_without_dlx):
    _add(_fn, ("channel", 406, 50, 10))
_add(passive_default_exchange, ("channel", 403, 40, 10))
_add(declare_default_exchange, ("channel", 403, 40, 10))
_add(redeclare_amq_direct_as_is, ("ok", 0, 0, 0))
_add(redeclare_amq_direct_not_durable, ("channel", 406, 40, 10))
_add(delete_missing_amq_exchange, ("channel", 403, 40, 20))
_add(delete_default_exchange_itself, ("channel", 403, 40, 20))
_add(publish_to_trace_exchange, ("channel", 403, 60, 40))
_add(unbind_missing_everything, ("ok", 0, 0, 0))
_add(headers_bind_bad_x_match, ("channel", 406, 50, 20))
_add(channel_flow_inactive, ("connection", 540, 20, 20))
_add(get_without_previous_queue, ("channel", 404, 60, 70))
_add(reject_unknown_tag, ("channel", 406, 60, 90))
_add(nack_unknown_tag_multiple, ("channel", 406, 60, 120))
_add(ack_all_when_nothing_unacked, ("ok", 0, 0, 0))
_add(queue_inequivalent_args, ("channel", 406, 50, 10))
_add(queue_bad_argument, ("channel", 406, 50, 10))
_add(quorum_not_durable, ("channel", 406, 50, 10))
_add(delete_if_empty, ("channel", 406, 50, 40))
_add(delete_if_unused, ("channel", 406, 50, 40))
_add(ack_unknown_tag, ("channel", 406, 60, 80))
_add(internal_exchange_publish, ("channel", 403, 60, 40))
_add(user_id_mismatch, ("channel", 406, 60, 40))
_add(expiration_not_an_integer, ("channel", 406, 60, 40))
_add(expiration_negative, ("channel", 406, 60, 40))
_add(expiration_over_ten_years, ("channel", 406, 60, 40))
_add(tx_commit_without_select, ("channel", 406, 90, 20))
_add(confirm_after_tx, ("channel", 406, 85, 10))
_add(reuse_consumer_tag, ("connection", 530, 60, 20))
_add(exclusive_consumer_taken, ("channel", 403, 60, 20))
_add(reply_to_consumer_with_ack, ("channel", 406, 60, 20))
_add(exclusive_queue_other_connection, ("channel", 405, 50, 10))
_add(exclusive_queue_consume_other_connection, ("channel", 405, 60, 20))

# Where mqemu deliberately differs from RabbitMQ 3.10: name -> (3.10's outcome key, why).
DELIBERATE = {
    "unknown_method": (("eof", 0, 0, 0), "RabbitMQ's reader crashes and drops the socket; mqemu sends a "
                       "clean 540 connection.close naming the class and method"),
    "unknown_class": (("eof", 0, 0, 0), "as unknown_method"),
    "bad_field_table_type": (("eof", 0, 0, 0), "RabbitMQ's reader crashes and drops the socket; mqemu sends "
                             "502 SYNTAX_ERROR, the spec's code for it"),
    "absurd_body_size": (("ok", 0, 0, 0), "RabbitMQ 3.10 checks max_message_size only once the whole body "
                         "has arrived (it waits for 2^62 octets); mqemu refuses at the header with the same "
                         "406 channel close so it never buffers"),
    "body_longer_than_header": (("ok", 0, 0, 0), "RabbitMQ 3.10's assembler goes below zero remaining octets "
                                "and waits for ever; mqemu closes with 501"),
    "frame_max_too_small": (("eof", 0, 0, 0), "RabbitMQ closes a failed handshake silently after 3 s (its "
                            "anti-DoS delay); mqemu sends 530 with the reason at once"),
    "start_ok_over_frame_min": (("eof", 0, 0, 0), "both refuse a frame over 4096 octets before tune-ok; "
                                "RabbitMQ drops the socket, mqemu sends 501 naming the size"),
    "amqplain_nested_deep": (("ok", 0, 0, 0), "RabbitMQ takes field tables nested to any depth that fits a "
                             "frame; mqemu refuses past 100 levels with 502 SYNTAX_ERROR (its decoder and "
                             "encoder recurse; no client nests that deep)"),
}
