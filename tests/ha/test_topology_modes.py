"""Topologies other than the default ActiveMQ pair: the RabbitMQ engine as a plain
active/standby pair, and a single node, each node its own process behind its proxies."""

from __future__ import annotations

import socket

import pika
import pytest
from test_active_standby import _amqp_connect

pytestmark = pytest.mark.timeout(120)


def test_a_rabbitmq_engine_pair_fails_over_with_every_confirmed_message(mqemu_topology):
    pair = mqemu_topology(mode="active-standby", engine="rabbitmq")
    st = pair.status()
    assert st["engine"] == "rabbitmq" and [n["role"] for n in st["nodes"]] == ["active", "standby"]
    conn = _amqp_connect(pair.endpoints("amqp"))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("orders", durable=True)
    for i in range(20):  # each returns once confirmed
        ch.basic_publish("", "orders", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    pair.kill("active")
    pair.wait_for_role("node-2", "active")
    with pytest.raises(pika.exceptions.AMQPError):
        ch.basic_publish("", "orders", b"after the kill")  # that connection died with its node
    conn = _amqp_connect(pair.endpoints("amqp"))
    ch = conn.channel()
    got = []
    for method, _props, body in ch.consume("orders", auto_ack=True, inactivity_timeout=1):
        if method is None:  # a second without a delivery: the queue is drained
            break
        got.append(int(body))
    assert got == list(range(20))
    conn.close()
    node1 = pair.status()["nodes"][0]
    assert node1["role"] == "down"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", node1["ports"]["amqp"]), timeout=5).close()
    pair.start_node("node-1")
    assert pair.wait_for_role("node-1", "standby")["name"] == "node-1"  # the old active rejoins as standby


def test_single_mode_is_one_node_behind_its_proxies(mqemu_topology):
    t = mqemu_topology(mode="single")
    st = t.status()
    assert (st["mode"], st["engine"], st["data_dir"]) == ("single", "rabbitmq", None)
    (node,) = st["nodes"]
    assert node["role"] == "active" and sorted(node["ports"]) == ["amqp", "mqtt", "stomp"]
    _amqp_connect(t.endpoints("amqp")).close()
    t.restart("node-1")
    assert t.wait_for_role("node-1", "active")["pid"] != node["pid"]
    _amqp_connect(t.endpoints("amqp")).close()
