"""Topic routing against a reference RabbitMQ: the same bindings on ``amq.topic`` and the same
routing keys, including keys whose words are a literal ``*`` or ``#`` (ordinary words on
RabbitMQ) and patterns with several ``#``. Which queue gets which key must agree.

Set ``MQEMU_REF_AMQP`` (``amqp://user:pass@host:port/``) to run it.
"""

from __future__ import annotations

import os
import uuid

import pika
import pytest

REF = os.environ.get("MQEMU_REF_AMQP")
pytestmark = [pytest.mark.skipif(not REF, reason="MQEMU_REF_AMQP is not set (no reference RabbitMQ to compare with)"),
              pytest.mark.timeout(60)]

PATTERNS = ["a.*", "a.#", "#", "*", "*.*", "#.b", "a.#.b", "#.#", "a.b", "*.#.*", "#.*.#", "a.#.#.b",
            "#.#.#.#.#.#.#"]
KEYS = ["a.*", "a.#", "*", "#", "a.b", "a", "a.x.b", "*.*", "#.#", "x.#.b", "*.b", "a.*.*.b",
        ".".join(["w"] * 12), ".".join(["*"] * 12), "a..b", ""]


def routes(params: pika.URLParameters | pika.ConnectionParameters) -> dict[str, list[str]]:
    """pattern -> the keys its queue received, in publish order."""
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    tag = uuid.uuid4().hex[:8]
    queues = {}
    for i, p in enumerate(PATTERNS):
        q = ch.queue_declare(f"mqemu-diff-topic-{tag}-{i}", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", p)
        queues[p] = q
    ch.confirm_delivery()
    for k in KEYS:
        ch.basic_publish("amq.topic", k, k.encode() or b"<empty>")
    out = {}
    for p, q in queues.items():
        got = []
        while True:
            method, _, body = ch.basic_get(q, auto_ack=True)
            if method is None:
                break
            got.append(body.decode())
        out[p] = got
    conn.close()
    return out


def test_topic_routing_same_as_rabbitmq(mqemu_server):
    ours = routes(pika.ConnectionParameters("127.0.0.1", mqemu_server.ports["amqp"]))
    ref = routes(pika.URLParameters(REF))
    for p in PATTERNS:
        print(f"{p!r:18} mqemu {ours[p]}\n{'':18} rabbit {ref[p]}")
    assert ours == ref
