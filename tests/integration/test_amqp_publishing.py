"""Publishing: confirms (every tag confirmed, multiple coalescing allowed), mandatory returns,
immediate, transactions, user_id validation and CC/BCC sender-selected distribution."""

from __future__ import annotations

import os
import sys

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "differential"))
from amqp_raw import RawAMQP, body_frame, content_header  # noqa: E402

from mqemu.protocols.amqp091 import spec  # noqa: E402
from mqemu.protocols.amqp091.codec import encode_method  # noqa: E402


@pytest.fixture
def conn(mqemu_server):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    yield c
    if c.is_open:
        c.close()


def count(ch, q):
    return ch.queue_declare(q, passive=True).method.message_count


def test_confirms_cover_every_publish(mqemu_server):
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.open_channel(1)
        c.method(1, spec.QueueDeclare(queue="", exclusive=True))
        q = c.expect(spec.QueueDeclareOk).queue
        c.method(1, spec.ConfirmSelect())
        c.expect(spec.ConfirmSelectOk)
        n = 50
        wire = b"".join(
            encode_method(1, spec.BasicPublish(exchange="", routing_key=q if i % 2 else "unroutable"))
            + content_header(1, 1) + body_frame(1, b"x") for i in range(n))
        c.send(wire)
        confirmed: set[int] = set()
        while len(confirmed) < n:
            m = c.read_frame().method
            assert isinstance(m, spec.BasicAck), m
            assert m.delivery_tag not in confirmed
            if m.multiple:
                confirmed |= set(range(1, m.delivery_tag + 1))
            else:
                confirmed.add(m.delivery_tag)
        assert confirmed == set(range(1, n + 1))


def test_mandatory_unroutable_is_returned(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as e:
        ch.basic_publish("amq.direct", "nobody", b"lost", pika.BasicProperties(message_id="m1"), mandatory=True)
    [returned] = e.value.messages
    assert (returned.method.reply_code, returned.method.reply_text) == (312, "NO_ROUTE")
    assert (returned.method.exchange, returned.method.routing_key) == ("amq.direct", "nobody")
    assert (returned.body, returned.properties.message_id) == (b"lost", "m1")


def test_immediate_closes_the_connection_with_540(mqemu_server):
    with RawAMQP("127.0.0.1", mqemu_server.ports["amqp"]) as c:
        c.handshake()
        c.open_channel(1)
        c.method(1, spec.BasicPublish(exchange="", routing_key="q", immediate=True))
        c.send(content_header(1, 0))
        out = c.outcome()
        assert out.key() == ("connection", 540, 60, 40)
        assert out.text == "NOT_IMPLEMENTED - immediate=true"


def test_tx_commit_and_rollback(conn):
    ch = conn.channel()
    ch.queue_declare("txq", exclusive=True)
    ch.tx_select()
    ch.basic_publish("", "txq", b"1")
    ch.basic_publish("", "txq", b"2")
    observer = conn.channel()
    assert count(observer, "txq") == 0
    ch.tx_commit()
    assert count(observer, "txq") == 2
    ch.basic_publish("", "txq", b"3")
    ch.tx_rollback()
    ch.tx_commit()
    assert count(observer, "txq") == 2


def test_tx_acks_apply_on_commit(conn):
    ch = conn.channel()
    ch.queue_declare("txa", exclusive=True)
    ch.basic_publish("", "txa", b"1")
    ch.tx_select()
    tag = ch.basic_get("txa")[0].delivery_tag
    ch.basic_ack(tag)
    ch.tx_rollback()
    ch.close()  # the ack was rolled back: the message is unacked and goes back
    assert count(conn.channel(), "txa") == 1


def test_user_id_must_match_the_login(conn):
    ch = conn.channel()
    ch.queue_declare("uid", exclusive=True)
    ch.basic_publish("", "uid", b"ok", pika.BasicProperties(user_id="guest"))
    assert ch.basic_get("uid", auto_ack=True)[1].user_id == "guest"
    ch.basic_publish("", "uid", b"bad", pika.BasicProperties(user_id="mallory"))
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("uid", passive=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - user_id property set to 'mallory' but authenticated "
                                  "user was 'guest'")


def test_cc_and_bcc_routing(conn):
    ch = conn.channel()
    for key in ("k1", "k2", "k3", "k4"):
        ch.queue_declare(key, exclusive=True)
        ch.queue_bind(key, "amq.direct", key)
    headers = {"CC": ["k2"], "BCC": ["k3"], "app": 1}
    ch.basic_publish("amq.direct", "k1", b"m", pika.BasicProperties(headers=headers))
    got = {key: ch.basic_get(key, auto_ack=True) for key in ("k1", "k2", "k3", "k4")}
    assert got["k4"][0] is None
    for key in ("k1", "k2", "k3"):
        method, props, body = got[key]
        assert body == b"m"
        assert method.routing_key == "k1"
        assert props.headers == {"CC": ["k2"], "app": 1}  # BCC is removed before delivery


def test_cc_on_the_default_exchange(conn):
    ch = conn.channel()
    for key in ("d1", "d2"):
        ch.queue_declare(key, exclusive=True)
    ch.basic_publish("", "d1", b"m", pika.BasicProperties(headers={"CC": ["d2"]}))
    assert [ch.basic_get(k, auto_ack=True)[2] for k in ("d1", "d2")] == [b"m", b"m"]


def test_confirm_mode_with_pika(conn):
    ch = conn.channel()
    ch.queue_declare("cfm", exclusive=True)
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", "cfm", str(i).encode())  # raises if nacked
    assert count(ch, "cfm") == 20
