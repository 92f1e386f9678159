"""An active/standby pair of node processes on one data directory, broken while clients run:
kill -9, graceful stop, pause and network faults on the active. What a publisher was told is
stored (confirms, receipts, PUBACKs) is all there after the standby takes over; what was
delivered and not acknowledged comes back redelivered."""

from __future__ import annotations

import socket
import threading
import time

import paho.mqtt.client as mqtt
import pika
import pytest
import stomp

pytestmark = pytest.mark.timeout(120)

PROTOCOLS = ("amqp", "stomp", "mqtt")


def _refuses(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _amqp_connect(endpoints):
    """Try each endpoint in turn, as a careful app does (pika takes one host at a time)."""
    deadline = time.monotonic() + 30
    while True:
        for host, port in endpoints:
            try:
                return pika.BlockingConnection(pika.ConnectionParameters(host, port, connection_attempts=1,
                                                                         socket_timeout=2))
            except pika.exceptions.AMQPConnectionError:
                continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"no endpoint of {endpoints} answered")
        time.sleep(0.05)  # back-off between rounds of the host list


class AmqpPublisher(threading.Thread):
    """Publishes ``n`` persistent messages with confirms, reconnecting over the endpoint list;
    ``confirmed`` holds what the broker confirmed."""

    def __init__(self, endpoints, queue: str, n: int) -> None:
        super().__init__(daemon=True)
        self.endpoints, self.queue, self.n = endpoints, queue, n
        self.confirmed: list[bytes] = []
        self.reconnects = 0
        self.progress = threading.Condition()

    def run(self) -> None:
        i = 0
        while i < self.n:
            try:
                conn = _amqp_connect(self.endpoints)
                ch = conn.channel()
                ch.confirm_delivery()
                ch.queue_declare(self.queue, durable=True)
                while i < self.n:
                    body = b"m%06d" % i
                    ch.basic_publish("", self.queue, body, pika.BasicProperties(delivery_mode=2))
                    with self.progress:
                        self.confirmed.append(body)
                        self.progress.notify_all()
                    i += 1
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                self.reconnects += 1  # the message in flight is sent again: at least once

    def wait_confirmed(self, count: int, timeout: float = 30) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.confirmed) >= count, timeout), len(self.confirmed)


def _drain_amqp(endpoints, queue: str) -> list[tuple[bytes, bool]]:
    conn = _amqp_connect(endpoints)
    ch = conn.channel()
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            break
        out.append((body, method.redelivered))
    conn.close()
    return out


def test_the_standby_refuses_until_it_takes_over(mqemu_active_standby):
    pair = mqemu_active_standby
    active, standby = pair.node("active"), pair.node("standby")
    for proto in PROTOCOLS:
        assert not _refuses("127.0.0.1", active["ports"][proto])
        assert _refuses("127.0.0.1", standby["ports"][proto])  # as ActiveMQ's slave: no listener
    started = time.monotonic()
    pair.kill("active")
    pair.wait_for_role(standby["name"], "active", timeout=10)
    took = time.monotonic() - started
    for proto in PROTOCOLS:
        assert not _refuses("127.0.0.1", standby["ports"][proto])
        assert _refuses("127.0.0.1", active["ports"][proto])
    assert took < 10
    kinds = [(e["event"], e.get("node"), e.get("role")) for e in pair.status()["events"]]
    assert ("role", active["name"], "down") in kinds and ("role", standby["name"], "active") in kinds
    # Where the takeover time went, as the new active recorded it.
    own = [e["event"] for e in pair.node(standby["name"])["events"]]
    assert own.index("lock-acquired") < own.index("recovered") < own.index("listening") < own.index("role", 1)
    waited = next(e for e in pair.node(standby["name"])["events"] if e["event"] == "lock-acquired")["waited"]
    assert waited > 0  # it was a standby first


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_no_confirmed_message_is_lost_when_the_active_goes(mqemu_active_standby, fault):
    pair = mqemu_active_standby
    endpoints = pair.endpoints("amqp")
    first = pair.node("active")["name"]
    publisher = AmqpPublisher(endpoints, "orders", 600)
    publisher.start()
    publisher.wait_confirmed(200)
    pair.fault(fault, "active")
    publisher.join(60)
    assert not publisher.is_alive() and len(publisher.confirmed) == 600
    assert publisher.reconnects >= 1
    assert pair.node("active")["name"] != first
    got = {body for body, _ in _drain_amqp(endpoints, "orders")}
    assert set(publisher.confirmed) <= got  # nothing confirmed is lost (duplicates allowed)


def test_unacknowledged_deliveries_come_back_redelivered(mqemu_active_standby):
    pair = mqemu_active_standby
    endpoints = pair.endpoints("amqp")
    conn = _amqp_connect(endpoints)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("work", durable=True)
    for i in range(5):
        ch.basic_publish("", "work", b"%d" % i, pika.BasicProperties(delivery_mode=2))
    taken = [ch.basic_get("work")[2] for _ in range(2)]  # delivered, never acknowledged
    assert taken == [b"0", b"1"]
    pair.kill("active")
    pair.wait_for_role("node-2", "active")
    got = _drain_amqp(endpoints, "work")
    assert got == [(b"0", True), (b"1", True), (b"2", True), (b"3", True), (b"4", True)]
    # Every recovered message is flagged redelivered: the store keeps no per-delivery mark.


