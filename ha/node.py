"""One broker node: the core, its store and a listener per protocol.

``Node.run`` is a trio task that reports the bound ports (``task_status``); ``open_node`` is
the async context manager around it, and ``NodeThread`` runs a node in a thread of its own
for synchronous code (plain pytest tests, scripts).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from contextlib import asynccontextmanager
from functools import partial
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio

from mqemu.broker.config import BrokerConfig, load_config
from mqemu.broker.core import Broker
from mqemu.broker.store.base import Store, StoreError
from mqemu.broker.store.memory import MemoryStore

log = logging.getLogger("mqemu.ha.node")

# protocol -> (module, serve function, default port per engine)
PROTOCOLS = {
    "amqp": ("mqemu.protocols.amqp091.server", "serve_amqp", {"rabbitmq": 5672, "activemq": 5672}),
    "stomp": ("mqemu.protocols.stomp.server", "serve_stomp", {"rabbitmq": 61613, "activemq": 61613}),
    "mqtt": ("mqemu.protocols.mqtt.server", "serve_mqtt", {"rabbitmq": 1883, "activemq": 1883}),
}


@dataclass(slots=True)
class NodeOptions:
    engine: str = "rabbitmq"
    engine_version: str | None = None  # None: the newest the engine offers (``broker.profile``)
    host: str = "127.0.0.1"
    # port per protocol: an int (0 = any free port), None = the engine's default, "off" = none
    ports: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    config_file: str | None = None
    ready_file: str | None = None
    config: BrokerConfig | None = None


class NodeStartError(Exception):
    """A listener or the store could not start; the text names it and the reason."""


def make_store(data_dir: str | None) -> Store:
    """The SQLite store in data_dir, or the memory store without one."""
    if not data_dir:
        return MemoryStore()
    from mqemu.broker.store.sqlite import SQLiteStore
    return SQLiteStore(data_dir)


class Node:
    def __init__(self, options: NodeOptions | None = None) -> None:
        self.options = options or NodeOptions()
        cfg = self.options.config or load_config(self.options.config_file, self.options.engine,
                                                 self.options.engine_version)
        self.broker = Broker(cfg, store=make_store(self.options.data_dir))
        self.ports: dict[str, int] = {}
        self.host = self.options.host
        self.sessions: set = set()  # live connections of every protocol

    def url(self, protocol: str) -> str:
        port = self.ports[protocol]
        scheme = {"amqp": "amqp", "stomp": "stomp", "mqtt": "mqtt"}[protocol]
        return f"{scheme}://{self.host}:{port}"

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the store, the core's task and every listener; runs until cancelled."""
        broker = self.broker
        try:
            snapshot = await broker.store.open()
        except StoreError as e:
            raise NodeStartError(str(e)) from e
        try:
            report = broker.recover(snapshot)
            del snapshot
            if self.options.data_dir:
                log.info("store: SQLite in %s; recovered %d exchanges, %d queues, %d bindings, %d messages "
                         "in %.2f s", os.path.abspath(self.options.data_dir), report.exchanges, report.queues,
                         report.bindings, report.messages, report.seconds)
            else:
                log.info("store: memory only (no --data-dir): nothing survives a restart")
            log.info("emulating %s %s", broker.profile.product, broker.profile.release)
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.store.run)
                await nursery.start(broker.run)
                for proto, (module, func, defaults) in PROTOCOLS.items():
                    port = self.options.ports.get(proto)
                    if port == "off":
                        continue
                    if port is None:
                        port = defaults[broker.profile.name]
                    try:
                        serve = getattr(importlib.import_module(module), func)
                    except ImportError:
                        log.warning("%s listener not started: mqemu does not implement %s yet",
                                    proto.upper(), proto.upper())
                        continue
                    try:
                        bound = await nursery.start(
                            partial(serve, broker, self.host, int(port), connections=self.sessions))
                    except OSError as e:
                        raise NodeStartError(f"cannot listen for {proto.upper()} on {self.host}:{port}: "
                                             f"{e.strerror or e}; pick another port with --{proto}-port") from e
                    self.ports[proto] = bound
                    log.info("listening", extra={"protocol": proto, "host": self.host, "port": bound})
                self._write_ready_file()
                task_status.started(self.ports)
        finally:
            with trio.CancelScope(shield=True):
                await broker.store.close()
            if self.options.ready_file:
                try:
                    os.unlink(self.options.ready_file)
                except OSError:
                    pass

    async def shutdown(self, grace: float = 1.0) -> None:
        """Close every connection the way its protocol says a server closes one (AMQP:
        connection.close 320; MQTT 5: DISCONNECT 0x8B; STOMP: ERROR), then wait up to ``grace``
        seconds for them to go. The caller then cancels ``run``."""
        for session in list(self.sessions):
            close = getattr(session, "server_close", None)
            if close is not None:
                close()
        with trio.move_on_after(grace):
            while self.sessions:
                await trio.sleep(0.02)

    def _write_ready_file(self) -> None:
        path = self.options.ready_file
        if not path:
            return
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({**self.ports, "pid": os.getpid()}, f)
        os.replace(tmp, path)


@asynccontextmanager
async def open_node(**kwargs: Any) -> AsyncIterator[Node]:
    """Run a node for the body of the block, e.g. ``async with open_node(ports={"amqp": 0})``.

    Unnamed protocols listen on port 0 (a free port) here, unlike ``mqemu serve``.
    """
    ports = {p: 0 for p in PROTOCOLS}
    ports.update(kwargs.pop("ports", {}))
    node = Node(NodeOptions(ports=ports, **kwargs))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


class NodeThread:
    """A node in a background thread with its own trio loop, for synchronous callers.

    ``start()`` returns once every listener is bound (or raises what stopped it);
    ``stop()`` cancels the node and joins the thread.
    """

    def __init__(self, **kwargs: Any) -> None:
        ports = {p: 0 for p in PROTOCOLS}
        ports.update(kwargs.pop("ports", {}))
        self.node = Node(NodeOptions(ports=ports, **kwargs))
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def ports(self) -> dict[str, int]:
        return self.node.ports

    def start(self, timeout: float = 10) -> "NodeThread":
        self._thread = threading.Thread(target=self._main, name="mqemu-node", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise NodeStartError(f"the node did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.node.run)
                    self._ready.set()
        try:
            trio.run(main)
        except BaseException as e:  # reported to start() or kept for stop()
            self._error = e
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10) -> None:
        if self._token is not None and self._cancel is not None:
            try:
                self._token.run_sync_soon(self._cancel.cancel)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "NodeThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
