"""Consumers with pika: prefetch (per consumer and RabbitMQ's channel-wide ``global``),
round-robin, requeue and redelivered, reject/nack, recover, unknown tags, cancel
notifications, exclusive consumers and basic.get."""

from __future__ import annotations

import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker


@pytest.fixture
def conn(mqemu_server):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    yield c
    if c.is_open:
        c.close()


def pump(conn, until, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        conn.process_data_events(0.02)
    assert until is None, "condition not reached in time"


def fill(ch, q, n):
    for i in range(n):
        ch.basic_publish("", q, str(i).encode())


def test_prefetch_per_consumer(conn):
    ch = conn.channel()
    ch.queue_declare("pf", exclusive=True)
    fill(ch, "pf", 5)
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume("pf", lambda c, m, p, b: got.append(m))
    pump(conn, lambda: len(got) == 2)
    pump(conn, None, 0.1)
    assert len(got) == 2
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    pump(conn, lambda: len(got) == 4)


def test_global_prefetch_is_shared_by_the_channel(conn):
    ch = conn.channel()
    for q in ("g1", "g2"):
        ch.queue_declare(q, exclusive=True)
        fill(ch, q, 5)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    for q in ("g1", "g2"):
        ch.basic_consume(q, lambda c, m, p, b: got.append(m))
    pump(conn, lambda: len(got) == 3)
    pump(conn, None, 0.1)
    assert len(got) == 3
    ch.basic_ack(got[0].delivery_tag)
    pump(conn, lambda: len(got) == 4)


def test_round_robin_between_two_consumers(conn):
    ch = conn.channel()
    ch.queue_declare("rr", exclusive=True)
    got = []
    ch.basic_consume("rr", lambda c, m, p, b: got.append((m.consumer_tag, b)), auto_ack=True, consumer_tag="a")
    ch.basic_consume("rr", lambda c, m, p, b: got.append((m.consumer_tag, b)), auto_ack=True, consumer_tag="b")
    fill(ch, "rr", 6)
    pump(conn, lambda: len(got) == 6)
    tags = [t for t, _ in got]
    assert tags.count("a") == tags.count("b") == 3
    assert all(tags[i] != tags[i + 1] for i in range(5))


def test_requeue_sets_redelivered(conn):
    ch = conn.channel()
    ch.queue_declare("rq", exclusive=True)
    fill(ch, "rq", 1)
    m1, _, b1 = ch.basic_get("rq")
    assert not m1.redelivered
    ch.basic_nack(m1.delivery_tag, requeue=True)
    m2, _, b2 = ch.basic_get("rq")
    assert (b2, m2.redelivered) == (b1, True)
    ch.basic_reject(m2.delivery_tag, requeue=True)
    m3, _, _ = ch.basic_get("rq")
    assert m3.redelivered
    ch.basic_reject(m3.delivery_tag, requeue=False)
    assert ch.basic_get("rq")[0] is None


def test_nack_multiple_without_requeue_drops(conn):
    ch = conn.channel()
    ch.queue_declare("nm", exclusive=True)
    fill(ch, "nm", 3)
    tags = [ch.basic_get("nm")[0].delivery_tag for _ in range(3)]
    ch.basic_nack(tags[-1], multiple=True, requeue=False)
    assert ch.queue_declare("nm", passive=True).method.message_count == 0


def test_recover_redelivers_unacked(conn):
    ch = conn.channel()
    ch.queue_declare("rec", exclusive=True)
    fill(ch, "rec", 2)
    got = []
    ch.basic_consume("rec", lambda c, m, p, b: got.append((b, m.redelivered)))
    pump(conn, lambda: len(got) == 2)
    ch.basic_recover(requeue=True)
    pump(conn, lambda: len(got) == 4)
    assert got[2:] == [(b"0", True), (b"1", True)]


def test_ack_of_unknown_tag_is_406(conn):
    ch = conn.channel()
    ch.basic_ack(99)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - unknown delivery tag 99")


def test_double_ack_is_406(conn):
    ch = conn.channel()
    ch.queue_declare("dbl", exclusive=True)
    fill(ch, "dbl", 1)
    tag = ch.basic_get("dbl")[0].delivery_tag
    ch.basic_ack(tag)
    ch.basic_ack(tag)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert e.value.reply_code == 406


def test_consumer_cancelled_when_queue_deleted(conn):
    ch = conn.channel()
    ch.queue_declare("doomed")
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume("doomed", lambda *a: None, consumer_tag="watcher")
    conn.channel().queue_delete("doomed")
    pump(conn, lambda: cancelled == ["watcher"])


def test_exclusive_consumer_refuses_a_second(conn):
    ch = conn.channel()
    ch.queue_declare("solo", exclusive=True)
    ch.basic_consume("solo", lambda *a: None, exclusive=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        conn.channel().basic_consume("solo", lambda *a: None)
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - queue 'solo' in vhost '/' in exclusive use"


def test_basic_get_ok_and_empty(conn):
    ch = conn.channel()
    ch.queue_declare("getq", exclusive=True)
    fill(ch, "getq", 3)
    method, _, body = ch.basic_get("getq", auto_ack=True)
    assert (body, method.message_count, method.redelivered, method.routing_key) == (b"0", 2, False, "getq")
    ch.basic_get("getq", auto_ack=True)
    method, _, _ = ch.basic_get("getq", auto_ack=True)
    assert method.message_count == 0
    assert ch.basic_get("getq") == (None, None, None)


def test_unacked_messages_return_when_channel_closes(conn):
    ch = conn.channel()
    ch.queue_declare("back", exclusive=True)
    fill(ch, "back", 2)
    ch.basic_get("back")
    ch.basic_get("back")
    ch.close()
    ch = conn.channel()
    m, _, b = ch.basic_get("back", auto_ack=True)
    assert (b, m.redelivered) == (b"0", True)


@pytest.mark.parametrize("settle", ["reject", "nack", "recover", "channel-close"])
def test_requeued_messages_come_back_in_their_original_order(conn, settle):
    """Five deliveries taken with basic.get, each then rejected in its own frame in delivery
    order, or all returned at once by basic.recover or a closing channel: a consumer then
    gets them in publish order, as from RabbitMQ (each goes back to its place)."""
    ch = conn.channel()
    ch.queue_declare("order", exclusive=True)
    fill(ch, "order", 5)
    tags = [ch.basic_get("order")[0].delivery_tag for _ in range(5)]
    for delivery_tag in tags:
        if settle == "reject":
            ch.basic_reject(delivery_tag, requeue=True)
        elif settle == "nack":
            ch.basic_nack(delivery_tag, multiple=False, requeue=True)
    if settle == "recover":
        ch.basic_recover(requeue=True)
    elif settle == "channel-close":
        ch.close()
        ch = conn.channel()
    got = []
    ch.basic_consume("order", lambda c, m, p, b: got.append((m.redelivered, b)))
    pump(conn, lambda: len(got) == 5)
    assert got == [(True, b"0"), (True, b"1"), (True, b"2"), (True, b"3"), (True, b"4")]
