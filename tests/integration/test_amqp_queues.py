"""Queues with pika: durable/exclusive/auto-delete/server-named, TTLs, length limits,
dead-lettering with RabbitMQ's ``x-death``, priorities, single active consumer, quorum
queues, purge, delete and the redeclare checks."""

from __future__ import annotations

import datetime
import time

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, NackError


@pytest.fixture
def port(mqemu_server):
    return mqemu_server.ports["amqp"]


@pytest.fixture
def conn(port):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    yield c
    if c.is_open:
        c.close()


def get_body(ch, q):
    method, props, body = ch.basic_get(q, auto_ack=True)
    return body


def wait_get(conn, ch, q, timeout=3.0):
    """basic.get until a message comes (for TTL and expiry, which fire on the broker's timer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(q, auto_ack=True)
        if method is not None:
            return props, body
        conn.sleep(0.02)
    raise AssertionError(f"nothing arrived on {q} within {timeout} s")


def pump(conn, until, timeout=2.0):
    """Process events until until() is true (or, with until=None, for the whole timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until():
            return
        conn.process_data_events(0.02)
    assert until is None, "condition not reached in time"


def dlx_setup(ch, **args):
    """A queue 'work' dead-lettering to fanout 'dlx' -> queue 'dead'."""
    ch.exchange_declare("dlx", "fanout", auto_delete=True)
    ch.queue_declare("dead", exclusive=True)
    ch.queue_bind("dead", "dlx")
    ch.queue_declare("work", exclusive=True, arguments={"x-dead-letter-exchange": "dlx", **args})


def test_server_named_queue(conn):
    ch = conn.channel()
    ok = ch.queue_declare("", exclusive=True).method
    assert ok.queue.startswith("amq.gen-") and len(ok.queue) > 10
    assert (ok.message_count, ok.consumer_count) == (0, 0)


def test_durable_queue_redeclare_must_match(conn):
    ch = conn.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.queue_declare("durable-q", durable=True)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("durable-q", durable=False)
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'durable-q' in "
                                  "vhost '/': received 'false' but current is 'true'")
    conn.channel().queue_delete("durable-q")


def test_exclusive_queue_locked_to_its_connection_and_deleted_on_close(conn, port):
    ch = conn.channel()
    ch.queue_declare("mine", exclusive=True)
    other = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        for attempt in (lambda c: c.queue_declare("mine", passive=True),
                        lambda c: c.basic_consume("mine", lambda *a: None),
                        lambda c: c.queue_delete("mine")):
            with pytest.raises(ChannelClosedByBroker) as e:
                attempt(other.channel())
            assert e.value.reply_code == 405
            assert "cannot obtain exclusive access to locked queue 'mine'" in e.value.reply_text
        conn.close()
        with pytest.raises(ChannelClosedByBroker) as e:
            other.channel().queue_declare("mine", passive=True)
        assert e.value.reply_code == 404
    finally:
        other.close()


def test_auto_delete_queue_goes_after_last_consumer(conn):
    ch = conn.channel()
    ch.queue_declare("auto-q", auto_delete=True)
    ch.basic_publish("", "auto-q", b"kept while unused")
    ch.queue_declare("auto-q", passive=True)  # never consumed: still there
    t1 = ch.basic_consume("auto-q", lambda *a: None, auto_ack=True)
    t2 = ch.basic_consume("auto-q", lambda *a: None, auto_ack=True)
    ch.basic_cancel(t1)
    assert ch.queue_declare("auto-q", passive=True).method.consumer_count == 1
    ch.basic_cancel(t2)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("auto-q", passive=True)
    assert e.value.reply_code == 404


def test_message_ttl_expires_and_dead_letters(conn):
    ch = conn.channel()
    dlx_setup(ch, **{"x-message-ttl": 50})
    ch.basic_publish("", "work", b"old")
    props, body = wait_get(conn, ch, "dead")
    assert body == b"old"
    death = props.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("expired", "work", 1)
    assert get_body(ch, "work") is None


def test_per_message_expiration(conn):
    ch = conn.channel()
    dlx_setup(ch)
    ch.basic_publish("", "work", b"short", pika.BasicProperties(expiration="30"))
    ch.basic_publish("", "work", b"forever")
    props, body = wait_get(conn, ch, "dead")
    assert body == b"short"
    assert props.expiration is None  # RabbitMQ moves it into x-death
    assert props.headers["x-death"][0]["original-expiration"] == "30"
    assert get_body(ch, "work") == b"forever"


