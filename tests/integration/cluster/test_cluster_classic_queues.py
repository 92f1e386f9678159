"""Classic queues usable from every node (issue 13 item 4) over real node processes: a queue
lives on the node it was declared on, and publishes, consumers and basic.get on the other
nodes go through its home (``ha/clustering/remote.py``). Confirms wait for the home's "safe";
the home's death cancels the consumers elsewhere and nacks the publishes it did not
answer; a consumer's node dying returns its unacked deliveries, redelivered."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp

pytestmark = pytest.mark.timeout(180)

NODES = ("node-1", "node-2", "node-3")
CLASSIC = {"x-queue-type": "classic"}  # the default type of this engine version may be quorum


def _node(status, name):
    (entry,) = [n for n in status["nodes"] if n["name"] == name]
    return entry


def _port(c, name, protocol="amqp"):
    return _node(c.status(), name)["ports"][protocol]


def _pika(c, name):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", _port(c, name), credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1,
        socket_timeout=5, blocked_connection_timeout=5))


def _leader(status):
    return (status.get("metadata") or {}).get("leader")


def _all_links_up(status):
    return all(state["out"] == "up" and state["in"] == "up"
               for n in status["nodes"] for state in (n.get("links") or {}).values()) and all(
        len(n.get("links") or {}) == len(NODES) - 1 for n in status["nodes"])


@pytest.fixture
def cluster(mqemu_cluster):
    mqemu_cluster.wait_until(lambda s: _leader(s) is not None and _all_links_up(s) and all(
        (n["metadata"] or {}).get("leader") == _leader(s) for n in s["nodes"]),
        what="a metadata leader every node names, every link up")
    return mqemu_cluster


def _declared_everywhere(c, name, durable=True):
    """Wait until a passive declare of ``name`` works on every node."""
    for node in NODES:
        def there(_s, node=node):
            conn = _pika(c, node)
            try:
                conn.channel().queue_declare(name, durable=durable, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker:
                return False
            finally:
                if conn.is_open:
                    conn.close()
        c.wait_until(there, what=f"{name} on {node}")


def _consume(conn, queue, count, prefetch=10, ack=True, timeout=20.0):
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"only {len(got)} of {count} arrived"
        got.append((method, props, body))
        if ack:
            ch.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    ch.cancel()
    return ch, got


def test_publish_on_one_node_consume_on_another_get_on_a_third(cluster):
    c = cluster
    home = _pika(c, "node-1")
    home.channel().queue_declare("orders", durable=True, arguments=CLASSIC)
    _declared_everywhere(c, "orders")
    pub = _pika(c, "node-2")
    pch = pub.channel()
    pch.confirm_delivery()
    n = 300
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
    # a consumer on node-3 gets every other one, in order
    con = _pika(c, "node-3")
    _ch, got = _consume(con, "orders", n - 1)
    assert [b for _m, _p, b in got] == [f"m{i}".encode() for i in range(1, n)]
    assert not any(m.redelivered for m, _p, _b in got)
    for conn in (con, pub):
        conn.close()
    # nothing left on the home
    ok = home.channel().queue_declare("orders", durable=True, passive=True).method
    assert ok.message_count == 0
    home.close()
