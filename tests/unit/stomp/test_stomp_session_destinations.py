"""STOMP destinations of each engine, resolved onto the core (no sockets)."""

from __future__ import annotations

import pytest

from mqemu.protocols.stomp.destinations import RabbitDestinations, activemq_wildcards, rabbit_subscription_queue
from mqemu.protocols.stomp.errors import StompError

from stomp_peer import Peer, make_broker


def peer(engine="rabbitmq", version="1.2", **connect):
    p = Peer(make_broker(engine), version)
    p.connect(**connect)
    return p


# -- RabbitMQ -------------------------------------------------------------------------------
@pytest.mark.parametrize("dest, parsed", [
    ("/queue/a", ("queue", "a", None)),
    ("/queue/a%2Fb", ("queue", "a/b", None)),
    ("bare", ("queue", "bare", None)),
    ("/topic/x.y", ("topic", "x.y", None)),
    ("/exchange/ex", ("exchange", "ex", None)),
    ("/exchange/ex/k.*", ("exchange", "ex", "k.*")),
    ("/amq/queue/q", ("amqqueue", "q", None)),
    ("/reply-queue/amq.gen-1/x", ("reply_queue", "amq.gen-1/x", None)),
])
def test_rabbit_parse(dest, parsed):
    assert RabbitDestinations.parse(dest) == parsed


@pytest.mark.parametrize("dest, message", [
    ("/foo/a", "Unknown destination"), ("/queue/", "Invalid destination"),
    ("/queue/a/b", "Invalid destination"), ("/exchange/", "Invalid destination"),
])
def test_rabbit_parse_errors(dest, message):
    with pytest.raises(StompError) as e:
        RabbitDestinations.parse(dest)
    assert e.value.message == message


def test_rabbit_topic_subscriptions_each_get_a_queue_and_durable_names_are_stable():
    p = peer()
    p.send("SUBSCRIBE", {"destination": "/topic/t", "id": "a"})
    p.send("SUBSCRIBE", {"destination": "/topic/t", "id": "b", "durable": "true", "auto-delete": "false"})
    p.send("SEND", {"destination": "/topic/t"}, b"x")
    assert sorted(f.headers["subscription"] for f in p.frames()) == ["a", "b"]
    vhost = p.broker.vhosts["/"]
    durable = rabbit_subscription_queue("t", "b")
    assert durable.startswith("stomp-subscription-") and vhost.queues[durable].durable
    p.session.connection_lost()
    assert durable in vhost.queues  # outlives the connection
    assert [q for q in vhost.queues if q != durable] == []  # the other was exclusive


def test_rabbit_exchange_and_amq_queue_destinations():
    p = peer()
    p.send("SUBSCRIBE", {"destination": "/exchange/amq.direct/k1", "id": "1"})
    p.send("SEND", {"destination": "/exchange/amq.direct/k1"}, b"x")
    assert p.one("MESSAGE").headers["destination"] == "/exchange/amq.direct/k1"
    p.send("SUBSCRIBE", {"destination": "/amq/queue/absent", "id": "2", "receipt": "r"})
    err = p.one("ERROR")
    assert err.headers["message"] == "not_found" and b"no queue 'absent'" in err.body
    p = peer()
    p.send("SEND", {"destination": "/exchange/nope"}, b"x")
    assert p.one("ERROR").headers["message"] == "not_found"


def test_rabbit_queue_arguments_from_headers_and_inequivalence():
    p = peer()
    p.send("SEND", {"destination": "/queue/lim", "x-max-length": "1", "x-queue-type": "classic"}, b"1")
    p.send("SEND", {"destination": "/queue/lim"}, b"2")
    q = p.broker.vhosts["/"].queues["lim"]
    assert q.arguments["x-max-length"] == 1 and [e.message.body for e in q.ready] == [b"2"]
    p2 = Peer(p.broker)
    p2.connect()
    p2.send("SUBSCRIBE", {"destination": "/queue/lim", "id": "1", "x-max-length": "5"})
    assert p2.one("ERROR").headers["message"] == "precondition_failed"


def test_rabbit_prefetch_count_limits_client_acks():
    p = peer()
    p.send("SUBSCRIBE", {"destination": "/queue/pf", "id": "1", "ack": "client-individual",
                         "prefetch-count": "2"})
    for i in range(5):
        p.send("SEND", {"destination": "/queue/pf"}, b"%d" % i)
    frames = p.frames()
    assert len(frames) == 2
    p.send("ACK", {"id": frames[0].headers["ack"]})
    assert len(p.frames()) == 1


def test_rabbit_user_id_must_match_and_message_id_not_allowed_on_send():
    p = peer()
    p.send("SEND", {"destination": "/queue/u", "user-id": "mallory"}, b"x")
    assert p.one("ERROR").headers["message"] == "precondition_failed"
    p = peer()
    p.send("SEND", {"destination": "/queue/u", "message-id": "1"}, b"x")
    assert p.one("ERROR").headers["message"] == "Invalid header"


def test_rabbit_amqp_properties_mapping():
    p = peer()
    p.send("SEND", {"destination": "/queue/m", "persistent": "true", "priority": "3", "expiration": "60000",
                    "reply-to": "/queue/r", "correlation-id": "c", "amqp-message-id": "m1",
                    "timestamp": "1700000000", "type": "t", "app-id": "a", "content-encoding": "gzip",
                    "custom": "v"}, b"x")
    props = p.broker.vhosts["/"].queues["m"].ready[0].message.properties
    assert props == {"delivery_mode": 2, "priority": 3, "expiration": "60000", "reply_to": "/queue/r",
                     "correlation_id": "c", "message_id": "m1", "timestamp": 1700000000, "type": "t",
                     "app_id": "a", "content_encoding": "gzip", "headers": {"custom": "v"}}