def test_queue_expires_when_unused(conn):
    ch = conn.channel()
    ch.queue_declare("expiring", arguments={"x-expires": 100})
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        conn.sleep(0.05)
        try:
            ch.queue_declare("expiring", passive=True)
        except ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return
    raise AssertionError("x-expires did not delete the queue")


def test_max_length_drop_head_dead_letters_maxlen(conn):
    ch = conn.channel()
    dlx_setup(ch, **{"x-max-length": 2})
    for i in range(4):
        ch.basic_publish("", "work", str(i).encode())
    assert ch.queue_declare("work", passive=True).method.message_count == 2
    assert [get_body(ch, "work"), get_body(ch, "work")] == [b"2", b"3"]
    dead = []
    for _ in range(2):
        props, body = wait_get(conn, ch, "dead")
        assert props.headers["x-death"][0]["reason"] == "maxlen"
        dead.append(body)
    assert dead == [b"0", b"1"]


def test_max_length_bytes(conn):
    ch = conn.channel()
    ch.queue_declare("bytes-q", exclusive=True, arguments={"x-max-length-bytes": 10})
    for body in (b"12345", b"67890", b"abcde"):
        ch.basic_publish("", "bytes-q", body)
    assert [get_body(ch, "bytes-q"), get_body(ch, "bytes-q"), get_body(ch, "bytes-q")] == [b"67890", b"abcde", None]


