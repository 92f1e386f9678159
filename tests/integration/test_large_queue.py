"""Queues larger than memory, end to end with pika: a node with a small ``[store]
memory_budget`` pages bodies to disk, reports the full message count, delivers everything in
order, and after a kill -9 recovers the confirmed messages of a paged queue as an index."""

from __future__ import annotations

import re

import pika
import pytest
from durability_helpers import Nodes

PERSISTENT = pika.BasicProperties(delivery_mode=2)
PAD = b"x" * 1000


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mqemu.toml"
    path.write_text('[store]\nmemory_budget = "128KB"\n')
    return str(path)


def consume(ch, queue: str, n: int) -> list[tuple[bytes, bool]]:
    out = []
    ch.basic_qos(prefetch_count=500)
    for method, _, body in ch.consume(queue, inactivity_timeout=10):
        assert method is not None, f"stalled after {len(out)} of {n}"
        out.append((body, method.redelivered))
        if len(out) % 250 == 0 or len(out) == n:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if len(out) == n:
            break
    ch.cancel()
    return out


def test_paged_queues_keep_count_and_order_and_survive_kill9(nodes, tmp_path, config):
    data = tmp_path / "data"
    node = nodes.start(data, "--config", config).wait_ready()
    conn = node.connect()
    ch = conn.channel()  # no confirms: the one on "last" covers every write before it
    ch.queue_declare("durable", durable=True)
    ch.queue_declare("transient")
    ch.queue_declare("lazy", arguments={"x-queue-mode": "lazy"})
    n = 1000
    for i in range(2 * n):
        ch.basic_publish("", "durable", b"%06d" % i + PAD, PERSISTENT)
    for i in range(n):
        ch.basic_publish("", "transient", b"%06d" % i + PAD)
        ch.basic_publish("", "lazy", b"%06d" % i)
    assert ch.queue_declare("durable", durable=True, passive=True).method.message_count == 2 * n
    assert ch.queue_declare("transient", passive=True).method.message_count == n
    expected = [b"%06d" % i for i in range(n)]
    assert [b[:6] for b, _ in consume(ch, "transient", n)] == expected
    assert [b for b, _ in consume(ch, "lazy", n)] == expected
    assert [b[:6] for b, _ in consume(ch, "durable", n)] == expected
    confirmed = conn.channel()
    confirmed.confirm_delivery()
    confirmed.basic_publish("", "durable", b"last", PERSISTENT)  # covers the writes and acks above
    conn.close()
    node.kill9()

    node = nodes.start(data, "--config", config).wait_ready()
    # Recovery loaded the big queue as an index: the bodies stay on disk.
    assert int(re.search(r"store opened .* paged=(\d+)", node.log.read_text()).group(1)) == n + 1
    conn = node.connect()
    ch = conn.channel()
    assert ch.queue_declare("durable", durable=True, passive=True).method.message_count == n + 1
    rest = consume(ch, "durable", n + 1)
    assert [b[:6] for b, _ in rest[:-1]] == [b"%06d" % i for i in range(n, 2 * n)]
    assert rest[-1][0] == b"last" and all(r for _, r in rest)
    conn.close()
