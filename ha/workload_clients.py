"""The workload's per-protocol clients: one connection each, opened by the workload's
reconnect loop (``mqemu.ha.workload``) and thrown away when it breaks.

A publisher has ``publish(body)``: it returns once the broker acknowledged the message
(AMQP confirm, STOMP receipt, MQTT PUBACK), raises ``Rejected`` if the broker said no, and
raises anything else (``ConnectionError``, ``TimeoutError``, the client's own errors) when
the outcome is unknown. A consumer has ``subscribe()``, ``poll(timeout) -> [Delivery]`` and
``ack(delivery)``; any exception from them means the connection is gone. ``ACK_CONFIRMED``
says whether ``ack`` returns only once the broker has the ack (STOMP: the ACK's receipt) or
once it is written (AMQP and MQTT acks have no answer: one cut by a broken connection is
undone, and the checker tells its redelivery by the broker's redelivered flag). Every client
has ``close()``, which never raises.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any


class Rejected(Exception):
    """The broker refused the message (AMQP nack or unroutable, STOMP ERROR for the receipt)."""


@dataclass(slots=True)
class Delivery:
    body: bytes
    redelivered: bool
    token: Any  # what ack() needs


@dataclass(slots=True)
class Settings:
    queue: str = "mqemu-workload"
    user: str = "guest"
    password: str = "guest"
    timeout: float = 5.0  # connect, confirm and subscribe timeouts
    client_id: str = "mqemu-workload"  # MQTT consumer: the persistent session's id
    vhost: str = "/"  # STOMP 1.2's host header
    # x-queue-type of the queue the AMQP and STOMP clients declare ("quorum" in a cluster: a
    # reconnect to another node finds the messages); None: the broker's default. MQTT's
    # session queues stay classic, as on RabbitMQ.
    queue_type: str | None = None


class AmqpClient:
    """pika: a durable queue, persistent messages, publisher confirms, manual acks."""

    ACK_CONFIRMED = False  # basic.ack has no answer

    def __init__(self, host: str, port: int, s: Settings, consumer: bool) -> None:
        import pika  # type: ignore[import-untyped,import-not-found]
        self._pika = pika
        params = pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials(s.user, s.password),
                                           connection_attempts=1, socket_timeout=s.timeout, stack_timeout=s.timeout,
                                           blocked_connection_timeout=s.timeout, heartbeat=max(int(s.timeout), 1))
        self.s = s
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.ch.queue_declare(s.queue, durable=True,
                              arguments={"x-queue-type": s.queue_type} if s.queue_type else None)
        if not consumer:
            self.ch.confirm_delivery()
        self._gen: Any = None
        self.broken = False

    def publish(self, body: bytes) -> None:
        exc = self._pika.exceptions
        # pika waits for a confirm for ever, and runs BlockingConnection.call_later's timers only
        # between blocking calls: its I/O loop's own timer fires inside basic_publish's wait.
        timer = self.conn._impl._adapter_call_later(self.s.timeout, self._expired)
        try:
            self.ch.basic_publish("", self.s.queue, body, self._pika.BasicProperties(delivery_mode=2), mandatory=True)
        except (exc.NackError, exc.UnroutableError) as e:
            raise Rejected(type(e).__name__) from None
        finally:
            self.conn._impl._adapter_remove_timeout(timer)

    def _expired(self) -> None:
        self.broken = True
        raise TimeoutError(f"no confirm within {self.s.timeout} s")

    def subscribe(self) -> None:
        self.ch.basic_qos(prefetch_count=100)
        self._gen = self.ch.consume(self.s.queue, inactivity_timeout=0.1)

    def poll(self, timeout: float) -> list[Delivery]:
        method, _props, body = next(self._gen)
        return [] if method is None else [Delivery(body, bool(method.redelivered), method.delivery_tag)]

    def ack(self, d: Delivery) -> None:
        self.ch.basic_ack(d.token)

    def close(self) -> None:
        try:
            if self.broken:  # a stalled peer would never answer connection.close: drop the socket
                self.conn._impl._transport.abort()
            else:
                self.conn.close()
        except Exception:
            pass


class StompClient:
    """stomp.py, STOMP 1.2: persistent sends with a receipt each, client-individual acks
    with a receipt each."""

    ACK_CONFIRMED = True  # ack() waits for the ACK's receipt

    def __init__(self, host: str, port: int, s: Settings, consumer: bool) -> None:
        import stomp  # type: ignore[import-untyped,import-not-found]
        self.s = s
        self.dest = f"/queue/{s.queue}"
        # RabbitMQ declares /queue/NAME on SEND and SUBSCRIBE with these headers as arguments
        self.declare = {"x-queue-type": s.queue_type} if s.queue_type else {}
        self.cond = threading.Condition()
        self.receipts: set[str] = set()
        self.errors: dict[str, str] = {}
        self.broken: str | None = None
        self.inbox: queue.Queue[Any] = queue.Queue()
        self._n = 0
        self.connected = False
        self.conn = stomp.Connection12([(host, port)], reconnect_attempts_max=1, timeout=s.timeout,
                                       vhost=s.vhost)
        self.conn.set_listener("workload", _StompListener(self))
        try:
            self.conn.connect(s.user, s.password, wait=False)  # stomp.py's own wait has no time limit
            self._wait(lambda: self.connected, "CONNECTED")
        except BaseException:
            self.close()
            raise

    def _wait(self, done: Any, what: str, rid: str | None = None) -> None:
        deadline = time.monotonic() + self.s.timeout
        with self.cond:
            while not done():
                if rid is not None and rid in self.errors:
                    raise Rejected(self.errors.pop(rid))
                if self.broken:
                    raise ConnectionError(self.broken)
                left = deadline - time.monotonic()
                if left <= 0:
                    self.broken = f"no {what} within {self.s.timeout} s"
                    raise TimeoutError(self.broken)
                self.cond.wait(left)

    def _wait_receipt(self, rid: str) -> None:
        self._wait(lambda: rid in self.receipts, "receipt", rid)
        with self.cond:
            self.receipts.discard(rid)

    def _receipt(self) -> str:
        self._n += 1
        return f"r{self._n}"

    def publish(self, body: bytes) -> None:
        rid = self._receipt()
        self.conn.send(self.dest, body, headers={"persistent": "true", "receipt": rid, **self.declare})
        self._wait_receipt(rid)

    def subscribe(self) -> None:
        rid = self._receipt()
        self.conn.subscribe(self.dest, id="1", ack="client-individual",
                            headers={"prefetch-count": "100", "activemq.prefetchSize": "100", "receipt": rid,
                                     **self.declare})
        self._wait_receipt(rid)

    def poll(self, timeout: float) -> list[Delivery]:
        if self.broken:
            raise ConnectionError(self.broken)
        try:
            frame = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        if frame is None:
            raise ConnectionError(self.broken or "disconnected")
        body = frame.body if isinstance(frame.body, bytes) else frame.body.encode()
        return [Delivery(body, frame.headers.get("redelivered") == "true", frame.headers.get("ack"))]

    def ack(self, d: Delivery) -> None:
        if self.broken:
            raise ConnectionError(self.broken)
        rid = self._receipt()
        self.conn.ack(d.token, receipt=rid)
        self._wait_receipt(rid)

    def close(self) -> None:
        try:
            if self.broken is None and self.conn.is_connected():
                self.conn.disconnect()  # the socket closes on the DISCONNECT's receipt
            else:  # a stalled or broken peer: drop the socket now
                self.conn.transport.disconnect_socket()  # wakes the receiver thread ...
                self.conn.transport.stop()  # ... which stop() waits for
        except Exception:
            pass


class _StompListener:
    def __init__(self, client: StompClient) -> None:
        self.c = client

    def on_connected(self, frame: Any) -> None:
        with self.c.cond:
            self.c.connected = True
            self.c.cond.notify_all()

    def on_receipt(self, frame: Any) -> None:
        with self.c.cond:
            self.c.receipts.add(frame.headers.get("receipt-id", ""))
            self.c.cond.notify_all()

    def on_error(self, frame: Any) -> None:
        with self.c.cond:
            rid = frame.headers.get("receipt-id")
            if rid:
                self.c.errors[rid] = frame.headers.get("message", "ERROR")
            else:
                self.c.broken = f"ERROR: {frame.headers.get('message', '')}"
            self.c.cond.notify_all()

    def on_message(self, frame: Any) -> None:
        self.c.inbox.put(frame)

    def on_disconnected(self) -> None:
        with self.c.cond:
            self.c.broken = self.c.broken or "disconnected"
            self.c.cond.notify_all()
        self.c.inbox.put(None)

    def __getattr__(self, name: str) -> Any:  # the other listener callbacks: nothing to do
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)


class MqttClient:
    """paho-mqtt 2, MQTT 3.1.1, QoS 1; the consumer keeps a persistent session
    (clean session off, the same client id on every connection) and acks by hand."""

    ACK_CONFIRMED = False  # a PUBACK from the client has no answer

    def __init__(self, host: str, port: int, s: Settings, consumer: bool) -> None:
        import paho.mqtt.client as mqtt  # type: ignore[import-not-found,unused-ignore]
        self.s = s
        self.topic = f"mqemu/{s.queue}"
        self.cond = threading.Condition()
        self.connected: int | None = None  # the CONNACK's return code
        self.subscribed = False
        self.broken: str | None = None
        self.inbox: queue.Queue[Any] = queue.Queue()
        cid = s.client_id + ("-consumer" if consumer else f"-publisher-{id(self):x}")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=not consumer,
                                  reconnect_on_failure=False, manual_ack=consumer)
        self.client.username_pw_set(s.user, s.password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        self.client.connect(host, port, keepalive=max(int(s.timeout), 1))
        self.client.loop_start()
        try:
            self._wait(lambda: self.connected is not None, "CONNACK")
            if self.connected != 0:
                raise ConnectionError(f"CONNACK return code {self.connected}")
        except BaseException:
            self.close()
            raise

    def _on_connect(self, _c: Any, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
        with self.cond:
            self.connected = int(reason.value) if hasattr(reason, "value") else int(reason)
            self.cond.notify_all()

    def _on_disconnect(self, *_a: Any) -> None:
        with self.cond:
            self.broken = "disconnected"
            self.cond.notify_all()
        self.inbox.put(None)

    def _on_subscribe(self, *_a: Any) -> None:
        with self.cond:
            self.subscribed = True
            self.cond.notify_all()

    def _wait(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + self.s.timeout
        with self.cond:
            while not done():
                if self.broken:
                    raise ConnectionError(self.broken)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {self.s.timeout} s")
                self.cond.wait(min(left, 0.05))

    def publish(self, body: bytes) -> None:
        info = self.client.publish(self.topic, body, qos=1)
        if info.rc != 0:
            raise ConnectionError(f"publish: paho error {info.rc}")
        deadline = time.monotonic() + self.s.timeout
        while not info.is_published():  # paho wakes wait_for_publish on the PUBACK
            if self.broken:
                raise ConnectionError(self.broken)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no PUBACK within {self.s.timeout} s")
            info.wait_for_publish(min(left, 0.1))

    def subscribe(self) -> None:
        self.client.subscribe(self.topic, qos=1)
        self._wait(lambda: self.subscribed, "SUBACK")

    def poll(self, timeout: float) -> list[Delivery]:
        if self.broken:
            raise ConnectionError(self.broken)
        try:
            msg = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return []
        if msg is None:
            raise ConnectionError(self.broken or "disconnected")
        return [Delivery(msg.payload, bool(msg.dup), msg.mid)]

    def ack(self, d: Delivery) -> None:
        if self.broken:
            raise ConnectionError(self.broken)
        self.client.ack(d.token, 1)

    def close(self) -> None:
        try:
            self.client.disconnect()
            self.client.loop_stop()
        except Exception:
            pass


CLIENTS = {"amqp": AmqpClient, "stomp": StompClient, "mqtt": MqttClient}
DEFAULT_PORTS = {"amqp": 5672, "stomp": 61613, "mqtt": 1883}
