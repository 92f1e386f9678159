"""Classic queues usable from every node (issue 13 item 4) over real node processes: a queue
lives on the node it was declared on, and publishes, consumers and basic.get on the other
nodes go through its home (``ha/clustering/remote.py``). Confirms wait for the home's "safe";
the home's death cancels the consumers elsewhere and nacks the publishes it did not
answer; a consumer's node dying returns its unacked deliveries, redelivered."""

from __future__ import annotations

import socket
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from cluster_helpers import api as _api, declared_everywhere, node_entry as _node

from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import PROTOCOL_HEADER, ContentFrames, FrameDecoder, MethodFrame, encode_method

pytestmark = pytest.mark.timeout(180)

NODES = ("node-1", "node-2", "node-3")
CLASSIC = {"x-queue-type": "classic"}  # the default type of this engine version may be quorum


def _port(c, name, protocol="amqp"):
    return _node(c.status(), name)["ports"][protocol]


def _pika(c, name):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", _port(c, name), credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1,
        socket_timeout=5, blocked_connection_timeout=5))


def _all_links_up(status):
    return all(state["out"] == "up" and state["in"] == "up"
               for n in status["nodes"] for state in (n.get("links") or {}).values()) and all(
        len(n.get("links") or {}) == len(NODES) - 1 for n in status["nodes"])


def _consume(c, node, queue, count, prefetch=10, timeout=20.0):
    """Consume ``count`` distinct messages through ``node``, acking each. A consumer the node
    cancels because a link was lost (on this loaded machine a stall past the links' 1 s timeout
    is one, and cancelling is right) is made again once the links are up; what it held comes
    back redelivered. Returns the deliveries in arrival order and whether that happened."""
    got, seen, cancelled = [], set(), False
    deadline = time.monotonic() + 120
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} of {count} arrived"
        conn = _pika(c, node)
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=prefetch)
            for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
                assert method is not None, f"only {len(seen)} of {count} arrived"
                got.append((method, props, body))
                seen.add(body)
                ch.basic_ack(method.delivery_tag)
                if len(seen) == count:
                    break
            else:
                cancelled = True
        except pika.exceptions.AMQPError:
            cancelled = True
        finally:
            if conn.is_open:
                conn.close()
        if len(seen) < count:
            c.wait_until(_all_links_up, what="the links up again")
    return got, cancelled


def _raw_replies(c, node, frames: bytes, count: int) -> list:
    """Open an AMQP connection and channel 1 on ``node`` with raw frames, send ``frames`` in
    one write (pipelined) and return the class names of the next ``count`` replies, in order."""
    sock = socket.create_connection(("127.0.0.1", _port(c, node)), timeout=10)
    dec = FrameDecoder(0)
    dec.feed(PROTOCOL_HEADER)  # a server's decoder: past the header it expects first
    dec.read_frames()
    got: list = []

    def read(n: int) -> None:
        while len(got) < n:
            data = sock.recv(65536)
            assert data, "the node closed the connection"
            dec.feed(data)
            for f in dec.read_frames():
                if isinstance(f, (MethodFrame, ContentFrames)):
                    got.append(type(f.method).__name__)
    try:
        sock.sendall(PROTOCOL_HEADER)
        read(1)  # connection.start
        sock.sendall(encode_method(0, spec.ConnectionStartOk(client_properties={}, mechanism="PLAIN",
                                                              response=b"\0guest\0guest", locale="en_US")))
        read(2)  # connection.tune
        sock.sendall(encode_method(0, spec.ConnectionTuneOk(channel_max=16, frame_max=131072, heartbeat=0))
                     + encode_method(0, spec.ConnectionOpen(virtual_host="/")) + encode_method(1, spec.ChannelOpen()))
        read(4)
        assert got[2:] == ["ConnectionOpenOk", "ChannelOpenOk"]
        sock.sendall(frames)
        read(4 + count)
        return got[4:]
    finally:
        sock.close()


def _first_arrivals(got):
    """The bodies in the order they first arrived; every later arrival is flagged redelivered."""
    firsts, seen = [], set()
    for method, _props, body in got:
        if body in seen:
            assert method.redelivered, f"{body!r} arrived again without the redelivered flag"
        else:
            seen.add(body)
            firsts.append(body)
    return firsts


