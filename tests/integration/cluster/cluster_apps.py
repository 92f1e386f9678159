"""Apps written the way aio-pika and kombu users write them, for the cluster tests: one
publisher with confirms and one consumer with manual acks, each reconnecting through the
balancer by its library's own means (aio-pika's ``connect_robust``, kombu's
``ensure``/``ensure_connection`` retry policy). Both record what they did and saw in a history
(``mqemu.ha.history``), so the checker judges them as it judges the harness's workloads.

A message's body is ``{"id", "pub", "seq"}``; a publish whose outcome the app does not know
(its connection broke before the confirm) is sent again with the same id, as the workload's
publisher does, so "acknowledged" means acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from typing import Any, Callable

from mqemu.ha.history import HistoryWriter

BACKOFF = 0.1  # seconds between reconnect attempts through the balancer


def _text(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Recorder:
    """The history of one app plus the facts tests wait on (confirmed and delivered ids, the
    clients' connection breaks and reconnects with their times)."""

    def __init__(self, path: str) -> None:
        self.history = HistoryWriter(path)
        self.cond = threading.Condition()
        self.confirmed: set[str] = set()
        self.delivered: set[str] = set()
        self.breaks: list[tuple[str, float, str]] = []  # (process, time, error)
        self.reconnects: list[tuple[str, float]] = []  # (process, time)

    def record(self, process: str, type: str, f: str, value: Any = None, **extra: Any) -> None:
        self.history.record(process, type, f, value, **extra)
        with self.cond:
            if f == "enqueue" and type == "ok":
                self.confirmed.add(value)
            elif f == "dequeue":
                self.delivered.add(value)
            elif f == "error":
                self.breaks.append((process, time.monotonic(), str(extra.get("error"))))
            elif f == "reconnect" and type == "ok":
                self.reconnects.append((process, time.monotonic()))
            self.cond.notify_all()

    def wait(self, what: str, condition: Callable[["Recorder"], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not condition(self):
                left = deadline - time.monotonic()
                assert left > 0, f"{what} did not happen within {timeout} s " \
                                 f"({len(self.confirmed)} confirmed, {len(self.delivered)} delivered)"
                self.cond.wait(min(left, 0.2))

    def progress(self, confirmed: int, delivered: int, what: str, timeout: float = 60.0) -> None:
        """Wait until ``confirmed`` more publishes are confirmed and ``delivered`` more ids
        delivered than now."""
        with self.cond:
            c0, d0 = len(self.confirmed), len(self.delivered)
        self.wait(what, lambda r: len(r.confirmed) >= c0 + confirmed and len(r.delivered) >= d0 + delivered,
                  timeout)

    def reconnect_times(self) -> list[tuple[str, float]]:
        """Per break: the client and the seconds to its next reconnect."""
        out = []
        for process, t, _error in self.breaks:
            later = [r for p, r in self.reconnects if p == process and r >= t]
            if later:
                out.append((process, round(min(later) - t, 3)))
        return out

    def close(self) -> None:
        self.history.close()


class _App:
    """What both apps share: the ids, the stop events, the thread(s)."""

    def __init__(self, host: str, port: int, queue: str, arguments: dict[str, Any], recorder: Recorder) -> None:
        self.host, self.port, self.queue, self.arguments = host, port, queue, arguments
        self.rec = recorder
        self.stop_publishing = threading.Event()
        self.stop_consuming = threading.Event()
        self.subscribed = threading.Event()
        self.closing: set[str] = set()  # clients closing their connections themselves: no break
        self.published = threading.Event()  # the publisher has left its loop: nothing more in flight
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.seq = 0
        self.retry: deque[tuple[str, int]] = deque()

    def next_message(self, name: str) -> tuple[str, int, bytes]:
        if self.retry:
            msg_id, seq = self.retry.popleft()
        else:
            msg_id, seq = f"{name}-{self.seq}", self.seq
            self.seq += 1
        return msg_id, seq, json.dumps({"id": msg_id, "pub": name, "seq": seq}).encode()

    def delivered(self, process: str, body: bytes, redelivered: bool) -> str:
        data = json.loads(body)
        self.rec.record(process, "ok", "dequeue", data["id"], redelivered=bool(redelivered),
                        publisher=data["pub"], seq=data["seq"])
        self.rec.record(process, "invoke", "ack", data["id"])
        return str(data["id"])

    def _thread(self, target: Callable[[], Any], name: str) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - reported by finish()
                self.errors.append(e)
        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self, timeout: float = 60.0) -> None:
        """Publish nothing more, wait until every confirmed id was delivered, stop."""
        self.stop_publishing.set()
        assert self.published.wait(60), "the publisher did not stop"
        self.rec.wait("every confirmed message delivered", lambda r: r.confirmed <= r.delivered, timeout)
        self.stop_consuming.set()
        for t in self.threads:
            t.join(30)
            assert not t.is_alive(), f"{t.name} did not stop"
        if self.errors:
            raise self.errors[0]


class AioPikaApp(_App):
    """aio-pika 9/10: ``connect_robust`` (reconnects itself, restores the channel, the queue's
    declaration and the consumer), ``publisher_confirms=True``, ``message.ack()``."""

    def start(self) -> "AioPikaApp":
        self._thread(lambda: asyncio.run(self._main()), "aio-pika-app")
        self.subscribed.wait(30)
        return self

    async def _connect(self, process: str) -> Any:
        import aio_pika

        self.rec.record(process, "invoke", "connect", f"{self.host}:{self.port}")
        conn = await aio_pika.connect_robust(host=self.host, port=self.port, login="guest", password="guest",
                                             reconnect_interval=BACKOFF, timeout=5, client_properties={
                                                 "connection_name": process})
        self.rec.record(process, "ok", "connect", f"{self.host}:{self.port}")
        conn.close_callbacks.add(lambda _c, exc=None: None if process in self.closing else self.rec.record(
            process, "info", "error", f"{self.host}:{self.port}", error=_text(exc) if exc else "closed"))
        conn.reconnect_callbacks.add(lambda _c: self.rec.record(
            process, "ok", "reconnect", f"{self.host}:{self.port}"))
        return conn

    async def _main(self) -> None:
        await asyncio.gather(self._consumer(), self._publisher())

    async def _until(self, event: threading.Event) -> None:
        while not event.is_set():
            await asyncio.sleep(0.05)

    async def _publisher(self) -> None:
        import aio_pika

        name = "aio-pika-publisher"
        conn = await self._connect(name)
        try:
            channel = await conn.channel(publisher_confirms=True)
            await channel.declare_queue(self.queue, durable=True, arguments=self.arguments)
            while not self.subscribed.is_set():
                await asyncio.sleep(0.02)
            while not self.stop_publishing.is_set() or self.retry:
                msg_id, seq, body = self.next_message(name)
                self.rec.record(name, "invoke", "enqueue", msg_id, publisher=name, seq=seq)
                try:
                    await channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=self.queue, timeout=30)
                except aio_pika.exceptions.DeliveryError as e:  # nacked (or returned): surely not taken
                    self.rec.record(name, "fail", "enqueue", msg_id, publisher=name, seq=seq, error=_text(e))
                    self.retry.appendleft((msg_id, seq))
                    await asyncio.sleep(BACKOFF)
                except Exception as e:  # noqa: BLE001 - the connection broke: the outcome is unknown
                    self.rec.record(name, "info", "enqueue", msg_id, publisher=name, seq=seq, error=_text(e))
                    self.retry.appendleft((msg_id, seq))
                    await asyncio.sleep(BACKOFF)
                else:
                    self.rec.record(name, "ok", "enqueue", msg_id, publisher=name, seq=seq)
        finally:
            self.published.set()
            self.closing.add(name)
            await conn.close()

    async def _consumer(self) -> None:
        name = "aio-pika-consumer"
        conn = await self._connect(name)
        try:
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=20)
            queue = await channel.declare_queue(self.queue, durable=True, arguments=self.arguments)

            async def on_message(message: Any) -> None:
                msg_id = self.delivered(name, message.body, message.redelivered)
                try:
                    await message.ack()
                except Exception as e:  # noqa: BLE001 - its channel is gone: the broker requeues it
                    self.rec.record(name, "info", "ack", msg_id, error=_text(e))
                else:
                    self.rec.record(name, "ok", "ack", msg_id, confirmed=False)
            await queue.consume(on_message)
            self.subscribed.set()
            await self._until(self.stop_consuming)
        finally:
            self.closing.add(name)
            await conn.close()


