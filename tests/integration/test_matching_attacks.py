"""Issue 9 items 1 and 2 as attacks: a hostile client makes the broker match topics or
selectors of the shapes that used to stall it (exponential topic walks, backtracking LIKE),
while a well-behaved AMQP client on another connection keeps doing publish/consume round
trips. The well-behaved client must see no round trip longer than STALL_LIMIT (generous, so
CI noise cannot fail it; the old matchers stalled for seconds) and must lose nothing; the
hostile client must get exactly what its subscriptions match, or the protocol's error.
"""

from __future__ import annotations

import queue
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from stomp_inbox import Inbox

pytestmark = pytest.mark.timeout(60)

STALL_LIMIT = 1.0  # seconds; a round trip takes a few ms on an idle machine


class Prober:
    """The well-behaved client: publish one message, wait for it on a consumer, repeat;
    records the longest round trip and what came back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rounds = 0
        self.worst = 0.0
        self.sent: list[bytes] = []
        self.got: list[bytes] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Prober":
        self._thread.start()
        self.wait_rounds(5)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_rounds(self, n: int, timeout: float = 20) -> None:
        target = self.rounds + n
        with self._progress:
            assert self._progress.wait_for(lambda: self.rounds >= target or self.error, timeout), "prober stuck"
        assert self.error is None, self.error

    def _run(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port))
            ch = conn.channel()
            q = ch.queue_declare("", exclusive=True).method.queue
            ch.basic_consume(q, lambda c, m, p, body: self.got.append(body), auto_ack=True)
            while not self._stop.is_set():
                body = b"probe-%d" % self.rounds
                start = time.monotonic()
                self.sent.append(body)
                ch.basic_publish("", q, body)
                while len(self.got) < len(self.sent):
                    conn.process_data_events(time_limit=0.05)
                    if time.monotonic() - start > 30:
                        raise AssertionError("probe message not back after 30 s")
                self.worst = max(self.worst, time.monotonic() - start)
                with self._progress:
                    self.rounds += 1
                    self._progress.notify_all()
            conn.close()
        except BaseException as e:  # reported by wait_rounds / check
            self.error = e
            with self._progress:
                self._progress.notify_all()

    def check(self) -> None:
        self.wait_rounds(5)  # the probe ran on after the attack, too
        assert self.error is None, self.error
        assert self.worst < STALL_LIMIT, f"a round trip took {self.worst:.2f} s"
        assert self.got[:len(self.sent) - 1] == self.sent[:len(self.sent) - 1]  # nothing lost, in order


# -- AMQP ---------------------------------------------------------------------------------
def test_amqp_many_hash_binding_and_long_keys_do_not_stall_others(mqemu_server):
    port = mqemu_server.ports["amqp"]
    with Prober(port) as probe:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, "amq.topic", "#.#.#.#.#.#.#")              # 7.6 s per publish before
        ch.queue_bind(q, "amq.topic", ".".join(["#", "a"] * 64))    # 255 bytes: 64 '#' that do not merge
        other = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(other, "amq.topic", ".".join(["#", "b"] * 64))
        ch.confirm_delivery()
        keys = [".".join(["w"] * 39 + [f"k{i}"]) for i in range(20)]  # distinct: no cache hits
        keys += [".".join(["a"] * 127 + [f"{i}"]) for i in range(10)]  # 128 words, the most 255 bytes hold
        keys += [".".join(["*"] * 39 + ["#"]), ".".join(["#"] * 100)]  # literal wildcard words
        for key in keys:
            ch.basic_publish("amq.topic", key, key.encode(), mandatory=True)  # confirmed, routed
        got = [ch.basic_get(q, auto_ack=True)[2] for _ in keys]
        assert got == [k.encode() for k in keys]
        assert ch.queue_declare(other, passive=True).method.message_count == 0
        conn.close()
        probe.check()


# -- MQTT ---------------------------------------------------------------------------------
class MqttClient:
    def __init__(self, port: int, client_id: str) -> None:
        self.inbox: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311)
        self.c.on_message = lambda cl, u, m: self.inbox.put(m.topic)
        self.c.on_subscribe = lambda cl, u, mid, codes, props: self.subacks.put([c.value for c in codes])
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(5)

    def subscribe(self, topic_filter: str) -> list[int]:
        self.c.subscribe(topic_filter, qos=1)
        return self.subacks.get(timeout=10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize("engine", ["rabbitmq", "activemq"])
def test_mqtt_plus_filters_against_literal_star_topics_do_not_stall_others(mqemu_start, engine):
    node = mqemu_start(engine=engine)
    with Prober(node.ports["amqp"]) as probe:
        hostile = MqttClient(node.ports["mqtt"], "hostile")
        for levels in (23, 200, 1000):  # 1000 levels: RecursionError on every publish before
            assert hostile.subscribe("/".join(["+"] * levels)) == [1]
        topics = ["/".join(["*"] * 22 + [f"t{i}"]) for i in range(10)]
        topics += ["/".join(["*"] * 199 + [f"t{i}"]) for i in range(5)]
        topics += ["/".join(["x"] * 999 + [f"t{i}"]) for i in range(5)]
        for t in topics:
            hostile.c.publish(t, b"x", qos=1).wait_for_publish(10)
        got = [hostile.inbox.get(timeout=10) for _ in topics]
        assert sorted(got) == sorted(topics)
        hostile.close()
        probe.check()


# -- STOMP, ActiveMQ wildcards and selectors ----------------------------------------------


def stomp_connect(port: int):
    conn = stomp.Connection12([("127.0.0.1", port)], heartbeats=(0, 0))
    listener = Inbox()
    conn.set_listener("c", listener)
    conn.connect("guest", "guest", wait=True)
    return conn, listener


def test_stomp_activemq_star_wildcards_do_not_stall_others(mqemu_start):
    node = mqemu_start(engine="activemq")
    with Prober(node.ports["amqp"]) as probe:
        conn, listener = stomp_connect(node.ports["stomp"])
        conn.subscribe("/topic/" + ".".join(["*"] * 23), id="1", receipt="sub")
        assert listener.receipts.get(timeout=10) == "sub"
        dests = ["/topic/" + ".".join(["*"] * 22 + [f"d{i}"]) for i in range(10)]
        for i, dest in enumerate(dests):
            conn.send(dest, f"m{i}", receipt=f"s{i}")
        assert [listener.receipts.get(timeout=10) for _ in dests] == [f"s{i}" for i in range(len(dests))]
        got = [listener.messages.get(timeout=10).body for _ in dests]
        assert got == [f"m{i}" for i in range(len(dests))]
        conn.disconnect()
        probe.check()


def test_backtracking_like_selector_does_not_stall_others(mqemu_start):
    node = mqemu_start(engine="activemq")
    with Prober(node.ports["amqp"]) as probe:
        conn, listener = stomp_connect(node.ports["stomp"])
        conn.subscribe("/queue/like", id="1", receipt="sub",
                       headers={"selector": "h LIKE '%a%a%a%a%a%a%b'"})  # 15 s per 100-char header before
        assert listener.receipts.get(timeout=10) == "sub"
        for i in range(20):
            conn.send("/queue/like", f"miss{i}", headers={"h": "a" * (80 + i)}, receipt=f"m{i}")
        conn.send("/queue/like", "hit", headers={"h": "a" * 100 + "b"}, receipt="hit")
        assert [listener.receipts.get(timeout=10) for _ in range(21)] == [f"m{i}" for i in range(20)] + ["hit"]
        assert listener.messages.get(timeout=10).body == "hit"
        assert listener.messages.empty()
        conn.disconnect()
        probe.check()


@pytest.mark.parametrize("selector", [
    "(" * 1000 + "a = 1" + ")" * 1000,                 # nested past MAX_NESTING
    "a" + " + a" * 999 + " > 0",                       # a 1000-term chain, deeper than MAX_DEPTH
    " OR ".join(f"a = {i}" for i in range(600)),       # 1801 nodes, past MAX_NODES (fits a 10 KiB header)
], ids=["nested-parens", "1000-term-chain", "600-term-or"])
def test_huge_selector_gets_invalid_selector_error(mqemu_start, selector):
    node = mqemu_start(engine="activemq")
    conn, listener = stomp_connect(node.ports["stomp"])
    conn.subscribe("/queue/huge", id="1", headers={"selector": selector}, receipt="sub")
    err = listener.errors.get(timeout=10)
    # The engine's invalid-selector ERROR: the selector as message, the exception in the body.
    assert err.headers["message"] == selector
    assert err.body == f"InvalidSelector: {selector}\n"
    conn.subscribe("/queue/huge", id="2", headers={"selector": "a = 1"}, receipt="ok")  # still served
    assert listener.receipts.get(timeout=10) == "ok"
    conn.disconnect()


def test_resubscribing_a_heavy_selector_over_a_deep_queue_does_not_stall_others(mqemu_start):
    """Each SUBSCRIBE makes the queue look for entries the new consumer may take. With 10 000
    messages it does not match and a selector of 1000 nodes, looking at all of them took
    seconds per SUBSCRIBE; a scan stops after ActiveMQ's page of 200 entries nobody takes."""
    node = mqemu_start(engine="activemq")
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", node.ports["amqp"]))
    ch = amqp.channel()
    ch.queue_declare("deep")
    for i in range(10_000):
        ch.basic_publish("", "deep", b"x", pika.BasicProperties(headers={"n": i}))
    assert ch.queue_declare("deep", passive=True).method.message_count == 10_000
    heavy = " OR ".join(f"n = {-i}" for i in range(1, 334))  # 1000 nodes, matches nothing
    with Prober(node.ports["amqp"]) as probe:
        conn, listener = stomp_connect(node.ports["stomp"])
        for i in range(10):
            conn.subscribe("/queue/deep", id=f"s{i}", headers={"selector": heavy}, receipt=f"sub{i}")
            assert listener.receipts.get(timeout=30) == f"sub{i}"
            conn.unsubscribe(f"s{i}", receipt=f"unsub{i}")
            assert listener.receipts.get(timeout=30) == f"unsub{i}"
        assert listener.messages.empty()
        conn.disconnect()
        probe.check()
    assert ch.queue_declare("deep", passive=True).method.message_count == 10_000
    amqp.close()
