"""Message statistics and rates (``protocols/http/rates.py``) over real clients: pika and
stomp.py publish and consume, httpx reads the management API and ActiveMQ's console.

The tests take the samples themselves (``Sampler.sample`` run in the node's loop, the
node's own loop set to a long interval), so a rate is read between two known samples and
no test waits on a clock."""

import time
import xml.etree.ElementTree as ET

import httpx
import pika
import pytest
import stomp
from stomp_inbox import Collect

from mqemu.broker.config import BrokerConfig
from mqemu.protocols.http.rates import QUEUE_STATS, sampler_of

pytestmark = pytest.mark.timeout(60)

N = 30


def sample(node):
    """One sample of the node's counters, taken in its loop; returns the samples so far."""
    sampler = sampler_of(node.node)
    node._thread.call(sampler.sample)
    return sampler.samples


@pytest.fixture
def rabbit(mqemu_start):
    node = mqemu_start(ports={"http": 0}, stats_interval=3600)
    with httpx.Client(base_url=f"http://127.0.0.1:{node.ports['http']}/api", auth=("guest", "guest"),
                      timeout=10) as api:
        yield node, api


def _traffic(node, queue):
    """N published with confirms and consumed with acks; one more published, got, nacked
    with requeue, got again and acked: N + 1 publishes, N + 2 deliveries, 1 redelivery, N + 1 acks."""
    conn = pika.BlockingConnection(pika.URLParameters(node.url("amqp")))
    try:
        ch = conn.channel()
        ch.queue_declare(queue)
        ch.confirm_delivery()
        for i in range(N):
            ch.basic_publish("", queue, b"m%d" % i)
        got = 0
        for method, _, _ in ch.consume(queue, inactivity_timeout=10):
            assert method is not None, "the deliveries stopped"
            ch.basic_ack(method.delivery_tag)
            got += 1
            if got == N:
                break
        assert ch.cancel() == 0  # nothing left pending: every delivery was acked
        ch.basic_publish("", queue, b"last")
        method, _, _ = ch.basic_get(queue)
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, _, _ = ch.basic_get(queue)
        assert method.redelivered
        ch.basic_ack(method.delivery_tag)
        assert ch.basic_get(queue) == (None, None, None)
    finally:
        conn.close()


def test_queue_vhost_and_overview_rates_between_two_samples(rabbit):
    node, api = rabbit
    queue = "rates-q"
    before = sample(node)
    t0 = time.monotonic()
    _traffic(node, queue)
    assert sample(node) == before + 1
    elapsed = time.monotonic() - t0

    q = api.get(f"/queues/%2F/{queue}").json()
    stats = q["message_stats"]
    assert set(stats) == {k for s in QUEUE_STATS for k in (s, s + "_details")}
    assert stats["publish"] == N + 1
    assert stats["deliver"] == N and stats["get"] == 2 and stats["deliver_get"] == N + 2
    assert stats["deliver_no_ack"] == 0 and stats["get_no_ack"] == 0 and stats["get_empty"] == 1
    assert stats["ack"] == N + 1 and stats["redeliver"] == 1
    # the rate is the counter's difference between the two samples over the time between them
    assert stats["publish_details"]["rate"] >= (N + 1) / elapsed * 0.95 > 0
    assert stats["ack_details"]["rate"] > 0 and stats["deliver_get_details"]["rate"] > 0
    assert q["messages"] == 0 and q["messages_details"] == {"rate": 0.0}

    for path in ("/vhosts/%2F", "/overview"):
        data = api.get(path).json()
        ms = data["message_stats"]
        assert ms["publish"] == N + 1 and ms["ack"] == N + 1 and ms["deliver_get"] == N + 2, path
        assert ms["publish_details"]["rate"] > 0 and ms["ack_details"]["rate"] > 0, path
        assert ms["confirm"] == 0 and ms["confirm_details"] == {"rate": 0.0}, path  # not counted, RabbitMQ's key
    assert api.get("/overview").json()["queue_totals"]["messages_details"] == {"rate": 0.0}

    # A sample with nothing new since the last: the counts stay, the rates fall to zero.
    sample(node)
    stats = api.get(f"/queues/%2F/{queue}").json()["message_stats"]
    assert stats["publish"] == N + 1 and stats["publish_details"] == {"rate": 0.0}
    # A deleted queue's counts stay in its vhost's totals.
    assert api.delete(f"/queues/%2F/{queue}").status_code == 204
    sample(node)
    assert api.get("/vhosts/%2F").json()["message_stats"]["publish"] == N + 1
    assert api.get("/overview").json()["message_stats"]["ack"] == N + 1