class KombuApp(_App):
    """kombu 5 on py-amqp: ``confirm_publish=True``, ``Connection.ensure`` around the publish
    (its errback sees each failed attempt), ``ensure_connection`` with a retry policy and a new
    ``Consumer`` on every connection, ``message.ack()``."""

    POLICY = {"max_retries": 200, "interval_start": 0, "interval_step": BACKOFF, "interval_max": 0.5}

    def _connection(self) -> Any:
        import kombu

        return kombu.Connection(f"amqp://guest:guest@{self.host}:{self.port}//", connect_timeout=5,
                                transport_options={"confirm_publish": True}, heartbeat=0)

    def start(self) -> "KombuApp":
        self._thread(self._consumer, "kombu-consumer")
        assert self.subscribed.wait(30), "the kombu consumer did not subscribe"
        self._thread(self._publisher, "kombu-publisher")
        return self

    def _queue(self) -> Any:
        import kombu

        return kombu.Queue(self.queue, routing_key=self.queue, exchange=kombu.Exchange(""), durable=True,
                           queue_arguments=self.arguments)

    def _publisher(self) -> None:
        name = "kombu-publisher"
        endpoint = f"{self.host}:{self.port}"
        conn = self._connection()
        self.rec.record(name, "invoke", "connect", endpoint)
        conn.ensure_connection(**self.POLICY)
        self.rec.record(name, "ok", "connect", endpoint)
        producer = conn.Producer()
        queue = self._queue()
        current: list[Any] = []
        broken = [False]

        def errback(exc: BaseException, interval: float) -> None:
            # called for the publish that failed, then for each failed connection attempt
            if broken[0]:
                return
            broken[0] = True
            msg_id, seq = current
            self.rec.record(name, "info", "enqueue", msg_id, publisher=name, seq=seq, error=_text(exc))
            self.rec.record(name, "info", "error", endpoint, error=_text(exc))

        def revived(_channel: Any) -> None:
            broken[0] = False
            self.rec.record(name, "ok", "reconnect", endpoint)
            msg_id, seq = current  # ensure sends it again on the new connection
            self.rec.record(name, "invoke", "enqueue", msg_id, publisher=name, seq=seq)

        publish = conn.ensure(producer, producer.publish, errback=errback, on_revive=revived, **self.POLICY)
        try:
            while not self.stop_publishing.is_set() or self.retry:
                msg_id, seq, body = self.next_message(name)
                current[:] = [msg_id, seq]
                self.rec.record(name, "invoke", "enqueue", msg_id, publisher=name, seq=seq)
                try:
                    # declare=: kombu declares the queue on this connection first (once), as
                    # apps do; without it the first publishes can reach a node that has not yet
                    # applied the consumer's declaration: unroutable, and confirmed all the same
                    publish(body, routing_key=self.queue, exchange="", delivery_mode=2, declare=[queue],
                            content_type="application/json", content_encoding="utf-8", timeout=30)
                except conn.channel_errors as e:  # a nack (MessageNacked): surely not taken
                    self.rec.record(name, "fail", "enqueue", msg_id, publisher=name, seq=seq, error=_text(e))
                    self.retry.appendleft((msg_id, seq))
                    time.sleep(BACKOFF)
                else:
                    self.rec.record(name, "ok", "enqueue", msg_id, publisher=name, seq=seq)
        finally:
            self.published.set()
            conn.release()

    def _consumer(self) -> None:
        name = "kombu-consumer"
        endpoint = f"{self.host}:{self.port}"
        conn = self._connection()
        first = True
        try:
            while not self.stop_consuming.is_set():
                f = "connect" if first else "reconnect"
                self.rec.record(name, "invoke", f, endpoint)
                try:
                    conn.ensure_connection(**self.POLICY)
                    channel = conn.channel()
                    consumer = conn.Consumer(self._queue(), channel=channel, prefetch_count=20,
                                             on_message=lambda m: self._on_message(name, m))
                    consumer.consume()
                    self.rec.record(name, "ok", f, endpoint)
                    first = False
                    self.subscribed.set()
                    while not self.stop_consuming.is_set():
                        try:
                            conn.drain_events(timeout=0.2)
                        except socket.timeout:
                            pass
                except (*conn.connection_errors, *conn.channel_errors) as e:
                    self.rec.record(name, "info", "error", endpoint, error=_text(e))
                    conn.collect()  # forget the broken connection; ensure_connection makes a new one
                    time.sleep(BACKOFF)
        finally:
            conn.release()

    def _on_message(self, name: str, message: Any) -> None:
        msg_id = self.delivered(name, message.body, message.delivery_info.get("redelivered", False))
        message.ack()  # an error here ends the drain: the consumer loop records the break
        self.rec.record(name, "ok", "ack", msg_id, confirmed=False)
