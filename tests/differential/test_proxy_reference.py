"""The HA proxies in front of the reference brokers and of mqemu: the same client scenario
through a proxy (a round trip, then ``disable()`` while connected, then a reconnect attempt)
must look the same to the client on both. Skips without ``MQEMU_REF_AMQP`` (RabbitMQ) or
``MQEMU_REF_ACTIVEMQ_STOMP`` (ActiveMQ)."""

from __future__ import annotations

import os
import queue
import threading
import time
from urllib.parse import urlparse

import pika
import pytest
import stomp
import trio

from mqemu.ha.node import open_node
from mqemu.ha.proxy import open_proxy

pytestmark = pytest.mark.timeout(60)


def amqp_scenario(port: int, ready: threading.Event, disabled: threading.Event) -> tuple:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"via proxy", mandatory=True)
    body = next(ch.consume(q, auto_ack=True, inactivity_timeout=5))[2]
    ready.set()
    assert disabled.wait(5)
    lost = "still open"
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    except pika.exceptions.AMQPConnectionError as e:
        lost = type(e).__name__
    try:
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, connection_attempts=1))
        again = "connected"
    except pika.exceptions.AMQPConnectionError as e:
        again = type(e).__name__
    return body, lost, again


def stomp_scenario(port: int, ready: threading.Event, disabled: threading.Event) -> tuple:
    got: queue.Queue = queue.Queue()
    gone = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            got.put(frame.body)

        def on_disconnected(self) -> None:
            gone.set()

    conn = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, vhost="/")
    conn.set_listener("l", Listener())
    conn.connect("guest", "guest", wait=True)
    conn.subscribe("/queue/mqemu-proxy-ref", id="1", ack="auto")
    conn.send("/queue/mqemu-proxy-ref", "via proxy", receipt="r")
    body = got.get(timeout=5)
    ready.set()
    assert disabled.wait(5)
    lost = "disconnected" if gone.wait(5) else "still open"
    again = stomp.Connection12([("127.0.0.1", port)], reconnect_attempts_max=1, vhost="/")
    try:
        again.connect("guest", "guest", wait=True)
        result = "connected"
        again.disconnect()
    except stomp.exception.ConnectFailedException:
        result = "ConnectFailedException"
    return body, lost, result


async def through_proxy(scenario, upstream: tuple[str, int]) -> tuple:
    async with open_proxy(upstream) as proxy:
        ready, disabled = threading.Event(), threading.Event()
        out: list[tuple] = []
        async with trio.open_nursery() as n:
            async def client() -> None:
                out.append(await trio.to_thread.run_sync(scenario, proxy.listen_port, ready, disabled))
            n.start_soon(client)
            assert await trio.to_thread.run_sync(ready.wait, 10)
            proxy.disable()
            disabled.set()
        return out[0]


async def test_amqp_through_a_proxy_as_on_rabbitmq() -> None:
    url = os.environ.get("MQEMU_REF_AMQP")
    if not url:
        pytest.skip("MQEMU_REF_AMQP is not set (no reference RabbitMQ)")
    ref = urlparse(url)
    with trio.fail_after(40):
        theirs = await through_proxy(amqp_scenario, (ref.hostname or "127.0.0.1", ref.port or 5672))
        async with open_node(ports={"stomp": "off", "mqtt": "off"}) as node:
            ours = await through_proxy(amqp_scenario, ("127.0.0.1", node.ports["amqp"]))
    assert theirs == (b"via proxy", "StreamLostError", "AMQPConnectionError")
    assert ours == theirs


async def test_stomp_through_a_proxy_as_on_activemq() -> None:
    addr = os.environ.get("MQEMU_REF_ACTIVEMQ_STOMP")
    if not addr:
        pytest.skip("MQEMU_REF_ACTIVEMQ_STOMP is not set (no reference ActiveMQ)")
    host, _, port = addr.rpartition(":")
    with trio.fail_after(40):
        theirs = await through_proxy(stomp_scenario, (host, int(port)))
        async with open_node(engine="activemq", ports={"amqp": "off", "mqtt": "off"}) as node:
            ours = await through_proxy(stomp_scenario, ("127.0.0.1", node.ports["stomp"]))
    assert theirs == ("via proxy", "disconnected", "ConnectFailedException")
    assert ours == theirs
