"""CPU cost of one STOMP message through the sans-IO session and the core, no sockets.

A producer session SENDs batches of 256-byte messages to a queue; a consumer session
subscribed to it (ack=auto or client-individual with ACKs) gets each MESSAGE encoded into its
outbound buffer, which is then dropped. Both engines' flavours. It isolates the per-message
work of the session, the flavour rules and the queue from the network and the scheduler,
so a change to those paths can be compared before and after on a busy machine (the
end-to-end figures are ``bench_stomp.sh``'s). Prints one line per case: the best of
``--repeats`` runs, in microseconds of process CPU time per message.

Run: python bench/bench_stomp_session.py [--messages 50000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.stomp.session import StompSession

BATCH = 100


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}:{v}\n" for k, v in headers.items())
    return f"{command}\n{head}\n".encode() + body + b"\x00"


def session(broker: Broker) -> StompSession:
    s = StompSession(broker, "127.0.0.1", 1, wallclock=lambda: 1_700_000_000.0)
    s.bind_transport(lambda: None, lambda: None)
    s.data_received(frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest",
                                      "passcode": "guest"}), 1.0)
    drain(s)
    return s


def drain(s: StompSession) -> bytes:
    data = b"".join(s.outbound)
    s.outbound.clear()
    s.outbound_bytes = 0
    return data


def run(engine: str, ack: str, messages: int) -> float:
    broker = Broker(BrokerConfig(engine=engine))
    producer, consumer = session(broker), session(broker)
    consumer.data_received(frame("SUBSCRIBE", {"destination": "/queue/bench", "id": "1", "ack": ack}), 1.0)
    drain(consumer)
    send = frame("SEND", {"destination": "/queue/bench", "content-type": "text/plain",
                          "content-length": "256"}, b"x" * 256) * BATCH
    start = time.process_time()
    for _ in range(messages // BATCH):
        producer.data_received(send, 2.0)
        out = drain(consumer)
        if ack != "auto":
            acks = b"".join(frame("ACK", {"id": line[4:].decode()})
                            for line in out.split(b"\n") if line.startswith(b"ack:"))
            consumer.data_received(acks, 2.0)
        drain(producer)
    return (time.process_time() - start) / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for engine in ("rabbitmq", "activemq"):
        for ack in ("auto", "client-individual"):
            best = min(run(engine, ack, args.messages) for _ in range(args.repeats))
            print(f"{engine:8} ack={ack:17} {best:6.2f} us/message")


if __name__ == "__main__":
    main()