def test_reject_publish_nacks_the_publisher(conn):
    ch = conn.channel()
    ch.queue_declare("full", exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish("", "full", b"fits")
    with pytest.raises(NackError):
        ch.basic_publish("", "full", b"refused")
    assert get_body(ch, "full") == b"fits"
    ch.basic_publish("", "full", b"fits again")


def test_x_death_as_rabbitmq_writes_it(conn):
    ch = conn.channel()
    dlx_setup(ch)
    ch.basic_publish("", "work", b"m", pika.BasicProperties(headers={"app": "kept"}))
    method, _, _ = ch.basic_get("work")
    ch.basic_reject(method.delivery_tag, requeue=False)
    props, body = wait_get(conn, ch, "dead")
    h = props.headers
    assert h["app"] == "kept"
    assert (h["x-first-death-reason"], h["x-first-death-queue"], h["x-first-death-exchange"]) == \
        ("rejected", "work", "")
    [death] = h["x-death"]
    assert set(death) == {"count", "reason", "queue", "time", "exchange", "routing-keys"}
    assert (death["count"], death["reason"], death["queue"], death["exchange"], death["routing-keys"]) == \
        (1, "rejected", "work", "", ["work"])
    assert isinstance(death["time"], datetime.datetime)


def test_x_death_count_grows_on_each_cycle(conn):
    ch = conn.channel()
    # work -> (reject) -> dlx -> dead ; dead has a TTL and dead-letters back to work
    ch.exchange_declare("back", "direct", auto_delete=True)
    dlx_setup(ch)
    ch.queue_bind("work", "back", "work")
    ch.queue_declare("retry", exclusive=True, arguments={"x-message-ttl": 20, "x-dead-letter-exchange": "back",
                                                         "x-dead-letter-routing-key": "work"})
    ch.queue_bind("retry", "dlx")
    ch.basic_publish("", "work", b"m")
    for cycle in (1, 2):
        deadline = time.monotonic() + 3
        while True:
            method, props, _ = ch.basic_get("work")
            if method is not None:
                break
            assert time.monotonic() < deadline
            conn.sleep(0.02)
        if cycle == 2:
            deaths = {(d["queue"], d["reason"]): d["count"] for d in props.headers["x-death"]}
            assert deaths == {("work", "rejected"): 1, ("retry", "expired"): 1}
            assert props.headers["x-death"][0]["queue"] == "retry"  # the latest first
        ch.basic_reject(method.delivery_tag, requeue=False)


def test_priority_queue_serves_highest_first(conn):
    ch = conn.channel()
    ch.queue_declare("prio", exclusive=True, arguments={"x-max-priority": 10})
    for p in (1, 5, 3, 0, 9, 5):
        ch.basic_publish("", "prio", str(p).encode(), pika.BasicProperties(priority=p))
    got = [get_body(ch, "prio") for _ in range(6)]
    assert got == [b"9", b"5", b"5", b"3", b"1", b"0"]


def test_single_active_consumer(conn):
    ch = conn.channel()
    ch.queue_declare("sac", exclusive=True, arguments={"x-single-active-consumer": True})
    got = {"a": [], "b": []}
    ta = ch.basic_consume("sac", lambda c, m, p, b: got["a"].append(b), auto_ack=True, consumer_tag="a")
    ch.basic_consume("sac", lambda c, m, p, b: got["b"].append(b), auto_ack=True, consumer_tag="b")
    for i in range(3):
        ch.basic_publish("", "sac", str(i).encode())
    pump(conn, lambda: len(got["a"]) == 3)
    pump(conn, None, 0.1)
    assert (got["a"], got["b"]) == ([b"0", b"1", b"2"], [])
    ch.basic_cancel(ta)
    ch.basic_publish("", "sac", b"3")
    pump(conn, lambda: got["b"] == [b"3"])


def test_consumer_priority(conn):
    ch = conn.channel()
    ch.queue_declare("cprio", exclusive=True)
    ch.basic_qos(prefetch_count=2)
    got = {"low": [], "high": []}
    ch.basic_consume("cprio", lambda c, m, p, b: got["low"].append(m.delivery_tag), consumer_tag="low")
    ch.basic_consume("cprio", lambda c, m, p, b: got["high"].append(m.delivery_tag), consumer_tag="high",
                     arguments={"x-priority": 10})
    for i in range(3):
        ch.basic_publish("", "cprio", str(i).encode())
    pump(conn, lambda: len(got["high"]) + len(got["low"]) == 3)
    assert (len(got["high"]), len(got["low"])) == (2, 1)  # high first until its prefetch is full


def test_quorum_queue_must_be_durable(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("qq-bad", arguments={"x-queue-type": "quorum"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq-bad' in vhost '/'"


def test_quorum_delivery_count_and_limit(conn):
    ch = conn.channel()
    ch.exchange_declare("qq-dlx", "fanout", auto_delete=True)
    ch.queue_declare("qq-dead", exclusive=True)
    ch.queue_bind("qq-dead", "qq-dlx")
    ch.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum", "x-delivery-limit": 2,
                                                    "x-dead-letter-exchange": "qq-dlx"})
    try:
        ch.basic_publish("", "qq", b"poison")
        counts = []
        for _ in range(3):
            method, props, body = ch.basic_get("qq")
            assert body == b"poison"
            counts.append((props.headers or {}).get("x-delivery-count"))
            ch.basic_nack(method.delivery_tag, requeue=True)
        assert counts == [None, 1, 2]
        assert ch.basic_get("qq")[0] is None
        props, body = wait_get(conn, ch, "qq-dead")
        assert body == b"poison"
        assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    finally:
        ch.queue_delete("qq")


def test_purge_returns_the_count(conn):
    ch = conn.channel()
    ch.queue_declare("purged", exclusive=True)
    for _ in range(5):
        ch.basic_publish("", "purged", b"x")
    assert ch.queue_purge("purged").method.message_count == 5
    assert ch.queue_declare("purged", passive=True).method.message_count == 0


def test_delete_if_unused_and_if_empty(conn):
    ch = conn.channel()
    ch.queue_declare("guarded", exclusive=True)
    ch.basic_publish("", "guarded", b"x")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_delete("guarded", if_empty=True)
    assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - queue 'guarded' in vhost '/' not empty")
    ch = conn.channel()
    ch.basic_consume("guarded", lambda *a: None)
    ch2 = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch2.queue_delete("guarded", if_unused=True)
    assert (e.value.reply_code, e.value.reply_text) == (406, "PRECONDITION_FAILED - queue 'guarded' in vhost '/' in use")
    assert conn.channel().queue_delete("guarded").method.message_count == 0  # the consumer had it


def test_redeclare_inequivalent_arguments(conn):
    ch = conn.channel()
    ch.queue_declare("args-q", exclusive=True, arguments={"x-max-length": 10})
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("args-q", exclusive=True, arguments={"x-max-length": 20})
    assert e.value.reply_text == ("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'args-q' in "
                                  "vhost '/': received '20' but current is '10'")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("args-q", exclusive=True)
    assert e.value.reply_text == ("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'args-q' in "
                                  "vhost '/': received none but current is the value '10' of type 'signedint'")


def test_bad_argument_type(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("typed", exclusive=True, arguments={"x-message-ttl": "soon"})
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'typed' in "
                                  "vhost '/': \"expected integer, got longstr\"")
