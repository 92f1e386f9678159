"""Publisher confirms wait for the core's promise (``VirtualHost.publish_safe``) and keep
their order: a multiple ack never covers a publish that is not safe yet."""

from __future__ import annotations

from typing import Callable

import pytest

from mqemu.broker.core import Broker
from mqemu.broker.store.memory import MemoryStore
from mqemu.protocols.amqp091 import spec
from mqemu.protocols.amqp091.codec import encode_content
from test_amqp091_session import Client

pytestmark = pytest.mark.timeout(10)


class BatchStore(MemoryStore):
    """Keeps messages; a batch is on disk only when the test calls ``commit``."""

    keeps_messages = True

    def __init__(self) -> None:
        super().__init__()
        self.ticket = 1
        self.durable = 0
        self.waiting: list[Callable[[], None]] = []

    def add_message(self, queue, message):
        return 1

    def remove_message(self, queue, handle):
        pass

    def barrier(self) -> int:
        return self.ticket

    def when_durable(self, ticket, callback):
        if ticket <= self.durable:
            callback()
        else:
            self.waiting.append(callback)

    def commit(self) -> None:
        self.durable = self.ticket
        self.ticket += 1
        waiting, self.waiting = self.waiting, []
        for cb in waiting:
            cb()


def publish(queue: str, persistent: bool) -> bytes:
    return encode_content(1, spec.BasicPublish(routing_key=queue), {"delivery_mode": 2} if persistent else {},
                          b"m", 131072)


def test_amqp_confirms_wait_for_the_promise_and_never_cover_an_unsafe_publish():
    store = BatchStore()
    c = Client(Broker(store=store)).open()
    c.channel()
    c.method(1, spec.ConfirmSelect())
    c.method(1, spec.QueueDeclare(queue="d", durable=True))
    c.method(1, spec.QueueDeclare(queue="t"))
    # 1: persistent into a durable queue (waits for the disk); 2: safe at once, but a
    # multiple ack for it would cover 1.
    assert c.methods(c.send(publish("d", True) + publish("t", True))) == []
    store.commit()
    assert c.methods(c.received()) == [spec.BasicAck(delivery_tag=2, multiple=True)]
    assert c.methods(c.send(publish("t", False))) == [spec.BasicAck(delivery_tag=3)]


def test_a_refused_publish_behind_an_unsafe_one_is_nacked_after_it_is_confirmed():
    store = BatchStore()
    c = Client(Broker(store=store)).open()
    c.channel()
    c.method(1, spec.ConfirmSelect())
    c.method(1, spec.QueueDeclare(queue="d", durable=True))
    c.method(1, spec.QueueDeclare(queue="one", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}))
    # 1 waits for the disk, 2 is taken, 3 is refused: nothing may be answered before 1 is safe
    assert c.methods(c.send(publish("d", True) + publish("one", False) + publish("one", False))) == []
    store.commit()
    assert c.methods(c.received()) == [spec.BasicAck(delivery_tag=2, multiple=True),
                                       spec.BasicNack(delivery_tag=3, multiple=False, requeue=False)]
    assert c.methods(c.send(publish("one", False))) == [spec.BasicNack(delivery_tag=4, multiple=False, requeue=False)]
