"""STOMP receipts mean "on disk": kill -9 the node and every receipted persistent SEND is back.

Runs `mqemu serve --data-dir` as a subprocess (durability_helpers), sends persistent messages
with stomp.py asking a receipt for each, kills the node with SIGKILL while more sends are in
flight, restarts it on the same data directory and drains the queue with pika.
"""

from __future__ import annotations

import json
import threading

import pytest
import stomp

from durability_helpers import Nodes, drain

pytestmark = pytest.mark.timeout(60)


class Receipts(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.want = 0

    def on_receipt(self, frame) -> None:
        with self.lock:
            self.ids.add(frame.headers["receipt-id"])
            if len(self.ids) >= self.want:
                self.event.set()


def test_receipted_persistent_sends_survive_kill_9(tmp_path):
    nodes = Nodes(tmp_path)
    data = tmp_path / "data"
    try:
        node = nodes.start(data, "--stomp-port", "0").wait_ready()
        port = json.loads(node.ready.read_text())["stomp"]
        conn = stomp.Connection12([("127.0.0.1", port)], vhost="/", heartbeats=(0, 0))
        receipts = Receipts()
        conn.set_listener("r", receipts)
        conn.connect("guest", "guest", wait=True)
        receipts.want = 200
        for i in range(200):
            conn.send("/queue/stomp-durable", f"m{i}", headers={"persistent": "true", "receipt": f"r{i}"})
        assert receipts.event.wait(20), f"only {len(receipts.ids)} receipts"
        for i in range(200, 400):  # in flight when the node dies: may or may not be kept
            conn.send("/queue/stomp-durable", f"m{i}", headers={"persistent": "true", "receipt": f"r{i}"})
        node.kill9()
        with receipts.lock:
            receipted = {int(r[1:]) for r in receipts.ids}
        try:
            conn.disconnect()
        except Exception:  # the node is gone; stomp.py may already have seen the socket close
            pass

        restarted = nodes.start(data).wait_ready()
        got = drain(restarted, "stomp-durable")
        bodies = [int(body[1:]) for body, _redelivered in got]
        assert len(bodies) == len(set(bodies)), "a message came back twice"
        assert receipted <= set(bodies), f"receipted but lost: {sorted(receipted - set(bodies))[:10]}"
        assert bodies == sorted(bodies), "the queue's order changed"
    finally:
        nodes.close()


def test_activemq_receipted_acks_survive_kill_9(tmp_path):
    """ActiveMQ writes an ACK whose sender asked a receipt before it answers (KahaDB syncs
    an ack that needs a response): a kill -9 right after the receipts redelivers nothing."""
    nodes = Nodes(tmp_path)
    data = tmp_path / "data"
    try:
        node = nodes.start(data, "--engine", "activemq", "--stomp-port", "0").wait_ready()
        for r in range(3):
            port = json.loads(node.ready.read_text())["stomp"]
            conn = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
            receipts, messages = Receipts(), Messages()
            conn.set_listener("r", receipts)
            conn.set_listener("m", messages)
            conn.connect("guest", "guest", wait=True)
            receipts.want = 50
            for i in range(50):
                conn.send("/queue/acked", f"{r}-{i}", headers={"persistent": "true", "receipt": f"s{i}"})
            assert receipts.event.wait(20), f"only {len(receipts.ids)} send receipts"
            receipts.ids.clear()
            receipts.event.clear()
            receipts.want = 50
            conn.subscribe("/queue/acked", "1", ack="client-individual")
            assert messages.wait_for(50), f"only {len(messages.frames)} messages"
            assert sorted(f.body for f in messages.frames) == sorted(f"{r}-{i}" for i in range(50))
            for f in messages.frames:
                conn.ack(f.headers["ack"], receipt=f"a-{f.body}")
            assert receipts.event.wait(20), f"only {len(receipts.ids)} ack receipts"
            node.kill9()
            node = nodes.start(data, "--engine", "activemq", "--stomp-port", "0").wait_ready()
            port = json.loads(node.ready.read_text())["stomp"]
            check = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
            left = Messages()
            check.set_listener("m", left)
            check.connect("guest", "guest", wait=True)
            check.send("/queue/acked", "sentinel", headers={"persistent": "true"})
            check.subscribe("/queue/acked", "1", ack="auto")
            assert left.wait_for(1)
            assert [f.body for f in left.frames] == ["sentinel"], "an acked message came back"
            check.disconnect()
    finally:
        nodes.close()


class Messages(stomp.ConnectionListener):
    def __init__(self) -> None:
        self.frames: list = []
        self.cond = threading.Condition()

    def on_message(self, frame) -> None:
        with self.cond:
            self.frames.append(frame)
            self.cond.notify_all()

    def wait_for(self, n: int, timeout: float = 20) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.frames) >= n, timeout)
