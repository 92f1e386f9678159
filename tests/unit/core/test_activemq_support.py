"""Helpers for core scenario tests: a broker on a fake clock and recording consumer owners."""

from __future__ import annotations

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.broker.message import Message
from mqemu.broker.queue import Consumer
from mqemu.broker.selector import compile_selector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Owner:
    """A consumer owner that records deliveries (an AMQP channel or STOMP connection)."""

    def __init__(self) -> None:
        self.blocked = False
        self.got: list[tuple[Consumer, object]] = []
        self.cancelled: list[Consumer] = []

    def deliver(self, consumer, entry) -> None:
        self.got.append((consumer, entry))

    def consumer_cancelled(self, consumer) -> None:
        self.cancelled.append(consumer)

    def bodies(self) -> list[bytes]:
        return [e.message.body for _, e in self.got]


def make_broker(engine: str = "activemq", extra: dict | None = None) -> tuple[Broker, Clock]:
    clock = Clock()
    cfg = BrokerConfig(engine=engine)
    if extra:
        cfg.extra = extra
    return Broker(cfg, clock=clock), clock


def consume(queue, tag: str, selector: str | None = None, prefetch: int = 0, no_ack: bool = False,
            owner: Owner | None = None, **kw) -> tuple[Consumer, Owner]:
    owner = owner or Owner()
    sel = compile_selector(selector) if selector is not None else None
    c = Consumer(queue, tag, owner, no_ack=no_ack, prefetch=prefetch, selector=sel, **kw)
    queue.add_consumer(c)
    return c, owner


def publish(vhost, body: bytes, queue: str = "q", persistent: bool = True, **headers):
    props = {"headers": headers} if headers else {}
    if persistent:
        props["delivery_mode"] = 2
    return vhost.publish("", queue, Message("", queue, body, props))
