"""Malformed, truncated, oversized and out-of-order packets over raw sockets: each gets its
reason code or a close, and another client is not affected."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.timeout(30)

CONNECT_311 = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02id"
CONNECT_5 = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x02id"


def dial(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = s.recv(4096)
        except (TimeoutError, ConnectionResetError):
            return out
        if not chunk:
            return out
        out += chunk


def session(port: int, hello: bytes, *packets: bytes) -> bytes:
    s = dial(port)
    try:
        s.sendall(hello + b"".join(packets))
        s.shutdown(socket.SHUT_WR)  # EOF after the packets: the broker answers, then closes
        return read_all(s)
    finally:
        s.close()


@pytest.mark.parametrize("packets, expected", [
    ((b"\x30\x05\x00\x01t",), b""),                      # PUBLISH before CONNECT: close
    ((CONNECT_311, CONNECT_311), b"\x20\x02\x00\x00"),    # second CONNECT: close after CONNACK
    ((CONNECT_311, b"\x30\xff\xff\xff\xff\x01"), b"\x20\x02\x00\x00"),  # bad remaining length
    ((CONNECT_311, b"\x36\x03\x00\x01t"), b"\x20\x02\x00\x00"),  # QoS 3
    ((b"\x10\x0c\x00\x02hj\x04\x02\x00\x00\x00\x02id",), b"\x20\x02\x00\x01"),  # unknown protocol
])
def test_v311_errors_close(mqemu_server, packets, expected) -> None:
    assert session(mqemu_server.ports["mqtt"], b"", *packets) == expected


@pytest.mark.parametrize("packet, code", [
    (b"\x30\x08\x00\x01t\x03\x23\x00\x00x", 0x94),          # topic alias 0
    (b"\x30\x05\x00\x01t\x02\x26", 0x81),                    # truncated property
    (b"\x30\x06\x00\x01t\x02\x11\x00", 0x81),               # a property PUBLISH may not carry
    (b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x00\x00\x00\x02id", 0x82),  # second CONNECT
    (b"\xd0\x00", 0x82),                                      # PINGRESP from a client
])
def test_v5_errors_get_disconnect_reason(mqemu_server, packet, code) -> None:
    out = session(mqemu_server.ports["mqtt"], CONNECT_5, packet)
    assert out[0] == 0x20  # CONNACK first
    rest = out[2 + out[1]:]
    assert rest[0] == 0xE0 and rest[2] == code, rest


def test_v5_malformed_connect_gets_connack_reason(mqemu_server) -> None:
    bad = b"\x10\x10\x00\x04MQTT\x05\x02\x00\x00\x03\x01\x01\x01\x00\x00"
    out = session(mqemu_server.ports["mqtt"], bad)
    assert out[:1] == b"\x20" and out[3] == 0x81


def test_oversized_packet_before_connect(mqemu_server) -> None:
    # RabbitMQ's 64 KiB limit before CONNECT: refused from the fixed header alone.
    assert session(mqemu_server.ports["mqtt"], b"\x10\xff\xff\x7f") == b""


def test_truncated_packet_then_eof_does_not_affect_others(mqemu_server) -> None:
    port = mqemu_server.ports["mqtt"]
    good = dial(port)
    good.sendall(CONNECT_311.replace(b"id", b"gd") + b"\x82\x06\x00\x01\x00\x01t\x00")  # SUBSCRIBE t QoS 0
    assert good.recv(4) == b"\x20\x02\x00\x00"
    assert good.recv(5) == b"\x90\x03\x00\x01\x00"
    for junk in (b"\x30\x10\x00\x01", b"\x00\x00", b"\xf0\x00"):
        session(port, CONNECT_311, junk)
    pub = dial(port)
    pub.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02ix" + b"\x30\x05\x00\x01tok")
    assert pub.recv(4) == b"\x20\x02\x00\x00"
    assert good.recv(7) == b"\x30\x05\x00\x01tok"
    pub.close()
    good.close()
