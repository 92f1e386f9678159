"""STOMP against a running node: stomp.py 1.0/1.1/1.2, raw sockets with bad input, and
cross-protocol with pika. Each test has a timeout; the node listens on port 0."""

from __future__ import annotations

import socket
import time

import pika
import pytest
import stomp
from stomp_inbox import Inbox

pytestmark = pytest.mark.timeout(20)


def connect(cls, port: int, **kwargs):
    conn = cls([("127.0.0.1", port)], **kwargs)
    listener = Inbox()
    conn.set_listener("c", listener)
    conn.connect("guest", "guest", wait=True)
    return conn, listener


# -- raw sockets ----------------------------------------------------------------------------
def raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def read_until_closed(s: socket.socket) -> bytes:
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


CONNECT = b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00"


@pytest.mark.parametrize("bad, message", [
    (CONNECT + CONNECT, b"message:Already connected"),
    (b"SEND\ndestination:/queue/x\n\nhi\x00", b"message:Illegal command"),
    (CONNECT + b"ACK\nid:T_1@@s@@42\nreceipt:r7\n\n\x00", b"message:Subscription not found"),
    (CONNECT + b"SEND\ndestination:/queue/x\nbad:a\\tb\nreceipt:r7\n\n\x00", b"message:Undefined escape sequence"),
    (CONNECT + b"SEND\ndestination:/queue/x\ncontent-length:1\nreceipt:r7\n\nhello\x00",
     b"message:Body longer than content-length"),
    (CONNECT + b"BOGUS\nreceipt:r7\n\n\x00", b"message:Bad command"),
    (CONNECT + b"SEND\nreceipt:r7\n\nx\x00", b"message:Missing destination"),
    (CONNECT + b"SEND\ndestination:/queue/x\ncontent-length:99999999\n\n", b"message:Frame too large"),
])
def test_bad_input_gets_error_and_spares_others(mqemu_server, bad, message):
    port = mqemu_server.ports["stomp"]
    other, listener = connect(stomp.Connection12, port, vhost="/")
    s = raw(port)
    s.sendall(bad)
    s.shutdown(socket.SHUT_WR)  # most refusals leave the connection open, as on RabbitMQ
    out = read_until_closed(s)
    s.close()
    err = out[out.index(b"ERROR\n"):]
    assert message in err
    assert b"receipt-id" not in err  # RabbitMQ writes none in ERROR frames
    other.subscribe("/queue/spared", id="1", ack="auto")
    other.send("/queue/spared", "still here")
    assert listener.messages.get(timeout=5).body == "still here"
    other.disconnect()


def test_truncated_frame_then_eof_leaves_broker_working(mqemu_server):
    port = mqemu_server.ports["stomp"]
    s = raw(port)
    s.sendall(CONNECT + b"SEND\ndestination:/queue/t\ncontent-length:10\n\nabc")
    s.shutdown(socket.SHUT_WR)
    read_until_closed(s)  # the broker closes its side; what it flushed first may vary
    s.close()
    conn, listener = connect(stomp.Connection11, port)
    conn.subscribe("/queue/t", id="1")
    conn.send("/queue/t", "ok")
    assert listener.messages.get(timeout=5).body == "ok"
    conn.disconnect()


def test_heart_beats_keep_an_idle_connection(mqemu_server):
    port = mqemu_server.ports["stomp"]
    s = raw(port)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,200\n\n\x00")
    data = b""
    deadline = time.monotonic() + 5
    while data.count(b"\n") < 12 and time.monotonic() < deadline:
        data += s.recv(4096)
    assert data.startswith(b"CONNECTED") and data.endswith(b"\n")
    s.close()


