"""Exchanges with pika: each type's routing, the standard exchanges, exchange-to-exchange
bindings, alternate and internal exchanges, auto-delete, and the declare errors."""

from __future__ import annotations

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker


@pytest.fixture
def conn(mqemu_server):
    c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    yield c
    if c.is_open:
        c.close()


def queue(ch, exchange=None, key="", arguments=None):
    q = ch.queue_declare("", exclusive=True).method.queue
    if exchange is not None:
        ch.queue_bind(q, exchange, key, arguments=arguments)
    return q


def drain(ch, q):
    bodies = []
    while True:
        method, _props, body = ch.basic_get(q, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def test_direct_routes_by_exact_key(conn):
    ch = conn.channel()
    ch.exchange_declare("x.direct", "direct", auto_delete=True)
    a, b = queue(ch, "x.direct", "a"), queue(ch, "x.direct", "b")
    for key in ("a", "b", "a", "c"):
        ch.basic_publish("x.direct", key, key.encode())
    assert drain(ch, a) == [b"a", b"a"]
    assert drain(ch, b) == [b"b"]


def test_fanout_reaches_every_bound_queue(conn):
    ch = conn.channel()
    ch.exchange_declare("x.fanout", "fanout", auto_delete=True)
    qs = [queue(ch, "x.fanout", f"ignored{i}") for i in range(3)]
    ch.basic_publish("x.fanout", "whatever", b"m")
    assert [drain(ch, q) for q in qs] == [[b"m"]] * 3


def test_topic_star_and_hash(conn):
    ch = conn.channel()
    ch.exchange_declare("x.topic", "topic", auto_delete=True)
    patterns = ["a.*.c", "a.#", "#", "*.x", "a.#.c", "#.z"]
    qs = {p: queue(ch, "x.topic", p) for p in patterns}
    keys = ["a.b.c", "a", "a.b.b.c", "q.x", "a.x", "z", "x.y.z", "a.c"]
    for k in keys:
        ch.basic_publish("x.topic", k, k.encode())
    got = {p: [b.decode() for b in drain(ch, q)] for p, q in qs.items()}
    assert got == {
        "a.*.c": ["a.b.c"],
        "a.#": ["a.b.c", "a", "a.b.b.c", "a.x", "a.c"],
        "#": keys,
        "*.x": ["q.x", "a.x"],
        "a.#.c": ["a.b.c", "a.b.b.c", "a.c"],
        "#.z": ["z", "x.y.z"],
    }


def test_headers_all_and_any(conn):
    ch = conn.channel()
    ch.exchange_declare("x.headers", "headers", auto_delete=True)
    q_all = queue(ch, "x.headers", arguments={"x-match": "all", "color": "red", "size": 1})
    q_any = queue(ch, "x.headers", arguments={"x-match": "any", "color": "red", "size": 1})
    for name, headers in [("both", {"color": "red", "size": 1}), ("color", {"color": "red"}),
                          ("size", {"size": 1, "other": "x"}), ("none", {"color": "blue"})]:
        ch.basic_publish("x.headers", "", name.encode(), pika.BasicProperties(headers=headers))
    assert drain(ch, q_all) == [b"both"]
    assert drain(ch, q_any) == [b"both", b"color", b"size"]


def test_default_exchange_routes_by_queue_name(conn):
    ch = conn.channel()
    q = queue(ch)
    ch.basic_publish("", q, b"to me")
    ch.basic_publish("", "no-such-queue", b"lost")
    assert drain(ch, q) == [b"to me"]


@pytest.mark.parametrize("name,kind", [("amq.direct", "direct"), ("amq.fanout", "fanout"),
                                       ("amq.topic", "topic"), ("amq.headers", "headers"),
                                       ("amq.match", "headers")])
def test_standard_exchanges_exist_and_route(conn, name, kind):
    ch = conn.channel()
    ch.exchange_declare(name, kind, passive=True)
    ch.exchange_declare(name, kind, durable=True)  # redeclaring one as it is succeeds
    args = {"k": "v"} if kind == "headers" else None
    q = queue(ch, name, "rk", arguments=args)
    ch.basic_publish(name, "rk", b"m", pika.BasicProperties(headers={"k": "v"}))
    assert drain(ch, q) == [b"m"]


def test_amq_prefix_is_reserved(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("amq.mine", "direct")
    assert e.value.reply_code == 403
    assert e.value.reply_text == "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'"
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete("amq.direct")
    assert e.value.reply_code == 403


def test_exchange_to_exchange_binding(conn):
    ch = conn.channel()
    ch.exchange_declare("x.src", "topic")
    ch.exchange_declare("x.dst", "fanout")
    ch.exchange_bind(destination="x.dst", source="x.src", routing_key="orders.*")
    q = queue(ch, "x.dst")
    ch.basic_publish("x.src", "orders.new", b"1")
    ch.basic_publish("x.src", "users.new", b"2")
    assert drain(ch, q) == [b"1"]
    ch.exchange_unbind(destination="x.dst", source="x.src", routing_key="orders.*")
    ch.basic_publish("x.src", "orders.new", b"3")
    assert drain(ch, q) == []
    ch.exchange_delete("x.src")
    ch.exchange_delete("x.dst")


def test_alternate_exchange_takes_unroutable_messages(conn):
    ch = conn.channel()
    ch.exchange_declare("x.ae", "fanout", auto_delete=True)
    unrouted = queue(ch, "x.ae")
    ch.exchange_declare("x.main", "direct", auto_delete=True, arguments={"alternate-exchange": "x.ae"})
    routed = queue(ch, "x.main", "known")
    ch.confirm_delivery()
    ch.basic_publish("x.main", "known", b"a")
    ch.basic_publish("x.main", "unknown", b"b", mandatory=True)  # routed via the AE: no return
    assert drain(ch, routed) == [b"a"]
    assert drain(ch, unrouted) == [b"b"]


def test_internal_exchange_refuses_publish_but_routes_from_bindings(conn):
    ch = conn.channel()
    ch.exchange_declare("x.internal", "fanout", internal=True, auto_delete=True)
    ch.exchange_declare("x.front", "fanout", auto_delete=True)
    ch.exchange_bind(destination="x.internal", source="x.front")
    q = queue(ch, "x.internal")
    ch.basic_publish("x.front", "", b"via front")
    assert drain(ch, q) == [b"via front"]
    ch.basic_publish("x.internal", "", b"direct")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(q, passive=True)
    assert e.value.reply_code == 403
    assert "cannot publish to internal exchange 'x.internal'" in e.value.reply_text


def test_auto_delete_exchange_goes_with_its_last_binding(conn):
    ch = conn.channel()
    ch.exchange_declare("x.auto", "direct", auto_delete=True)
    q = queue(ch, "x.auto", "k")
    ch.exchange_declare("x.auto", "direct", passive=True)
    ch.queue_unbind(q, "x.auto", "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("x.auto", "direct", passive=True)
    assert e.value.reply_code == 404


def test_redeclare_with_other_type_is_406(conn):
    ch = conn.channel()
    ch.exchange_declare("x.typed", "direct", auto_delete=True)
    queue(ch, "x.typed", "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("x.typed", "fanout", auto_delete=True)
    assert e.value.reply_code == 406
    assert e.value.reply_text == ("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x.typed' in "
                                  "vhost '/': received 'fanout' but current is 'direct'")


def test_passive_declare_of_missing_exchange_is_404(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("x.missing", passive=True)
    assert (e.value.reply_code, e.value.reply_text) == (404, "NOT_FOUND - no exchange 'x.missing' in vhost '/'")


def test_unknown_exchange_type_closes_the_channel_only(conn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_declare("x.odd", "x-no-such-type")
    assert e.value.reply_code == 406
    assert conn.is_open
    ch2 = conn.channel()
    ch2.exchange_declare("x.fine", "direct", auto_delete=True)


def test_publish_to_missing_exchange_is_404(conn):
    ch = conn.channel()
    ch.basic_publish("x.nowhere", "k", b"m")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare("", exclusive=True)
    assert (e.value.reply_code, e.value.reply_text) == (404, "NOT_FOUND - no exchange 'x.nowhere' in vhost '/'")


def test_exchange_delete_if_unused(conn):
    ch = conn.channel()
    ch.exchange_declare("x.used", "direct")
    q = queue(ch, "x.used", "k")
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.exchange_delete("x.used", if_unused=True)
    assert e.value.reply_code == 406
    ch = conn.channel()
    ch.queue_unbind(q, "x.used", "k")
    ch.exchange_delete("x.used", if_unused=True)
    with pytest.raises(ChannelClosedByBroker):
        ch.exchange_declare("x.used", passive=True)
