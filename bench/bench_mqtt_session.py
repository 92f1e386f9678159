"""CPU cost of one MQTT message through the sans-IO connection and the core, no sockets.

A publisher connection sends batches of 64-byte PUBLISH packets (3.1.1: the fast path; 5.0:
the codec) to a topic a subscriber connection subscribed to; each delivery is encoded into
the subscriber's outbound buffer, which is then dropped (QoS 1: the subscriber PUBACKs every
one). It isolates the per-message work of the connection's parts and the queue from the
network and the scheduler, so a change to those paths can be compared before and after on a
busy machine. Prints one line per case: the best of ``--repeats`` runs, in microseconds of
wall time per message.

Run: python bench/bench_mqtt_session.py [--messages 20000] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

from mqemu.broker.core import Broker
from mqemu.protocols.mqtt.packets import Connect, Puback, Publish, Subscribe, Subscription, encode
from mqemu.protocols.mqtt.session import MqttConnection

BATCH = 100


def _connect(broker: Broker, client_id: str, level: int) -> MqttConnection:
    c = MqttConnection(broker, "127.0.0.1", 1)
    c.data_received(encode(Connect("MQTT", level, True, 0, client_id), level), 0.0)
    c.outbound.clear()
    return c


def run(qos: int, level: int, n: int) -> float:
    broker = Broker()
    sub, pub = _connect(broker, "sub", level), _connect(broker, "pub", level)
    sub.data_received(encode(Subscribe(1, (Subscription("a/b", qos),)), level), 0.0)
    sub.outbound.clear()
    data = b"".join(encode(Publish("a/b", b"x" * 64, qos, False, False, j + 1 if qos else None), level)
                    for j in range(BATCH))
    delivered = 0
    start = time.perf_counter()
    for i in range(n // BATCH):
        pub.data_received(data, 0.0)
        delivered += len(sub.outbound)
        if qos:
            acks = b"".join(encode(Puback(j), level) for j in range(i * BATCH + 1, (i + 1) * BATCH + 1))
            sub.data_received(acks, 0.0)
        for c in (sub, pub):
            c.outbound.clear()
            c.outbound_bytes = 0
    elapsed = time.perf_counter() - start
    assert delivered == n // BATCH * BATCH, (delivered, n)
    return elapsed / delivered * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000, help="per run, at most 65535")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    for level in (4, 5):
        for qos in (0, 1):
            best = min(run(qos, level, min(args.messages, 65500)) for _ in range(args.repeats))
            print(f"MQTT {'3.1.1' if level == 4 else '5.0'} QoS {qos}: {best:.2f} us/message")


if __name__ == "__main__":
    main()