def test_stomp_receipted_sends_survive_a_kill(mqemu_active_standby):
    pair = mqemu_active_standby
    hosts = pair.endpoints("stomp")
    receipted: list[str] = []

    class Receipts(stomp.ConnectionListener):
        def __init__(self) -> None:
            self.got: set[str] = set()
            self.cond = threading.Condition()

        def on_receipt(self, frame) -> None:
            with self.cond:
                self.got.add(frame.headers["receipt-id"])
                self.cond.notify_all()

    def send_batch(start: int, count: int) -> None:
        listener = Receipts()
        conn = stomp.Connection12(hosts, reconnect_attempts_max=50, reconnect_sleep_initial=0.05)
        conn.set_listener("r", listener)
        conn.connect("guest", "guest", wait=True)
        for i in range(start, start + count):
            conn.send("/queue/audit", f"s{i}", receipt=f"r{i}", headers={"persistent": "true"})
        with listener.cond:
            assert listener.cond.wait_for(lambda: len(listener.got) == count, 20)
        receipted.extend(f"s{i}" for i in range(start, start + count))
        conn.disconnect()

    send_batch(0, 100)
    pair.kill("active")
    pair.wait_for_role("node-2", "active")
    send_batch(100, 100)  # stomp.py connects to the host list: the first answers now refuses

    received: list[str] = []
    done = threading.Event()

    class Collect(stomp.ConnectionListener):
        def on_message(self, frame) -> None:
            received.append(frame.body)
            if len(received) >= 200:
                done.set()

    conn = stomp.Connection12(hosts)
    conn.set_listener("c", Collect())
    conn.connect("guest", "guest", wait=True)
    conn.subscribe("/queue/audit", id="1", ack="auto")
    assert done.wait(20), len(received)
    conn.disconnect()
    assert set(receipted) <= set(received)


def test_mqtt_qos1_to_a_persistent_session_survives_a_kill(mqemu_active_standby):
    pair = mqemu_active_standby
    (h1, p1), (h2, p2) = pair.endpoints("mqtt")
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keeper", clean_session=False)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(h1, p1)
    sub.loop_start()
    sub.subscribe("sensors/#", qos=1)
    assert subscribed.wait(10)
    sub.disconnect()
    sub.loop_stop()

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="writer")
    pub.connect(h1, p1)
    pub.loop_start()
    acked = [pub.publish(f"sensors/{i}", f"v{i}", qos=1) for i in range(50)]
    for info in acked:
        info.wait_for_publish(10)  # PUBACK: the broker has it on disk
    pub.disconnect()
    pub.loop_stop()

    pair.kill("active")
    pair.wait_for_role("node-2", "active")
    got: list[str] = []
    all_in = threading.Event()

    def on_message(client, userdata, message) -> None:
        got.append(message.payload.decode())
        if len(got) >= 50:
            all_in.set()

    again = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="keeper", clean_session=False)
    again.on_message = on_message
    again.connect(h2, p2)  # paho reconnects to one host: the app picks the next one
    again.loop_start()
    assert all_in.wait(20), len(got)
    again.disconnect()
    again.loop_stop()
    assert set(got) == {f"v{i}" for i in range(50)}


def test_the_old_active_rejoins_as_standby(mqemu_active_standby):
    pair = mqemu_active_standby
    pair.kill("node-1")
    pair.wait_for_role("node-2", "active")
    pair.start_node("node-1")
    assert pair.node("node-1")["role"] == "standby"
    pair.stop_node("node-2")  # graceful: node-1 takes over again
    pair.wait_for_role("node-1", "active")


def test_a_paused_active_keeps_the_lock_and_resumes(mqemu_active_standby):
    """SIGSTOP: sockets stay open and nothing answers; the standby cannot take the lock (the
    process holding it is alive), as with ActiveMQ's file lock."""
    pair = mqemu_active_standby
    endpoints = pair.endpoints("amqp")
    conn = _amqp_connect(endpoints)
    pair.pause("active")
    try:
        with socket.create_connection(endpoints[0], timeout=1) as s:  # the proxy still accepts
            s.sendall(b"AMQP\x00\x00\x09\x01")
            with pytest.raises(TimeoutError):
                s.recv(100)  # nothing answers: no connection.start
        assert pair.node("node-2")["role"] == "standby"
    finally:
        pair.resume("active")
    conn.channel().queue_declare("after-pause", exclusive=True)  # the old connection works again
    conn.close()


def test_network_down_refuses_and_cuts_then_heals(mqemu_active_standby):
    pair = mqemu_active_standby
    host, port = pair.endpoints("amqp")[0]
    conn = _amqp_connect([(host, port)])
    with pair.down("active", protocol="amqp"):
        assert _refuses(host, port)
        with pytest.raises((pika.exceptions.AMQPError, OSError)):
            conn.channel()  # the link was cut
    assert not _refuses(host, port)
    assert pair.node("node-1")["role"] == "active"  # a network fault moves no lock
