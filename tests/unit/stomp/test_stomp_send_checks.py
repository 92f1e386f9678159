"""The checks of a SEND when its destination was sent to before on the same connection.

RabbitMQ's plugin resolves a destination and checks the write permission once per
connection; mqemu then skips both for the next SENDs to it (``StompSession.send_checked``).
These tests pin what must still be checked on every SEND, and what a connection remembers.
"""

from __future__ import annotations

import pytest

from mqemu.broker.auth import Permission

from stomp_peer import Peer, make_broker

pytestmark = pytest.mark.timeout(30)


def peer(broker=None, engine="rabbitmq"):
    p = Peer(broker or make_broker(engine))
    p.connect()
    return p


def answer(p, dest, **headers) -> str:
    """The frame a SEND with a receipt gets: "RECEIPT", or the ERROR's message header."""
    p.send("SEND", {"destination": dest, "receipt": "r", **headers}, b"x")
    (frame,) = p.frames()
    return "RECEIPT" if frame.command == "RECEIPT" else frame.headers["message"]


def test_message_id_and_frame_headers_are_checked_on_every_send():
    p = peer()
    assert answer(p, "/queue/c") == "RECEIPT"
    assert "/queue/c" in p.session.send_checked  # the next SENDs take the short way
    assert answer(p, "/queue/c", **{"message-id": "1"}) == "Invalid header"
    assert answer(p, "/queue/c", priority="high") == "Invalid header"
    assert answer(p, "/queue/c") == "RECEIPT"
    assert [e.message.body for e in p.broker.vhosts["/"].queues["c"].ready] == [b"x", b"x"]


@pytest.mark.parametrize("header", [{"user-id": "mallory"}, {"expiration": "soon"}])
def test_properties_are_checked_on_every_send(header):
    p = peer()
    assert answer(p, "/queue/c") == "RECEIPT"
    assert answer(p, "/queue/c", **header) == "precondition_failed"
    assert p.closed  # RabbitMQ: the channel error ends the connection


@pytest.mark.parametrize("headers", [
    {"priority": "high", "expiration": "soon"},
    {"expiration": "soon", "priority": "high"},
])
def test_an_integer_header_is_refused_before_the_expiration_in_any_order(headers):
    assert answer(peer(), "/queue/e", **headers) == "Invalid header"


def test_write_permission_is_checked_until_granted_once():
    broker = make_broker()
    broker.auth.permissions[("guest", "/")] = Permission(write="^(amq\\.default|ok)$")
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("ok", "fanout")
    vhost.declare_exchange("no", "fanout")
    p = peer(broker)
    for _ in range(3):
        assert answer(p, "/exchange/ok") == "RECEIPT"
    assert "/exchange/ok" in p.session.send_checked
    assert answer(p, "/exchange/no") == "access_refused"
    assert "/exchange/no" not in p.session.send_checked


def test_topic_keys_past_the_remembered_ones_are_checked_every_time():
    broker = make_broker()
    broker.auth.deny_publish = ("ro.*",)
    assert answer(peer(broker), "/topic/ro.x") == "access_refused"
    p = peer(broker)
    assert answer(p, "/topic/k.kept") == "RECEIPT"
    for i in range(1100):  # fill the connection's remembered topic keys (1024)
        p.send("SEND", {"destination": f"/topic/n.{i}"}, b"x")
    assert p.frames() == []
    assert answer(p, "/topic/k.late") == "RECEIPT"
    assert "/topic/k.kept" in p.session.send_checked
    assert "/topic/k.late" not in p.session.send_checked
    broker.auth.deny_publish = ("k.*",)
    # A key remembered before stays allowed on this connection (as RabbitMQ caches its
    # checks); one past the remembered ones is checked again.
    assert answer(p, "/topic/k.kept") == "RECEIPT"
    assert answer(p, "/topic/k.late") == "access_refused"


def test_activemq_checks_every_send():
    p = peer(engine="activemq")
    assert answer(p, "/queue/a") == "RECEIPT"
    assert answer(p, "/queue/a") == "RECEIPT"
    assert p.session.send_checked == {}