# -- stomp.py, every version ----------------------------------------------------------------
@pytest.mark.parametrize("cls", [stomp.Connection10, stomp.Connection11, stomp.Connection12])
def test_stomp_py_versions_round_trip(mqemu_server, cls):
    port = mqemu_server.ports["stomp"]
    kwargs = {"vhost": "/"} if cls is stomp.Connection12 else {}
    conn, listener = connect(cls, port, **kwargs)
    dest = f"/queue/round-{cls.__name__}"
    conn.subscribe(dest, id="7", ack="client")
    conn.send(dest, "héllo", content_type="text/plain", headers={"k": "a:b"})
    msg = listener.messages.get(timeout=5)
    assert msg.body == "héllo"
    assert msg.headers["content-type"] == "text/plain"
    if cls is stomp.Connection12:
        conn.ack(msg.headers["ack"])
    elif cls is stomp.Connection11:
        conn.ack(msg.headers["message-id"], msg.headers["subscription"])
    else:
        conn.ack(msg.headers["message-id"])
    conn.disconnect(receipt="bye")
    q = mqemu_server.broker.vhosts["/"].queues[dest[7:]]
    assert q.unacked == 0 and not q.ready


def test_topic_fan_out_and_temp_queue_reply(mqemu_server):
    port = mqemu_server.ports["stomp"]
    a, la = connect(stomp.Connection12, port, vhost="/")
    b, lb = connect(stomp.Connection12, port, vhost="/")
    a.subscribe("/topic/news.*", id="1", receipt="r")
    b.subscribe("/topic/news.sport", id="1", receipt="r")
    la.receipt("r")
    lb.receipt("r")
    a.send("/topic/news.sport", "goal", headers={"reply-to": "/temp-queue/answers"})
    got_a, got_b = la.messages.get(timeout=5), lb.messages.get(timeout=5)
    assert got_a.body == got_b.body == "goal"
    assert got_b.headers["destination"] == "/topic/news.sport"
    reply_to = got_b.headers["reply-to"]
    assert reply_to.startswith("/reply-queue/amq.gen-")
    b.send(reply_to, "thanks")
    reply = la.messages.get(timeout=5)
    assert reply.body == "thanks" and reply.headers["subscription"] == "/temp-queue/answers"
    a.disconnect()
    b.disconnect()


def test_activemq_flavour_wildcards_selector_and_headers(mqemu_start):
    node = mqemu_start(engine="activemq")
    port = node.ports["stomp"]
    conn, listener = connect(stomp.Connection12, port, vhost="ignored-by-activemq")
    conn.subscribe("/topic/prices.>", id="1", receipt="r1")
    conn.subscribe("/queue/orders", id="2", headers={"selector": "amount > 10"}, receipt="r2")
    listener.receipt("r1")
    listener.receipt("r2")
    conn.send("/topic/prices.eu.fr", "p1", headers={"priority": "7"})
    msg = listener.messages.get(timeout=5)
    assert msg.body == "p1" and msg.headers["destination"] == "/topic/prices.eu.fr"
    assert msg.headers["priority"] == "7" and msg.headers["message-id"].startswith("ID:")
    conn.send("/queue/orders", "small", headers={"amount": "5"})
    conn.send("/queue/orders", "big", headers={"amount": "50"})
    assert listener.messages.get(timeout=5).body == "big"
    conn.disconnect()


# -- cross-protocol -------------------------------------------------------------------------
def test_pika_to_stomp_and_back(mqemu_server):
    params = pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"])
    amqp = pika.BlockingConnection(params)
    ch = amqp.channel()
    ch.queue_declare("cross", durable=True)
    ch.basic_publish("", "cross", b"from-amqp", pika.BasicProperties(
        content_type="application/json", correlation_id="c1", headers={"h1": "v1", "n": 3},
        delivery_mode=2))
    conn, listener = connect(stomp.Connection12, mqemu_server.ports["stomp"], vhost="/")
    conn.subscribe("/queue/cross", id="1")
    msg = listener.messages.get(timeout=5)
    assert msg.body == "from-amqp"
    assert (msg.headers["content-type"], msg.headers["correlation-id"], msg.headers["h1"],
            msg.headers["n"], msg.headers["persistent"]) == ("application/json", "c1", "v1", "3", "true")
    conn.send("/queue/back", "from-stomp", content_type="text/plain", headers={"x-app": "yes"},
              receipt="sent")
    listener.receipt("sent")
    method, props, body = ch.basic_get("back", auto_ack=True)
    assert body == b"from-stomp"
    assert props.content_type == "text/plain" and props.headers["x-app"] == "yes"
    conn.disconnect()
    amqp.close()