def test_publish_on_one_node_consume_on_another_get_on_a_third(cluster):
    c = cluster
    home = _pika(c, "node-1")
    home.channel().queue_declare("orders", durable=True, arguments=CLASSIC)
    declared_everywhere(c, "orders")
    pub = _pika(c, "node-2")
    pch = pub.channel()
    pch.confirm_delivery()
    n = 100  # few: a stall of the loaded machine past the links' 1 s timeout cancels consumers (as it should)
    for i in range(n):  # each confirmed: on disk on node-1
        pch.basic_publish("", "orders", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
    # the counts seen from node-2 after the confirms are the home's
    ok = pch.queue_declare("orders", durable=True, passive=True).method
    assert (ok.message_count, ok.consumer_count) == (n, 0)
    # a basic.get on node-2 takes the head through node-1, and its ack settles it there
    method, props, body = pch.basic_get("orders")
    assert body == b"m0" and not method.redelivered and props.delivery_mode == 2
    assert method.message_count == n - 1
    pch.basic_ack(method.delivery_tag)
    # raw frames: a synchronous method pipelined behind a basic.get through the home is
    # answered after the get (AMQP's order on a channel), a no-ack get here (m1 is taken)
    replies = _raw_replies(c, "node-2", encode_method(1, spec.BasicGet(queue="orders", no_ack=True))
                           + encode_method(1, spec.QueueDeclare(queue="orders", durable=True, passive=True)), 2)
    assert replies == ["BasicGetOk", "QueueDeclareOk"]
    # a consumer on node-3 gets every other one, in order
    got, cancelled = _consume(c, "node-3", "orders", n - 2)
    assert _first_arrivals(got) == [f"m{i}".encode() for i in range(2, n)]
    assert cancelled or not any(m.redelivered for m, _p, _b in got)
    # exclusive use is the home's to check, across nodes (the queue is empty now)
    xconn = _pika(c, "node-3")
    xconn.channel().basic_consume("orders", lambda *a: None, exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        pub.channel().basic_consume("orders", lambda *a: None)
    assert refused.value.reply_code == 403
    assert refused.value.reply_text == "ACCESS_REFUSED - queue 'orders' in vhost '/' in exclusive use"
    xconn.close()
    pub.close()
    # nothing left on the home
    ok = home.channel().queue_declare("orders", durable=True, passive=True).method
    assert ok.message_count == 0
    home.close()
    # the management API of a node that holds a stand-in lists the queue
    code, shown = _api(c, "node-2", "GET", "queues/%2F/orders")
    assert code == 200 and shown["name"] == "orders" and shown["durable"] is True and shown["messages"] == 0


def test_the_home_killed_cancels_consumers_nacks_publishes_and_keeps_what_it_confirmed(cluster):
    c = cluster
    home = _pika(c, "node-1")
    home.channel().queue_declare("k", durable=True, arguments=CLASSIC)
    home.close()
    declared_everywhere(c, "k")
    con = _pika(c, "node-3")
    cch = con.channel()
    cch.basic_qos(prefetch_count=1)
    held = []
    tag = cch.basic_consume("k", lambda ch, m, p, b: held.append((m, b)))  # never acks
    pub = _pika(c, "node-2")
    pch = pub.channel()
    pch.confirm_delivery()
    for i in range(100):
        pch.basic_publish("", "k", f"k{i}".encode(), pika.BasicProperties(delivery_mode=2))
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        con.process_data_events(0.05)
    assert [b for _m, b in held] == [b"k0"]
    c.kill("node-1")
    c.wait_until(lambda s: _node(s, "node-1")["role"] == "down"
                 and all((_node(s, n)["links"].get("node-1") or {}).get("out") == "down" for n in ("node-2", "node-3")),
                 what="node-1 down, seen by the others")
    # the consumer on node-3 is cancelled (basic.cancel)
    deadline = time.monotonic() + 10
    while tag in cch.consumer_tags and time.monotonic() < deadline:
        con.process_data_events(0.05)
    assert tag not in cch.consumer_tags
    # a publish on node-2 to the queue whose home is down is nacked
    with pytest.raises(pika.exceptions.NackError):
        pch.basic_publish("", "k", b"lost", pika.BasicProperties(delivery_mode=2))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        pub.channel().queue_declare("k", durable=True, passive=True)
    assert gone.value.reply_code == 404 and "home node 'node-1'" in gone.value.reply_text
    con.close()
    c.start_node("node-1")
    c.wait_until(lambda s: _node(s, "node-1")["role"] == "member" and _all_links_up(s), what="node-1 back")
    # every confirmed message is there, the one delivered before the kill flagged redelivered; the
    # stand-in on node-2 has the counts node-1 sent when their link came up
    ok = pub.channel().queue_declare("k", durable=True, passive=True).method
    assert ok.message_count == 100
    got, _cancelled = _consume(c, "node-3", "k", 100)
    assert _first_arrivals(got) == [f"k{i}".encode() for i in range(100)]
    assert got[0][0].redelivered  # (mqemu's recovery flags every recovered message so)
    pub.close()


def test_a_consumers_node_killed_its_unacked_go_to_another_consumer_redelivered(cluster):
    c = cluster
    home = _pika(c, "node-1")
    hch = home.channel()
    hch.queue_declare("work", durable=True, arguments=CLASSIC)
    declared_everywhere(c, "work")
    a = _pika(c, "node-3")
    ach = a.channel()
    ach.basic_qos(prefetch_count=5)
    a_got = []
    ach.basic_consume("work", lambda ch, m, p, body: a_got.append(body))  # never acks
    b = _pika(c, "node-2")
    bch = b.channel()
    bch.basic_qos(prefetch_count=5)
    b_got = []
    bch.basic_consume("work", lambda ch, m, p, body: b_got.append((m, body)))
    hch.confirm_delivery()
    for i in range(10):
        hch.basic_publish("", "work", f"w{i}".encode(), pika.BasicProperties(delivery_mode=2))
    deadline = time.monotonic() + 10
    while (len(a_got) < 5 or len(b_got) < 5) and time.monotonic() < deadline:
        a.process_data_events(0.02)
        b.process_data_events(0.02)
    assert len(a_got) == 5 and len(b_got) == 5
    c.kill("node-3")
    c.wait_until(lambda s: (_node(s, "node-1")["links"].get("node-3") or {}).get("in") == "down",
                 what="node-1 lost node-3")
    for m, _body in list(b_got):
        bch.basic_ack(m.delivery_tag)
    deadline = time.monotonic() + 10
    while len(b_got) < 10 and time.monotonic() < deadline:
        b.process_data_events(0.05)
        for m, _body in b_got[5:]:
            if not getattr(m, "_acked", False):
                bch.basic_ack(m.delivery_tag)
                m._acked = True
    again = b_got[5:]
    assert sorted(body for _m, body in again) == sorted(a_got)
    assert all(m.redelivered for m, _body in again)
    b.close()
    home.close()


class _StompInbox(stomp.ConnectionListener):
    def __init__(self):
        self.frames = []
        self.receipts = []

    def on_message(self, frame):
        self.frames.append(frame)

    def on_receipt(self, frame):
        self.receipts.append(frame.headers["receipt-id"])

    def on_error(self, frame):
        self.receipts.append(("ERROR", frame.headers, frame.body))


def _until(what, condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.02)


def test_stomp_mqtt_and_amqp_across_nodes(cluster):
    from paho.mqtt.enums import CallbackAPIVersion

    c = cluster
    home = _pika(c, "node-1")
    hch = home.channel()
    hch.queue_declare("from-stomp", durable=True, arguments=CLASSIC)
    hch.queue_declare("from-mqtt", durable=True, arguments=CLASSIC)
    hch.queue_bind("from-mqtt", "amq.topic", "sensors.#")
    home.close()
    declared_everywhere(c, "from-stomp")
    declared_everywhere(c, "from-mqtt")
    # STOMP on node-2 sends (its receipt: safe on node-1); pika on node-3 gets it
    sconn = stomp.Connection12([("127.0.0.1", _port(c, "node-2", "stomp"))], vhost="/", heartbeats=(0, 0))
    sinbox = _StompInbox()
    sconn.set_listener("inbox", sinbox)
    sconn.connect("guest", "guest", wait=True)
    sconn.send("/amq/queue/from-stomp", "hello from stomp", headers={"receipt": "r1", "persistent": "true"})
    _until("the receipt", lambda: sinbox.receipts == ["r1"])
    con = _pika(c, "node-3")
    method, props, body = con.channel().basic_get("from-stomp", auto_ack=True)
    assert body == b"hello from stomp"
    # MQTT on node-3 publishes at QoS 1 (its PUBACK: safe on node-1); STOMP on node-2 consumes
    m = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="cross-node-pub")
    m.connect("127.0.0.1", _port(c, "node-3", "mqtt"))
    m.loop_start()
    try:
        m.publish("sensors/kitchen", b"21.5C", qos=1).wait_for_publish(10)
    finally:
        m.disconnect()
        m.loop_stop()
    sconn.subscribe("/amq/queue/from-mqtt", id="s1", ack="client-individual", headers={"receipt": "sub"})
    _until("a message from MQTT", lambda: sinbox.frames)
    frame = sinbox.frames[0]
    assert frame.body == "21.5C"
    sconn.ack(frame.headers["ack"], receipt="acked")
    _until(lambda: f"the ack's receipt: {sinbox.receipts}", lambda: "acked" in sinbox.receipts)
    sconn.disconnect()
    ok = con.channel().queue_declare("from-mqtt", durable=True, passive=True).method
    assert ok.message_count == 0
    con.close()