# -- ActiveMQ -------------------------------------------------------------------------------
def test_activemq_wildcards():
    assert activemq_wildcards("a.*.c") == "a.*.c"
    assert activemq_wildcards("a.>") == "a.#"


def test_activemq_message_headers_and_expires():
    p = peer("activemq")
    p.send("SUBSCRIBE", {"destination": "/queue/q", "id": "1", "ack": "client"})
    expires = str(1_700_000_000_000 + 60_000)
    p.send("SEND", {"destination": "/queue/q", "persistent": "true", "expires": expires, "priority": "6",
                    "JMSXGroupID": "g"}, b"x")
    h = p.one("MESSAGE").headers
    assert h["expires"] == expires and h["priority"] == "6" and h["persistent"] == "true"
    assert h["timestamp"] == "1700000000000" and h["JMSXGroupID"] == "g"
    assert h["message-id"].startswith("ID:") and h["ack"] == h["message-id"]
    q = p.broker.vhosts["/"].queues["q"]
    assert q.durable and q.unacked == 1
    p.send("ACK", {"id": h["ack"]})
    assert q.unacked == 0


def test_activemq_composite_and_temp_destinations():
    p = peer("activemq")
    p.send("SUBSCRIBE", {"destination": "/queue/c1", "id": "1"})
    p.send("SUBSCRIBE", {"destination": "/topic/c2", "id": "2"})
    p.send("SEND", {"destination": "/queue/c1,topic://c2"}, b"x")
    assert sorted(f.headers["subscription"] for f in p.frames()) == ["1", "2"]
    p.send("SUBSCRIBE", {"destination": "/temp-queue/replies", "id": "3"})
    p.send("SEND", {"destination": "/queue/c1", "reply-to": "/temp-queue/replies"}, b"q")
    reply_to = p.one("MESSAGE").headers["reply-to"]
    assert reply_to.startswith("/remote-temp-queue/ID:")
    other = Peer(p.broker)
    other.connect()
    other.send("SEND", {"destination": reply_to}, b"answer")
    reply = p.one("MESSAGE")
    assert reply.body == b"answer"
    assert reply.headers["destination"] == "/temp-queue/replies"  # as ActiveMQ shows it


def test_activemq_durable_subscription_removed_by_name():
    p = peer("activemq", **{"client-id": "app"})
    p.send("SUBSCRIBE", {"destination": "/topic/d", "id": "1", "activemq.subscriptionName": "s"})
    p.send("UNSUBSCRIBE", {"id": "1", "activemq.subscriptionName": "s", "receipt": "a"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Durable consumer is in use"
    assert err.headers["receipt-id"] == "a"
    p.send("UNSUBSCRIBE", {"id": "1", "receipt": "b"})
    p.send("UNSUBSCRIBE", {"id": "1", "activemq.subscriptionName": "s", "receipt": "c"})
    assert [f.headers["receipt-id"] for f in p.frames()] == ["b", "c"]
    assert "app:s" not in p.broker.vhosts["/"].queues
    p.send("UNSUBSCRIBE", {"id": "1", "activemq.subscriptionName": "s"})
    assert p.one("ERROR").headers["message"] == ("No durable subscription exists for clientID: app "
                                                 "and subscriptionName: s")
    assert not p.closed


def test_activemq_durable_topic_subscription_outlives_connection():
    p = peer("activemq", **{"client-id": "app"})
    p.send("SUBSCRIBE", {"destination": "/topic/d", "id": "1", "activemq.subscriptionName": "s"})
    p.session.connection_lost()
    sender = Peer(p.broker)
    sender.connect()
    sender.send("SEND", {"destination": "/topic/d"}, b"kept")
    q = p.broker.vhosts["/"].queues["app:s"]
    assert [e.message.body for e in q.ready] == [b"kept"]


def test_activemq_nack_dead_letters_and_bad_selector():
    p = peer("activemq")
    p.send("SUBSCRIBE", {"destination": "/queue/n", "id": "1", "ack": "client-individual"})
    p.send("SEND", {"destination": "/queue/n", "persistent": "true"}, b"x")
    p.send("NACK", {"id": p.one("MESSAGE").headers["ack"]})
    assert p.frames() == []  # ActiveMQ: a NACK is a poison ack, no redelivery
    p.send("SUBSCRIBE", {"destination": "/queue/s", "id": "2", "selector": "a >"})
    assert p.one("ERROR")


def test_rabbit_queue_deleted_under_subscription_errors_and_stays_open():
    p = peer()
    p.send("SUBSCRIBE", {"destination": "/queue/gone", "id": "s1"})
    p.broker.vhosts["/"].delete_queue("gone")
    err = p.one("ERROR")  # RabbitMQ's server_cancel_consumer
    assert err.headers["message"] == "Server cancelled subscription"
    assert err.headers["subscription"] == "s1"
    assert err.body == b"The server has canceled a subscription.\nNo more messages will be delivered for \"id='s1'\".\n"
    assert not p.closed
    p.send("SEND", {"destination": "/queue/other", "receipt": "r"}, b"x")
    assert p.one("RECEIPT")
