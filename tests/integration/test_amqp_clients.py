"""Other AMQP 0-9-1 clients against mqemu: aio-pika (asyncio), kombu, and pika's
SelectConnection and asyncio adapters. pytest-trio's trio mode is on, so asyncio code runs
under ``asyncio.run`` inside plain synchronous tests."""

from __future__ import annotations

import asyncio

import aio_pika
import kombu
import pika
from pika.adapters.asyncio_connection import AsyncioConnection


def test_aio_pika_round_trip(mqemu_server):
    url = f"amqp://guest:guest@127.0.0.1:{mqemu_server.ports['amqp']}/"

    async def main():
        conn = await aio_pika.connect_robust(url, timeout=5)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            await ch.set_qos(prefetch_count=5)
            x = await ch.declare_exchange("aio.x", aio_pika.ExchangeType.TOPIC, auto_delete=True)
            q = await ch.declare_queue("", exclusive=True)
            await q.bind(x, "orders.#")
            for i in range(10):
                await x.publish(aio_pika.Message(str(i).encode(), headers={"n": i}), routing_key=f"orders.{i}")
            got = []
            async with q.iterator() as it:
                async for msg in it:
                    async with msg.process():
                        got.append((msg.body, msg.headers["n"], msg.routing_key))
                    if len(got) == 10:
                        break
            return got

    got = asyncio.run(asyncio.wait_for(main(), 20))
    assert got == [(str(i).encode(), i, f"orders.{i}") for i in range(10)]


def test_aio_pika_channel_error_then_new_channel(mqemu_server):
    url = f"amqp://guest:guest@127.0.0.1:{mqemu_server.ports['amqp']}/"

    async def main():
        conn = await aio_pika.connect(url, timeout=5)
        async with conn:
            ch = await conn.channel()
            try:
                await ch.declare_queue("missing-q", passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity as e:
                err = str(e)
            else:
                err = None
            ch2 = await conn.channel()
            q = await ch2.declare_queue("", exclusive=True)
            return err, q.name

    err, name = asyncio.run(asyncio.wait_for(main(), 20))
    assert "NOT_FOUND - no queue 'missing-q' in vhost '/'" in err
    assert name.startswith("amq.gen-")


def test_kombu_producer_consumer(mqemu_server):
    url = f"amqp://guest:guest@127.0.0.1:{mqemu_server.ports['amqp']}//"
    exchange = kombu.Exchange("kombu.x", type="direct", auto_delete=True)
    queue = kombu.Queue("kombu.q", exchange, routing_key="task", auto_delete=True)
    got = []
    with kombu.Connection(url, connect_timeout=5) as conn:
        with conn.Consumer(queue, callbacks=[lambda body, msg: (got.append(body), msg.ack())], accept=["json"]):
            producer = conn.Producer(serializer="json")
            for i in range(3):
                producer.publish({"n": i}, exchange=exchange, routing_key="task", declare=[queue])
            while len(got) < 3:
                conn.drain_events(timeout=5)
    assert got == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_kombu_simple_queue(mqemu_server):
    url = f"amqp://guest:guest@127.0.0.1:{mqemu_server.ports['amqp']}//"
    with kombu.Connection(url, connect_timeout=5) as conn:
        q = conn.SimpleQueue("kombu.simple", queue_opts={"auto_delete": True})
        q.put({"hello": "world"})
        msg = q.get(block=True, timeout=5)
        assert msg.payload == {"hello": "world"}
        msg.ack()
        q.close()


def _select_round_trip(connection_class, port, ioloop=None):
    result = {}

    def on_open(conn):
        conn.channel(on_open_callback=on_channel)

    def on_channel(ch):
        ch.queue_declare("", exclusive=True, callback=lambda frame: on_declared(ch, frame.method.queue))

    def on_declared(ch, q):
        ch.basic_consume(q, lambda c, m, p, b: on_message(c, b), auto_ack=True)
        ch.basic_publish("", q, b"async hello")

    def on_message(ch, body):
        result["body"] = body
        ch.connection.close()

    kwargs = dict(parameters=pika.ConnectionParameters("127.0.0.1", port), on_open_callback=on_open,
                  on_open_error_callback=lambda c, e: result.setdefault("error", e),
                  on_close_callback=lambda c, r: c.ioloop.stop())
    if ioloop is not None:
        kwargs["custom_ioloop"] = ioloop
    conn = connection_class(**kwargs)
    conn.ioloop.call_later(10, conn.ioloop.stop)
    return conn, result


def test_pika_select_connection(mqemu_server):
    conn, result = _select_round_trip(pika.SelectConnection, mqemu_server.ports["amqp"])
    conn.ioloop.start()
    assert result == {"body": b"async hello"}


def test_pika_asyncio_connection(mqemu_server):
    loop = asyncio.new_event_loop()
    try:
        conn, result = _select_round_trip(AsyncioConnection, mqemu_server.ports["amqp"], loop)
        loop.run_forever()
    finally:
        loop.close()
    assert result == {"body": b"async hello"}
