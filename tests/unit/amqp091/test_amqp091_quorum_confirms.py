"""Publisher confirms on a quorum queue (issue 13's gaps): a publish the machine refuses
when it commits (``x-overflow: reject-publish``, the queue filled by the commands committed
before it) is nacked, never confirmed; a channel closed while its publishes wait for a
group without a leader leaves nothing of itself held by their promises."""

from __future__ import annotations

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.quorum import QuorumQueue
from mqemu.broker.quorum_replication import LocalReplicator
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_content
from test_amqp091_session import Client

pytestmark = pytest.mark.timeout(10)

QQ = {"x-queue-type": "quorum"}


def quorum_node() -> tuple[Broker, list[LocalReplicator]]:
    reps: list[LocalReplicator] = []

    def factory(vhost: str, queue: str) -> LocalReplicator:
        reps.append(LocalReplicator())
        return reps[-1]
    return Broker(replicators=factory), reps


def publishes(queue: str, n: int) -> bytes:
    return b"".join(encode_content(1, spec.BasicPublish(routing_key=queue), {"delivery_mode": 2}, b"m%d" % k, 131072)
                    for k in range(n))


def confirms(frames) -> list[tuple[str, int, bool]]:
    return [(type(m).__name__, m.delivery_tag, m.multiple) for m in Client.methods(None, frames)
            if isinstance(m, (spec.BasicAck, spec.BasicNack))]


def test_a_publish_refused_when_it_commits_is_nacked_not_confirmed():
    broker, reps = quorum_node()
    c = Client(broker).open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="rp", durable=True,
                                  arguments={**QQ, "x-max-length": 1, "x-overflow": "reject-publish"}))
    assert isinstance(broker.vhosts["/"].queues["rp"], QuorumQueue)
    reps[0].flush()
    c.method(1, spec.ConfirmSelect())
    # three publishes in one read: all pass the check on the applied (empty) queue; at commit
    # the machine takes two (RabbitMQ 3.10: refused once over the limit) and refuses the third
    assert confirms(c.send(publishes("rp", 3))) == []
    reps[0].flush()
    assert confirms(c.received()) == [("BasicAck", 1, False), ("BasicAck", 2, False), ("BasicNack", 3, False)]
    assert len(broker.vhosts["/"].queues["rp"].ready) == 2
    # now refused on the applied state at once
    assert confirms(c.send(publishes("rp", 1))) == [("BasicNack", 4, False)]


def test_a_channel_closed_while_its_publishes_wait_leaves_nothing_held():
    broker, reps = quorum_node()
    c = Client(broker).open()
    c.channel()
    c.method(1, spec.QueueDeclare(queue="qq", durable=True, arguments=QQ))
    c.method(1, spec.QueueDeclare(queue="rp", durable=True,
                                  arguments={**QQ, "x-max-length": 5, "x-overflow": "reject-publish"}))
    reps[0].flush()
    reps[1].flush()
    c.method(1, spec.ConfirmSelect())
    c.send(publishes("qq", 3) + publishes("rp", 2))  # no leader commits them (no flush)
    batch, refusing = reps[0].promise, reps[1].promise
    assert batch is not None and len(batch.callbacks) == 3
    assert refusing is not None and len(refusing.callbacks) == 2  # one per Refusable
    channel = c.conn.channels[1]
    assert len(channel._waiting) == 5
    c.method(1, spec.ChannelClose(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    assert batch.callbacks == [] and channel._waiting == {}
    rp = broker.vhosts["/"].queues["rp"]
    assert all(p._calls == [] for _, _, p in rp._mine if p is not None)
    reps[0].flush()  # committed later (the heal): nothing is sent on the closed channel
    reps[1].flush()
    assert confirms(c.received()) == []