def test_a_queue_that_did_nothing_has_no_message_stats(rabbit):
    node, api = rabbit
    assert api.put("/queues/%2F/idle", json={}).status_code == 201
    sample(node)
    sample(node)
    q = api.get("/queues/%2F/idle").json()
    assert "message_stats" not in q  # as RabbitMQ: none until the queue did something
    assert q["messages_ready_details"] == {"rate": 0.0}
    # a depth that grows between two samples has a positive rate
    for _ in range(5):
        assert api.post("/exchanges/%2F/amq.default/publish", json={
            "properties": {}, "routing_key": "idle", "payload": "x", "payload_encoding": "string"}).json() == {
                "routed": True}
    sample(node)
    q = api.get("/queues/%2F/idle").json()
    assert q["message_stats"]["publish"] == 5
    assert q["messages_details"]["rate"] > 0 and q["messages_ready_details"]["rate"] > 0


def test_the_node_samples_on_its_own_interval(mqemu_start):
    node = mqemu_start(ports={"http": 0}, stats_interval=0.05)
    sampler = sampler_of(node.node)
    deadline = time.monotonic() + 20
    while sampler.samples < 3:  # the loop beside the HTTP listener takes them
        assert time.monotonic() < deadline, "the node took no samples"
        time.sleep(0.02)
    assert sampler.running and sampler.interval == 0.05


def test_activemq_dequeue_dispatch_and_expired_counts(mqemu_start):
    node = mqemu_start(config=BrokerConfig(engine="activemq"), ports={"http": 0})
    mbean = "org.apache.activemq:type=Broker,brokerName=localhost,destinationType=Queue,destinationName=counted"
    conn = stomp.Connection12([("127.0.0.1", node.ports["stomp"])])
    listener = Collect()
    conn.set_listener("", listener)
    conn.connect(wait=True)
    try:
        for i in range(N):
            conn.send("/queue/counted", f"m{i}", receipt=f"r{i}")
        listener.wait(lambda: len(listener.receipts) == N)
        conn.subscribe("/queue/counted", id="s1", ack="auto")
        listener.wait(lambda: len(listener.messages) == N)
        conn.unsubscribe("s1", receipt="unsub")
        listener.wait(lambda: "unsub" in listener.receipts)
        # one that expires in the queue: ActiveMQ counts it as expired and dequeued
        conn.send("/queue/counted", "late", headers={"expires": str(int(time.time() * 1000) + 50)}, receipt="late")
        listener.wait(lambda: "late" in listener.receipts)
        with httpx.Client(base_url=f"http://127.0.0.1:{node.ports['http']}", auth=("admin", "admin"),
                          timeout=10) as console:
            deadline = time.monotonic() + 20
            while True:
                value = console.get(f"/api/jolokia/read/{mbean}").json()["value"]
                if value["ExpiredCount"] == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # the queue expires its head on its own timer
            assert value["EnqueueCount"] == N + 1 and value["DispatchCount"] == N
            assert value["ExpiredCount"] == 1 and value["DequeueCount"] == N + 1
            assert value["QueueSize"] == 0 and value["InFlightCount"] == 0
            broker = console.get("/api/jolokia/read/org.apache.activemq:type=Broker,brokerName=localhost").json()
            assert broker["value"]["TotalDequeueCount"] == N + 1
            xml = ET.fromstring(console.get("/admin/xml/queues.jsp").text)
            stats = next(q for q in xml if q.get("name") == "counted").find("stats")
            assert stats.get("enqueueCount") == str(N + 1) and stats.get("dequeueCount") == str(N + 1)
    finally:
        conn.disconnect()


