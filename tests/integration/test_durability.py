"""Durability end to end: ``mqemu serve --data-dir`` killed with SIGKILL and restarted.

Rules checked: every message the broker confirmed comes back exactly once after a kill -9;
unconfirmed ones may come back (once); recovered messages are flagged redelivered; a second
node on a held data directory exits non-zero naming the directory and the holder's pid.
"""

from __future__ import annotations

import random
import threading
import time

import pika
import pytest

from durability_helpers import Nodes, drain

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.close()


def test_confirmed_messages_survive_kill9_and_acked_ones_stay_gone(nodes, tmp_path):
    data = tmp_path / "data"
    node = nodes.start(data).wait_ready()
    conn = node.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    ch.exchange_declare("dx", "direct", durable=True)
    ch.queue_declare("dq", durable=True)
    ch.queue_bind("dq", "dx", "k")
    ch.queue_declare("tq", durable=False)
    ch.basic_publish("", "tq", b"transient queue", PERSISTENT)
    for i in range(200):
        ch.basic_publish("dx", "k", b"m%03d" % i, PERSISTENT)
    ch.basic_publish("dx", "k", b"not persistent", pika.BasicProperties(delivery_mode=1))
    for _ in range(50):
        method, _, _ = ch.basic_get("dq", auto_ack=False)
        ch.basic_ack(method.delivery_tag)
    # A confirm covers every write made before it on this connection, the acks included.
    ch.basic_publish("dx", "k", b"last", PERSISTENT)
    node.kill9()
    conn = None

    node = nodes.start(data).wait_ready()
    got = drain(node, "dq")
    assert [b for b, _ in got] == [b"m%03d" % i for i in range(50, 200)] + [b"last"]
    assert all(redelivered for _, redelivered in got)
    c = node.connect()
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):  # transient queue is gone
            c.channel().queue_declare("tq", passive=True)
    finally:
        c.close()
    assert "store: SQLite in" in node.log.read_text()


def test_second_node_on_the_same_data_dir_exits_nonzero(nodes, tmp_path):
    data = tmp_path / "data"
    first = nodes.start(data).wait_ready()
    second = nodes.start(data)
    assert second.proc.wait(15) == 1
    text = second.log.read_text()
    assert str(data) in text and f"pid {first.proc.pid}" in text and "in use" in text
    assert first.proc.poll() is None


def test_damaged_database_exits_nonzero_naming_the_file(nodes, tmp_path):
    data = tmp_path / "data"
    node = nodes.start(data).wait_ready()
    node.proc.terminate()
    assert node.proc.wait(10) == 0
    db = data / "mqemu.sqlite"
    with open(db, "r+b") as f:
        f.write(b"garbage" * 20)
    bad = nodes.start(data)
    assert bad.proc.wait(15) == 1
    assert f"database file {db} is damaged" in bad.log.read_text()


def test_without_data_dir_the_log_says_memory_only(nodes):
    node = nodes.start(None).wait_ready()
    node.proc.terminate()
    node.proc.wait(10)
    assert "store: memory only" in node.log.read_text()


class Publisher(threading.Thread):
    """Publishes persistent messages with confirms until the connection dies."""

    def __init__(self, port_node, prefix: str, confirmed: set) -> None:
        super().__init__(daemon=True)
        self.node, self.prefix, self.confirmed = port_node, prefix, confirmed
        self.sent = 0

    def run(self) -> None:
        try:
            conn = self.node.connect()
            ch = conn.channel()
            ch.confirm_delivery()
            while True:
                body = f"{self.prefix}-{self.sent}".encode()
                self.sent += 1
                ch.basic_publish("", "kq", body, PERSISTENT)  # returns once confirmed
                self.confirmed.add(body)
        except Exception:
            return  # the node was killed


class Consumer(threading.Thread):
    """Consumes and acks until the connection dies; records what it acked."""

    def __init__(self, node, acked: list) -> None:
        super().__init__(daemon=True)
        self.node, self.acked = node, acked

    def run(self) -> None:
        try:
            conn = self.node.connect()
            ch = conn.channel()
            ch.basic_qos(prefetch_count=50)
            for method, _, body in ch.consume("kq", inactivity_timeout=0.05):
                if method is not None:
                    # Counted before the ack: the node may take the ack and be killed before
                    # basic_ack returns (it raises then), and an acked message is gone.
                    self.acked.append(body)
                    ch.basic_ack(method.delivery_tag)
        except Exception:
            return


@pytest.mark.timeout(120)
def test_kill9_at_random_moments_loses_nothing_confirmed(nodes, tmp_path):
    data = tmp_path / "data"
    rnd = random.Random(6)  # fixed seed: the same kill times on every run
    confirmed: set[bytes] = set()
    acked: list[bytes] = []
    for cycle in range(20):
        node = nodes.start(data).wait_ready()
        if cycle == 0:
            c = node.connect()
            c.channel().queue_declare("kq", durable=True)
            c.close()
        threads = [Publisher(node, f"c{cycle}p{i}", confirmed) for i in range(3)]
        if cycle % 2:
            threads.append(Consumer(node, acked))
        for t in threads:
            t.start()
        time.sleep(rnd.uniform(0.1, 0.6))
        node.kill9()
        for t in threads:
            t.join(10)
    node = nodes.start(data).wait_ready()
    remaining = [b for b, _ in drain(node, "kq")]
    assert len(remaining) == len(set(remaining)), "a message came back twice"
    lost = confirmed - set(remaining) - set(acked)
    assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"
    assert len(confirmed) > 100  # the load was real
