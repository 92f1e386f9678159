"""A workload that publishes and consumes through a list of endpoints, reconnecting as a
careful app does, and records everything into a history (``mqemu.ha.history``).

One publisher thread and one consumer thread share one reconnect loop (``_Role.run``): try
the endpoints in turn, back off (doubling, capped) after a failure, and after every
connection re-declare and resubscribe. The publisher sends each message until the broker
acknowledges it: a publish whose outcome is unknown (the connection broke first) is sent
again, with the same id, on the next connection. Bodies are JSON: ``{"id", "pub", "seq"}``.

The run ends when the publisher has sent ``count`` messages (or ``seconds`` passed) and had
every one acknowledged, and the consumer has received every attempted message or heard
nothing new for ``drain`` seconds; ``stop()`` ends it at once. The history file is complete
once ``wait()`` returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from .history import HistoryWriter
from .workload_clients import CLIENTS, DEFAULT_PORTS, Delivery, Rejected, Settings


@dataclass(slots=True)
class WorkloadOptions:
    protocol: str
    endpoints: list[tuple[str, int]]
    count: int | None = None
    seconds: float | None = None
    rate: float = 0.0  # publishes per second; 0: as fast as confirms come back
    drain: float = 5.0
    backoff: tuple[float, float] = (0.05, 1.0)  # first and longest pause between connection attempts
    settings: Settings = field(default_factory=Settings)


class Workload:
    """Start with ``start()``; ``wait(timeout)`` returns True once both threads finished
    (and the history is closed); ``stop()`` asks them to finish now and waits.
    ``wait_until(predicate, timeout)`` waits on the counters (``confirmed``, ``unknown``,
    ``delivered``, ``connect_failures``)."""

    def __init__(self, options: WorkloadOptions, history: str | os.PathLike[str] | HistoryWriter) -> None:
        if options.protocol not in CLIENTS:
            raise ValueError(f"protocol is one of {', '.join(CLIENTS)}, not {options.protocol!r}")
        if not options.endpoints:
            raise ValueError("at least one endpoint is needed")
        self.options = options
        self.history = history if isinstance(history, HistoryWriter) else HistoryWriter(history)
        self.run_id = uuid.uuid4().hex[:8]
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.finishing = threading.Event()  # publish nothing new (``finish``)
        self.subscribed = threading.Event()
        self.publisher_done = threading.Event()
        self.attempted: set[str] = set()
        self.delivered: set[str] = set()
        self.confirmed = 0
        self.unknown = 0  # publishes whose outcome was unknown (sent again later)
        self.connect_failures = 0
        self.last_progress = time.monotonic()
        self._roles = [_Consumer(self, "consumer-0"), _Publisher(self, "publisher-0")]
        self._threads = [threading.Thread(target=r.run, name=r.name, daemon=True) for r in self._roles]

    def start(self) -> "Workload":
        for t in self._threads:
            t.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        # Each role says itself that it ended (its last record written): ``Thread.join`` is
        # not asked, since on CPython up to 3.11 a Ctrl-C landing in it can mark the thread
        # it waits for as stopped while it still runs (cpython#90882), and the history would
        # be closed under the consumer's last records.
        deadline = None if timeout is None else time.monotonic() + timeout
        for r in self._roles:
            if not r.ended.wait(None if deadline is None else max(deadline - time.monotonic(), 0)):
                return False
        self.history.close()
        return True

    def finish(self) -> None:
        """Publish nothing new: the run ends once what was sent is acknowledged and delivered
        (or nothing new came for ``drain`` s), as if ``count`` had been reached."""
        self.finishing.set()
        with self.cond:
            self.cond.notify_all()

    def stop(self, timeout: float = 10) -> bool:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        return self.wait(timeout)

    def wait_until(self, predicate: Any, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self) or self.stopping.is_set(), timeout) and predicate(self)

    def fault(self, action: str, target: str, type: str = "invoke") -> None:
        """Record a fault's start (``invoke``) or end (``ok``) in this workload's history."""
        self.history.fault(action, target, type)

    def _progress(self, confirmed: str | None = None, delivered: str | None = None) -> None:
        with self.cond:
            if confirmed is not None:
                self.confirmed += 1
            if delivered is not None and delivered not in self.delivered:
                self.delivered.add(delivered)
                self.last_progress = time.monotonic()
            self.cond.notify_all()


class _Role:
    """One client thread: the reconnect loop around ``work``."""

    def __init__(self, w: Workload, name: str) -> None:
        self.w, self.name = w, name
        self.consumer = name.startswith("consumer")
        self.ended = threading.Event()  # set by the thread itself, after its last record

    def record(self, type: str, f: str, value: Any = None, **extra: Any) -> None:
        self.w.history.record(self.name, type, f, value, **extra)

    def finished(self) -> bool:
        raise NotImplementedError

    def work(self, client: Any) -> None:
        raise NotImplementedError

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.ended.set()

    def _run(self) -> None:
        o, first, attempt = self.w.options, True, 0
        pause = o.backoff[0]
        while not self.w.stopping.is_set() and not self.finished():
            host, port = o.endpoints[attempt % len(o.endpoints)]
            f, endpoint = ("connect" if first else "reconnect"), f"{host}:{port}"
            self.record("invoke", f, endpoint)
            try:
                client: Any = CLIENTS[o.protocol](host, port, o.settings, self.consumer)
            except Exception as e:
                self.record("fail", f, endpoint, error=_text(e))
                with self.w.cond:
                    self.w.connect_failures += 1
                    self.w.cond.notify_all()
                attempt += 1
                self.w.stopping.wait(pause)
                pause = min(pause * 2, o.backoff[1])
                continue
            self.record("ok", f, endpoint)
            first, pause = False, o.backoff[0]
            try:
                self.work(client)
            except Exception as e:
                self.record("info", "error", endpoint, error=_text(e))
                attempt += 1  # a careful app tries the next endpoint first
                self.w.stopping.wait(pause)
            finally:
                client.close()
        self.record("info", "done")
        self.done()

    def done(self) -> None:
        pass


class _Publisher(_Role):
    def __init__(self, w: Workload, name: str) -> None:
        super().__init__(w, name)
        self.seq = 0
        self.retry: deque[tuple[str, int]] = deque()  # sent, outcome unknown: send again
        self.started = 0.0

    def more(self) -> bool:
        o = self.w.options
        if self.w.finishing.is_set() or (o.count is not None and self.seq >= o.count):
            return False
        return o.seconds is None or time.monotonic() - self.started < o.seconds

    def finished(self) -> bool:
        return not self.retry and (self.started > 0 or self.w.finishing.is_set()) and not self.more()

    def work(self, client: Any) -> None:
        while not self.w.subscribed.wait(0.05):  # the consumer's queue or session exists first
            if self.w.stopping.is_set() or self.w.finishing.is_set():
                return
        if not self.started:
            self.started = time.monotonic()
        rate = self.w.options.rate
        due = time.monotonic()
        while not self.w.stopping.is_set():
            if self.retry:
                msg_id, seq = self.retry.popleft()
            elif self.more():
                msg_id, seq = f"{self.w.run_id}-{self.name}-{self.seq}", self.seq
                self.seq += 1
                if rate > 0:
                    due += 1 / rate
                    self.w.stopping.wait(max(due - time.monotonic(), 0))
            else:
                return
            self.send(client, msg_id, seq)

    def send(self, client: Any, msg_id: str, seq: int) -> None:
        body = json.dumps({"id": msg_id, "pub": self.name, "seq": seq}).encode()
        with self.w.cond:
            self.w.attempted.add(msg_id)
        self.record("invoke", "enqueue", msg_id, publisher=self.name, seq=seq)
        try:
            client.publish(body)
        except Rejected as e:
            self.record("fail", "enqueue", msg_id, publisher=self.name, seq=seq, error=str(e))
            self.retry.append((msg_id, seq))
            self.w.stopping.wait(self.w.options.backoff[0])
            return
        except BaseException as e:
            self.record("info", "enqueue", msg_id, publisher=self.name, seq=seq, error=_text(e))
            self.retry.appendleft((msg_id, seq))
            with self.w.cond:
                self.w.unknown += 1
                self.w.cond.notify_all()
            raise
        self.record("ok", "enqueue", msg_id, publisher=self.name, seq=seq)
        self.w._progress(confirmed=msg_id)

    def done(self) -> None:
        self.w.publisher_done.set()
        with self.w.cond:
            self.w.last_progress = time.monotonic()
            self.w.cond.notify_all()


class _Consumer(_Role):
    def finished(self) -> bool:
        w = self.w
        if not w.publisher_done.is_set():
            return False
        with w.cond:
            return w.attempted <= w.delivered or time.monotonic() - w.last_progress > w.options.drain

    def work(self, client: Any) -> None:
        client.subscribe()
        self.w.subscribed.set()
        while not self.w.stopping.is_set() and not self.finished():
            for d in client.poll(0.1):
                self.deliver(client, d)

    def deliver(self, client: Any, d: Delivery) -> None:
        try:
            body = json.loads(d.body)
            msg_id, extra = body["id"], {"publisher": body.get("pub"), "seq": body.get("seq")}
        except (ValueError, TypeError, KeyError):
            msg_id, extra = d.body.decode("utf-8", "replace"), {}
        self.record("ok", "dequeue", msg_id, redelivered=d.redelivered, **extra)
        self.w._progress(delivered=msg_id)
        self.record("invoke", "ack", msg_id)
        try:
            client.ack(d)
        except BaseException as e:
            self.record("info", "ack", msg_id, error=_text(e))
            raise
        if client.ACK_CONFIRMED:
            self.record("ok", "ack", msg_id)
        else:  # written, not answered: a broken connection may still undo it (see history)
            self.record("ok", "ack", msg_id, confirmed=False)


def _text(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def parse_endpoints(urls: str, protocol: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """Endpoints, user and password from ``URL[,URL...]``: ``amqp://user:pass@host:port``,
    ``stomp://``, ``mqtt://``, ``tcp://``, ``host:port``, or ActiveMQ's
    ``failover:(tcp://a:1,tcp://b:2)?options``. A missing port is the protocol's default.
    Raises ValueError for a URL without a host or with a bad port."""
    text = urls.strip()
    if text.startswith("failover:"):
        text = text[len("failover:"):].split("?", 1)[0] if not text[len("failover:"):].startswith("(") else \
            text[len("failover:("):].split(")", 1)[0]
    endpoints, user, password = [], None, None
    for part in filter(None, (p.strip() for p in text.split(","))):
        u = urlsplit(part if "://" in part else f"tcp://{part}")
        if not u.hostname:
            raise ValueError(f"no host in {part!r}")
        endpoints.append((u.hostname, u.port or DEFAULT_PORTS[protocol]))
        if u.username:
            user, password = unquote(u.username), unquote(u.password or "")
    if not endpoints:
        raise ValueError("no endpoint in --url")
    return endpoints, user, password


def add_workload_command(sub: Any) -> None:
    """``mqemu workload ...`` on the CLI's subparsers."""
    p = sub.add_parser("workload", help="publish and consume through failover endpoints, recording a history",
                       description="Publish (confirms / receipts / QoS 1) and consume (manual acks) through "
                       "a list of endpoints, reconnecting as a careful app does, and write every publish, "
                       "confirm, delivery, ack, error and reconnect to a JSONL history for `mqemu check`.")
    p.add_argument("--url", required=True, help="URL[,URL...] or failover:(tcp://h:p,tcp://h:p)")
    p.add_argument("--protocol", required=True, choices=sorted(CLIENTS))
    p.add_argument("--rate", type=float, default=0.0, help="publishes per second (default 0: as fast as acknowledged)")
    bound = p.add_mutually_exclusive_group(required=True)
    bound.add_argument("--count", type=int, help="how many messages to publish")
    bound.add_argument("--seconds", type=float, help="how long to publish")
    p.add_argument("--history", required=True, metavar="FILE", help="the JSONL history to write")
    p.add_argument("--queue", default="mqemu-workload", help="queue (MQTT: topic mqemu/QUEUE) to use")
    p.add_argument("--queue-type", choices=("quorum", "classic"), default=None,
                   help="x-queue-type of the AMQP and STOMP queue (default: the broker's)")
    p.add_argument("--drain", type=float, default=5.0,
                   help="after publishing, wait at most this long without a new delivery (default 5 s)")
    p.add_argument("--timeout", type=float, default=5.0, help="connect/confirm timeout in s (default 5)")
    p.add_argument("--control", metavar="URL", default=None,
                   help="the topology's control URL: at the end, add to the history the faults applied meanwhile "
                   "(by `mqemu fault` from any shell) and the nodes' events (lock, recovery, listeners, roles)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    p.add_argument("--log-format", default="text", choices=("text", "json"))
    p.set_defaults(run=run_workload)


def run_workload(args: argparse.Namespace) -> int:
    try:
        endpoints, user, password = parse_endpoints(args.url, args.protocol)
    except ValueError as e:
        print(f"mqemu workload: {e}", file=sys.stderr)
        return 2
    for name in ("pika", "stomp.py", "paho"):  # the history records every error; keep stderr quiet
        logging.getLogger(name).setLevel(logging.CRITICAL)
    settings = Settings(queue=args.queue, timeout=args.timeout, user=user or "guest", password=password or "guest",
                        client_id=f"mqemu-workload-{args.queue}", queue_type=args.queue_type)
    w = Workload(WorkloadOptions(args.protocol, endpoints, count=args.count, seconds=args.seconds, rate=args.rate,
                                 drain=args.drain, settings=settings), args.history)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started as a shell's background job (`&`),
        signal.signal(signal.SIGINT, signal.default_int_handler)  # yet `kill -INT` must still drain
    w.start()
    try:
        while not w.wait(0.5):
            pass
    except KeyboardInterrupt:  # publish no more, let the consumer drain; a second Ctrl-C stops at once
        print("mqemu workload: publishing stopped; draining deliveries (Ctrl-C again to stop now)", file=sys.stderr)
        w.finish()
        try:
            while not w.wait(0.5):
                pass
        except KeyboardInterrupt:
            w.stop()
    w.history.close()  # all of it is on disk, even if a client thread is stuck in a call
    if args.control:
        from .control import ControlClient, ControlError
        from .history import append_facts
        try:
            added = append_facts(args.history, ControlClient(args.control).facts())
        except ControlError as e:
            print(f"mqemu workload: the topology's faults are not in the history: {e}", file=sys.stderr)
            return 1
        print(f"added {added} fault and node records from {args.control}")
    print(f"published {len(w.attempted)} (acknowledged {w.confirmed}), delivered {len(w.delivered)}; "
          f"history in {args.history} (mqemu check {args.history})")
    return 0
