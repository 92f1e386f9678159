"""Micro-benchmark: the publish-to-delivery paths that carry protocol fields and cross-protocol
conversions, in-process (sessions without sockets): microseconds per message.

- MQTT 3.1.1 QoS 0 PUBLISH -> one MQTT subscriber (``Message.fields``: the publisher id,
  read at delivery for no-local and retained copies);
- STOMP SEND -> one STOMP subscriber, RabbitMQ flavour (expiration check) and ActiveMQ
  flavour without content-length (the text field);
- STOMP SEND -> one AMQP 0-9-1 consumer (the property list encoded once per message).

Run: python bench/bench_cross_paths.py   (best of 7 runs of N messages each). Not a test.
"""

from __future__ import annotations

import time

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.amqp091.session import AMQPConnection
from mqemu.protocols.mqtt.packets import Connect, Publish, Subscribe, Subscription, encode
from mqemu.protocols.mqtt.session import MqttConnection
from mqemu.protocols.stomp.codec import encode_frame
from mqemu.protocols.stomp.session import StompSession

N = 20_000
BODY = b"x" * 64


def _drain(conn) -> int:
    n = sum(len(b) for b in conn.outbound)
    conn.outbound.clear()
    conn.outbound_bytes = 0
    return n


def mqtt_to_mqtt() -> float:
    broker = Broker()
    sub = MqttConnection(broker, "127.0.0.1", 1)
    pub = MqttConnection(broker, "127.0.0.1", 2)
    sub.data_received(encode(Connect("MQTT", 4, True, 0, "sub"), 4)
                      + encode(Subscribe(1, (Subscription("t/#", 0),), {}), 4), 0.0)
    pub.data_received(encode(Connect("MQTT", 4, True, 0, "pub"), 4), 0.0)
    batch = encode(Publish("t/a", BODY), 4) * 100
    _drain(sub)
    start = time.process_time()
    for _ in range(N // 100):
        pub.data_received(batch, 0.0)
        assert _drain(sub) > 100 * len(BODY)
    return (time.process_time() - start) / N * 1e6


def _stomp(broker: Broker, n: int) -> StompSession:
    s = StompSession(broker, "127.0.0.1", n, wallclock=lambda: 1_700_000_000.0)
    s.bind_transport(lambda: None, lambda: None)
    s.data_received(encode_frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest",
                                             "passcode": "guest"}, b"", None), 0.0)
    return s


def stomp_to_stomp(engine: str, frame: bytes) -> float:
    broker = Broker(BrokerConfig(engine=engine))
    sub, pub = _stomp(broker, 1), _stomp(broker, 2)
    sub.data_received(encode_frame("SUBSCRIBE", {"destination": "/queue/b", "id": "s"}, b"", "1.2"), 0.0)
    batch = frame * 100
    _drain(sub)
    start = time.process_time()
    for _ in range(N // 100):
        pub.data_received(batch, 0.0)
        assert _drain(sub) > 100 * len(BODY)
    return (time.process_time() - start) / N * 1e6


def stomp_to_amqp() -> float:
    broker = Broker()
    pub = _stomp(broker, 2)
    amqp = AMQPConnection(broker, "127.0.0.1", 3)
    vh = broker.vhosts["/"]
    q = vh.declare_queue("b", durable=True)

    class Owner:  # the AMQP channel's deliver, without a socket
        blocked = False

        def __init__(self) -> None:
            from mqemu.protocols.amqp091.channel import Channel
            self.ch = Channel(amqp, 1)

        def deliver(self, consumer, entry) -> None:
            self.ch.deliver(consumer, entry)

        def consumer_cancelled(self, consumer) -> None:
            pass

    from mqemu.broker.queue import Consumer
    q.add_consumer(Consumer(q, "ctag", Owner(), no_ack=True))
    frame = encode_frame("SEND", {"destination": "/queue/b", "content-type": "text/plain", "h": "v"}, BODY, "1.2")
    batch = frame * 100
    start = time.process_time()
    for _ in range(N // 100):
        pub.data_received(batch, 0.0)
        assert _drain(amqp) > 100 * len(BODY)
    return (time.process_time() - start) / N * 1e6


def main() -> None:
    rabbit = encode_frame("SEND", {"destination": "/queue/b", "expiration": "60000"}, BODY, "1.2")
    text = b"SEND\ndestination:/queue/b\n\n" + BODY + b"\x00"  # ActiveMQ: a TextMessage
    cases = {
        "mqtt 3.1.1 qos0 -> mqtt": mqtt_to_mqtt,
        "stomp -> stomp (rabbitmq, expiration)": lambda: stomp_to_stomp("rabbitmq", rabbit),
        "stomp text -> stomp (activemq)": lambda: stomp_to_stomp("activemq", text),
        "stomp -> amqp 0-9-1": stomp_to_amqp,
    }
    for name, fn in cases.items():
        print(f"{name:40s} {min(fn() for _ in range(7)):6.2f} us/msg")


if __name__ == "__main__":
    main()