def test_no_ack_deliveries_are_told_from_those_that_wait_for_an_ack(rabbit):
    node, api = rabbit
    conn = pika.BlockingConnection(pika.URLParameters(node.url("amqp")))
    try:
        ch = conn.channel()
        ch.queue_declare("mixed")
        ch.confirm_delivery()
        for i in range(6):
            ch.basic_publish("", "mixed", b"%d" % i)
        got = []
        for method, _, _ in ch.consume("mixed", auto_ack=True, inactivity_timeout=10):
            assert method is not None
            got.append(method)
            if len(got) == 6:
                break
        ch.cancel()
        for i in range(3):
            ch.basic_publish("", "mixed", b"g%d" % i)
        method, _, _ = ch.basic_get("mixed")  # rejected without requeue: dropped
        ch.basic_reject(method.delivery_tag, requeue=False)
        ch.basic_get("mixed", auto_ack=True)
        method, _, _ = ch.basic_get("mixed")  # still unacked when the stats are read
        ch.basic_publish("", "mixed", b"sync")  # a confirm round trip: the reject was handled
        stats = api.get("/queues/%2F/mixed").json()["message_stats"]
        assert (stats["deliver_no_ack"], stats["deliver"], stats["get"], stats["get_no_ack"], stats["ack"]) == (
            6, 0, 2, 1, 0)
        assert stats["deliver_get"] == 9
    finally:
        conn.close()


def test_activemq_durable_subscriber_counters(mqemu_start):
    node = mqemu_start(config=BrokerConfig(engine="activemq"), ports={"http": 0})
    conn = stomp.Connection12([("127.0.0.1", node.ports["stomp"])])
    listener = Collect()
    conn.set_listener("", listener)
    conn.connect(wait=True, headers={"client-id": "app1"})
    try:
        conn.subscribe("/topic/alerts", id="d1", ack="auto",
                       headers={"activemq.subscriptionName": "audit", "receipt": "dsub"})
        listener.wait(lambda: "dsub" in listener.receipts)
        for i in range(3):
            conn.send("/topic/alerts", f"a{i}", receipt=f"a{i}")
        listener.wait(lambda: len(listener.messages) == 3 and len(listener.receipts) == 4)
        with httpx.Client(base_url=f"http://127.0.0.1:{node.ports['http']}", auth=("admin", "admin"),
                          timeout=10) as console:
            subs = ET.fromstring(console.get("/admin/xml/subscribers.jsp").text).findall("subscriber")
        (stats,) = [s.find("stats").attrib for s in subs if s.get("subscriptionName") == "audit"]
        assert (stats["dispatchedCounter"], stats["enqueueCounter"], stats["dequeueCounter"]) == ("3", "3", "3")
    finally:
        conn.disconnect()


def test_exchange_publish_in_and_out_between_two_samples(rabbit):
    """publish_in counts messages published to an exchange, publish_out the queues they
    reached (twice for a fanout to two queues, none for an exchange without bindings); every
    publish to the default exchange counts out, its queue found or not (RabbitMQ 3.10)."""
    node, api = rabbit
    before = api.get("/exchanges/%2F/amq.default").json().get("message_stats") or {}
    sample(node)
    t0 = time.monotonic()
    conn = pika.BlockingConnection(pika.URLParameters(node.url("amqp")))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare("x-fan", "fanout")
        ch.exchange_declare("x-empty", "fanout")
        for q in ("x-a", "x-b"):
            ch.queue_declare(q)
            ch.queue_bind(q, "x-fan")
        for _ in range(N):
            ch.basic_publish("x-fan", "", b"m")
        ch.basic_publish("x-empty", "", b"m")
        ch.basic_publish("", "x-a", b"m")
        ch.basic_publish("", "no-such-queue", b"m")
    finally:
        conn.close()
    sample(node)
    elapsed = time.monotonic() - t0
    fan = api.get("/exchanges/%2F/x-fan").json()["message_stats"]
    assert (fan["publish_in"], fan["publish_out"]) == (N, 2 * N)
    assert 0 < fan["publish_in_details"]["rate"] and N / elapsed * 0.5 <= fan["publish_in_details"]["rate"]
    assert abs(fan["publish_out_details"]["rate"] - 2 * fan["publish_in_details"]["rate"]) < 0.05
    assert api.get("/exchanges/%2F/x-empty").json()["message_stats"] == {
        "publish_in": 1, "publish_in_details": {"rate": round(1 / (sampler_of(node.node)._times[1] -
                                                                   sampler_of(node.node)._times[0]), 2)}}
    default = api.get("/exchanges/%2F/amq.default").json()["message_stats"]
    assert default["publish_in"] - before.get("publish_in", 0) == 2
    assert default["publish_out"] - before.get("publish_out", 0) == 2
    listed = {x["name"]: x.get("message_stats") for x in api.get("/exchanges/%2F").json()}
    assert listed["x-fan"]["publish_out"] == 2 * N and listed["amq.topic"] is None
