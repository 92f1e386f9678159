"""Replies keep the order of a channel's methods when one waits for another node (issue 13's
gaps): a ``basic.get`` or ``basic.consume`` on a cluster's stand-in is answered when the
queue's home node answers, and a synchronous method pipelined behind it on the same channel
(``queue.declare`` here) is answered after it, as AMQP requires and RabbitMQ's channel does
(it waits in its call to the queue). Other channels are not held. A consume the home refuses
(another node's consumer has exclusive use) closes the channel with RabbitMQ's 403."""

from __future__ import annotations

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.ha.clustering.standin import RemoteEntry, StandIn
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_method
from test_amqp091_session import Client

pytestmark = pytest.mark.timeout(10)


class Home:
    """The stand-in's service: gets wait until the test answers them."""

    def __init__(self) -> None:
        self.gets: list = []
        self.consumes: list = []

    def get(self, s, no_ack, callback) -> None:
        self.gets.append(callback)

    def consume(self, s, c, answered=None) -> None:
        self.consumes.append((c, answered))

    def cancel(self, s, c) -> None:
        pass


def node_with_stand_in() -> tuple[Client, Home]:
    broker = Broker()
    vh = broker.vhosts["/"]
    home = Home()
    s = StandIn(home, "/", "remote", "node-1", True, False, {}, vh.clock)  # type: ignore[arg-type]
    s.reachable = True
    vh.add_stand_in(s)
    vh.declare_queue("local", durable=True)
    c = Client(broker).open()
    c.channel(1)
    c.channel(2)
    return c, home


def names(frames) -> list[str]:
    return [type(m).__name__ for m in Client.methods(None, frames)]


def test_a_sync_method_pipelined_behind_a_remote_get_is_answered_after_it():
    c, home = node_with_stand_in()
    out = c.send(encode_method(1, spec.BasicGet(queue="remote", no_ack=False))
                 + encode_method(1, spec.QueueDeclare(queue="local", passive=True))
                 + encode_method(2, spec.QueueDeclare(queue="local", passive=True))  # another channel
                 + encode_method(1, spec.BasicGet(queue="remote", no_ack=True))
                 + encode_method(1, spec.QueueDeclare(queue="local", passive=True)))
    assert [(f.channel, n) for f, n in zip(out, names(out))] == [(2, "QueueDeclareOk")]
    assert len(home.gets) == 1  # the second get waits behind the first's reply
    home.gets[0](RemoteEntry(Message("", "remote", b"x"), 7, False, 0))
    out = c.received()
    assert names(out) == ["BasicGetOk", "QueueDeclareOk"] and len(home.gets) == 2
    home.gets[1](None)
    assert names(c.received()) == ["BasicGetEmpty", "QueueDeclareOk"]
    # nothing held any more: a declare is answered at once
    assert names(c.method(1, spec.QueueDeclare(queue="local", passive=True))) == ["QueueDeclareOk"]


def test_a_channel_closed_while_a_remote_get_waits_drops_what_it_held():
    c, home = node_with_stand_in()
    c.send(encode_method(1, spec.BasicGet(queue="remote", no_ack=True))
           + encode_method(1, spec.QueueDeclare(queue="local", passive=True)))
    c.conn.channels[1].close(406, "PRECONDITION_FAILED - test")
    assert c.conn.channels[1].held is None
    home.gets[0](None)
    assert "QueueDeclareOk" not in names(c.received())


def test_a_remote_consume_is_answered_when_the_home_checked_it_and_refused_with_403():
    c, home = node_with_stand_in()
    out = c.send(encode_method(1, spec.BasicConsume(queue="remote", consumer_tag="a"))
                 + encode_method(1, spec.QueueDeclare(queue="local", passive=True)))
    assert out == [] and len(home.consumes) == 1
    home.consumes[0][1](None)
    assert names(c.received()) == ["BasicConsumeOk", "QueueDeclareOk"]
    assert names(c.method(1, spec.BasicCancel(consumer_tag="a"))) == ["BasicCancelOk"]
    # nothing here in exclusive use; the home knows a consumer of another node
    c.send(encode_method(1, spec.BasicConsume(queue="remote", consumer_tag="b", exclusive=True))
           + encode_method(1, spec.QueueDeclare(queue="local", passive=True)))
    home.consumes[1][1]("queue 'remote' in vhost '/' in exclusive use")
    (close,) = Client.methods(None, c.received())
    assert isinstance(close, spec.ChannelClose) and close.reply_code == 403
    assert close.reply_text == "ACCESS_REFUSED - queue 'remote' in vhost '/' in exclusive use"
    assert (close.class_id, close.method_id) == (60, 20)
    assert "b" not in c.conn.channels[1].consumers
