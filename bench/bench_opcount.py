"""Python bytecodes per STOMP message through the sans-IO sessions and the core: a count
that does not move with the machine's load, to compare two builds trim by trim.

The workload is ``bench/bench_cost.sh``'s stomp-auto / stomp-ci case without sockets: a
producer session SENDs loadgen's frames (``content-length``, ``auto-delete``, 256-byte body)
in reads of 200 frames to a queue; a consumer session subscribed to it (``--ack``) gets each
MESSAGE into its outbound buffer, which is then dropped (ACKs sent back for
client-individual). ``sys.settrace`` counts opcode events (``f_trace_opcodes``) while the
measured messages go, after a warm-up; C functions count nothing. Prints the bytecodes per
message and, with ``--top``, the functions with the most (own bytecodes, not inclusive).

It imports whichever build the interpreter imports, so the same file measures an older
tree too: ``OTHER/.venv/bin/python bench/bench_opcount.py``.

Run: python bench/bench_opcount.py [--ack auto|client-individual] [--messages 2000] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any

from mqemu.broker.config import BrokerConfig
from mqemu.broker.core import Broker
from mqemu.protocols.stomp.session import StompSession

READ = 200  # frames per read


def frame(command: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = "".join(f"{k}:{v}\n" for k, v in headers.items())
    return f"{command}\n{head}\n".encode() + body + b"\x00"


def broker(engine: str) -> Broker:
    fields = BrokerConfig.__dataclass_fields__
    extra: dict[str, Any] = {"engine_version": "3.10"} if "engine_version" in fields and engine == "rabbitmq" else {}
    return Broker(BrokerConfig(engine=engine, **extra))


def session(b: Broker, n: int) -> StompSession:
    s = StompSession(b, "127.0.0.1", n, wallclock=lambda: 1_700_000_000.0)
    s.bind_transport(lambda: None, lambda: None)
    s.data_received(frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest",
                                      "passcode": "guest", "heart-beat": "0,0"}), 1.0)
    drain(s)
    return s


def drain(s: StompSession) -> bytes:
    data = b"".join(s.outbound)
    s.outbound.clear()
    s.outbound_bytes = 0
    return data


class Workload:
    def __init__(self, engine: str, ack: str) -> None:
        b = broker(engine)
        self.ack = ack
        self.producer, self.consumer = session(b, 1), session(b, 2)
        dest = "/queue/lg.opcount"
        sub = {"id": "0", "destination": dest, "ack": ack, "auto-delete": "true"}
        if ack != "auto":
            sub.update({"prefetch-count": "1000", "activemq.prefetchSize": "1000"})
        self.consumer.data_received(frame("SUBSCRIBE", sub), 1.0)
        drain(self.consumer)
        body = b"%016x%016x" % (1, 2) + b"x" * 224
        self.send = frame("SEND", {"destination": dest, "content-length": "256",
                                   "auto-delete": "true"}, body) * READ

    def batch(self) -> int:
        self.producer.data_received(self.send, 2.0)
        out = drain(self.consumer)
        if self.ack != "auto":
            acks = b"".join(b"ACK\nid:%s\n\n\x00" % line[4:]
                            for line in out.split(b"\n") if line.startswith(b"ack:"))
            self.consumer.data_received(acks, 2.0)
            drain(self.consumer)
        drain(self.producer)
        return out.count(b"MESSAGE\n")


def count(w: Workload, batches: int) -> tuple[int, int, collections.Counter[str]]:
    per: collections.Counter[str] = collections.Counter()
    total = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        key = "/".join(code.co_filename.split("/")[-2:]) + ":" + code.co_name

        def local(frame: Any, event: str, arg: Any) -> Any:
            nonlocal total
            if event == "opcode":
                per[key] += 1
                total += 1
            return local
        return local

    delivered = 0
    sys.settrace(tracer)
    try:
        for _ in range(batches):
            delivered += w.batch()
    finally:
        sys.settrace(None)
    return total, delivered, per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="rabbitmq")
    parser.add_argument("--ack", default="auto")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()
    w = Workload(args.engine, args.ack)
    for _ in range(3):
        w.batch()  # warm-up: the queue, the routes and the caches exist
    total, delivered, per = count(w, args.messages // READ)
    print(f"{args.engine} ack={args.ack}: {total / delivered:.1f} bytecodes/message ({delivered} messages)")
    for key, n in per.most_common(args.top):
        print(f"{n / delivered:9.1f}  {key}")


if __name__ == "__main__":
    main()
