"""A clean close the client asks for (AMQP connection.close, STOMP DISCONNECT with a receipt,
MQTT DISCONNECT) while more of its bytes are still on the way: the broker sends its reply,
then reads and discards until the client hangs up, so the client's writes never meet a
reset and it always reads the reply (RabbitMQ's reader does the same)."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.timeout(30)

AMQP_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
TRAILER = 512 * 1024  # written after the close, in one sendall


def _dial(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_until(s: socket.socket, marker: bytes) -> bytes:
    got = b""
    while marker not in got:
        chunk = s.recv(65536)
        assert chunk, f"EOF before {marker!r}; got {got[-80:]!r}"
        got += chunk
    return got


def _hang_up_and_expect_eof(s: socket.socket) -> None:
    s.shutdown(socket.SHUT_WR)
    while True:
        chunk = s.recv(65536)  # the broker closes once it sees our EOF (timeout: 5 s)
        if not chunk:
            return


def test_amqp_close_ok_reaches_a_client_still_writing(mqemu_server):
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
    from amqp_raw import RawAMQP

    from mqemu.protocols.amqp091 import spec
    from mqemu.protocols.amqp091.codec import encode_method

    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.send(encode_method(0, spec.ConnectionClose(reply_code=200, reply_text="bye")))
        c.send(AMQP_HEARTBEAT * (TRAILER // len(AMQP_HEARTBEAT)))
        assert c.expect(spec.ConnectionCloseOk) is not None
        _hang_up_and_expect_eof(c.sock)


def test_stomp_receipt_reaches_a_client_still_writing(mqemu_server):
    s = _dial(mqemu_server.ports["stomp"])
    try:
        s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0")
        _read_until(s, b"\0")
        s.sendall(b"DISCONNECT\nreceipt:bye\n\n\0")
        s.sendall(b"\n" * TRAILER)  # heart-beat EOLs
        assert b"receipt-id:bye" in _read_until(s, b"\0")
        _hang_up_and_expect_eof(s)
    finally:
        s.close()


def test_mqtt_disconnect_then_more_bytes_is_no_reset(mqemu_server):
    s = _dial(mqemu_server.ports["mqtt"])
    try:
        s.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x00\x00\x02id")
        assert _read_until(s, b"\x20\x02\x00\x00").startswith(b"\x20\x02")
        s.sendall(b"\xe0\x00")  # DISCONNECT
        s.sendall(b"\xc0\x00" * (TRAILER // 2))  # PINGREQs that were already on their way
        _hang_up_and_expect_eof(s)
    finally:
        s.close()



def test_a_disconnected_stomp_clients_unacked_message_is_requeued_while_its_socket_lingers(mqemu_server):
    """The session ends at DISCONNECT, not when the socket does: what it held goes back to the
    queue at once for the next consumer."""
    port = mqemu_server.ports["stomp"]
    hello = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\0"
    first, second = _dial(port), _dial(port)
    try:
        first.sendall(hello)
        _read_until(first, b"\0")
        first.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/linger\nack:client-individual\n\n\0"
                      b"SEND\ndestination:/queue/linger\n\nheld\0")
        assert b"\n\nheld\0" in _read_until(first, b"held\0")
        first.sendall(b"DISCONNECT\nreceipt:bye\n\n\0")
        _read_until(first, b"receipt-id:bye")  # the socket stays open: we do not hang up
        second.sendall(hello)
        _read_until(second, b"\0")
        second.sendall(b"SUBSCRIBE\nid:1\ndestination:/queue/linger\n\n\0")
        assert b"\n\nheld\0" in _read_until(second, b"held\0")
    finally:
        first.close()
        second.close()
