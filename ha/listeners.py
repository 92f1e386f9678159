"""A node's listeners: which exist on each engine, which a node opens, and how each runs.

Names (the ready file's keys, ``--NAME-port`` options):

- ``amqp``, ``stomp``, ``mqtt``: plain TCP;
- ``amqps``, ``stomps``, ``mqtts``: the same over TLS;
- RabbitMQ: ``stomp-ws`` and ``mqtt-ws`` (Web-STOMP and Web-MQTT, path ``/ws``), over TLS
  ``stomp-wss`` and ``mqtt-wss``;
- ActiveMQ: ``ws`` (its one WebSocket transport, any path, STOMP or MQTT by the
  subprotocol the client offers: ``mqtt`` for MQTT, else STOMP), over TLS ``wss``.

Default ports are the engine's (``broker.profile.LISTENER_PORTS``). Which listeners open
(``plan``): with the ``engine`` layout, the plain ones; the TLS ones too when the node has
TLS; the WebSocket ones with ``websocket`` (the TLS ones of them with TLS too); any listener
given a port; none given ``off``. The ``amazon-mq`` layout opens only what an Amazon MQ
broker offers, all over TLS: ActiveMQ amqps 5671, stomps 61614, mqtts 8883, wss 61619;
RabbitMQ amqps 5671 (its console, 443, is the HTTP listener's).
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import trio

from mqemu.broker.profile import LISTENER_PORTS
from mqemu.protocols.amqp091 import server as amqp_server
from mqemu.protocols.amqp091.session import HANDSHAKE_TIMEOUT as AMQP_HANDSHAKE_TIMEOUT
from mqemu.protocols.mqtt import server as mqtt_server
from mqemu.protocols.stomp import server as stomp_server
from mqemu.protocols.tls import tls_opener
from mqemu.protocols.transport import MakeSession, Opener, serve_protocol
from mqemu.protocols.websocket import Route, websocket_opener

LAYOUTS = ("engine", "amazon-mq")
AMAZON_MQ = {"activemq": ("amqps", "stomps", "mqtts", "wss"), "rabbitmq": ("amqps",)}
PROTOCOL_SERVERS: dict[str, ModuleType] = {"amqp": amqp_server, "stomp": stomp_server, "mqtt": mqtt_server}

ws_log = logging.getLogger("mqemu.protocols.websocket")


@dataclass(frozen=True, slots=True)
class ListenerKind:
    name: str
    protocols: tuple[str, ...]
    tls: bool = False
    websocket: bool = False
    path: str | None = None  # WebSocket: the one path served (None: any)


KINDS = {k.name: k for k in (
    ListenerKind("amqp", ("amqp",)),
    ListenerKind("stomp", ("stomp",)),
    ListenerKind("mqtt", ("mqtt",)),
    ListenerKind("amqps", ("amqp",), tls=True),
    ListenerKind("stomps", ("stomp",), tls=True),
    ListenerKind("mqtts", ("mqtt",), tls=True),
    ListenerKind("stomp-ws", ("stomp",), websocket=True, path="/ws"),
    ListenerKind("mqtt-ws", ("mqtt",), websocket=True, path="/ws"),
    ListenerKind("stomp-wss", ("stomp",), tls=True, websocket=True, path="/ws"),
    ListenerKind("mqtt-wss", ("mqtt",), tls=True, websocket=True, path="/ws"),
    ListenerKind("ws", ("stomp", "mqtt"), websocket=True),
    ListenerKind("wss", ("stomp", "mqtt"), tls=True, websocket=True),
)}
ALL_NAMES = tuple(KINDS)
URL_SCHEMES = {"amqp": "amqp", "stomp": "stomp", "mqtt": "mqtt", "amqps": "amqps", "stomps": "stomp+ssl",
               "mqtts": "mqtts", "stomp-ws": "ws", "mqtt-ws": "ws", "stomp-wss": "wss", "mqtt-wss": "wss",
               "ws": "ws", "wss": "wss"}


def _wanted(engine: str, kind: ListenerKind, layout: str, tls: bool, websocket: bool) -> bool:
    """Whether a node opens ``kind`` unless told otherwise: Amazon MQ's endpoints only in its
    layout; else the plain ones, the TLS ones with ``tls``, WebSocket ones with ``websocket``."""
    if layout == "amazon-mq":
        return kind.name in AMAZON_MQ[engine]
    if kind.websocket:
        return websocket and (tls or not kind.tls)
    return tls or not kind.tls


def endpoint_names(engine: str, protocols: tuple[str, ...], *, tls: bool = False, websocket: bool = False,
                   layout: str = "engine") -> tuple[str, ...]:
    """The listeners a node of a topology opens for ``protocols`` (``amqp``, ``stomp``,
    ``mqtt``), in the order they are named: the plain ones (none with the ``amazon-mq``
    layout), their TLS ones with ``tls``, the engine's WebSocket ones with ``websocket``
    (over TLS too with ``tls``; ActiveMQ's ``ws``/``wss`` when STOMP or MQTT is asked).
    ``amazon-mq``: only Amazon MQ's endpoints (``AMAZON_MQ``) among them."""
    out: list[str] = []
    for name in LISTENER_PORTS[engine]:
        kind = KINDS[name]
        if not set(kind.protocols) & set(protocols):
            continue
        if _wanted(engine, kind, layout, tls, websocket):
            out.append(name)
    return tuple(out)


class PlanError(Exception):
    """The listeners asked for do not fit the engine or the TLS settings."""


def plan(engine: str, defaults: dict[str, int], ports: dict[str, Any], *, layout: str = "engine",
         tls: bool = False, websocket: bool = False, free_ports: bool = False) -> list[tuple[ListenerKind, int]]:
    """The listeners to open, with their ports. ``ports``: name -> int (0: a free port),
    "off", or None (the default: the engine's port, or 0 with ``free_ports``)."""
    for name, port in ports.items():
        if name not in defaults and port not in (None, "off"):
            raise PlanError(f"the {engine} engine has no {name} listener (it has {', '.join(defaults)})")
    chosen: list[tuple[ListenerKind, int]] = []
    for name, default in defaults.items():
        kind = KINDS[name]
        port = ports.get(name)
        if port == "off":
            continue
        if not _wanted(engine, kind, layout, tls, websocket) and port is None:
            continue
        if kind.tls and not tls:
            raise PlanError(f"the {name} listener needs TLS: add --tls, or --tls-cert and --tls-key")
        chosen.append((kind, int(port) if port is not None else 0 if free_ports else default))
    seen: dict[int, str] = {}
    for kind, port in chosen:
        if port and port in seen:
            raise PlanError(f"the {seen[port]} and {kind.name} listeners both ask for port {port}: "
                            f"give one another with --{kind.name}-port")
        seen[port] = kind.name
    return chosen


def session_factories(broker: Any, protocols: set[str]) -> tuple[dict[str, MakeSession], list[Callable[[], Any]]]:
    """One session factory per protocol a listener uses (shared by its TCP, TLS and WebSocket
    listeners), and the tasks they need running (MQTT's publish pump)."""
    makers: dict[str, MakeSession] = {}
    tasks = []
    for proto in sorted(protocols):
        make, task = PROTOCOL_SERVERS[proto].session_factory(broker)
        makers[proto] = make
        if task is not None:
            tasks.append(task)
    return makers, tasks


# protocol -> its handshake timeout's config key; a TLS or WebSocket handshake must end
# within it (RabbitMQ: 10 s; ActiveMQ: 30 s for STOMP and MQTT)
TIMEOUT_KEYS = {"amqp": "handshake_timeout", "stomp": "connect_timeout", "mqtt": "connect_timeout"}


def handshake_timeout(broker: Any, kind: ListenerKind) -> float:
    """How long a TLS or WebSocket handshake may take on this listener: its protocol's own
    connect timeout (``[amqp] handshake_timeout``, ``[stomp]``/``[mqtt] connect_timeout``),
    the longest of them on a listener of two protocols."""
    return max(broker.config.seconds(p, TIMEOUT_KEYS[p], AMQP_HANDSHAKE_TIMEOUT if p == "amqp"
                                     else broker.profile.connect_timeout) for p in kind.protocols)


def _routes(kind: ListenerKind, makers: dict[str, MakeSession]) -> tuple[Route, ...]:
    routes = []
    for proto in kind.protocols:
        module = PROTOCOL_SERVERS[proto]
        text = getattr(module, "WS_TEXT", False)
        routes.append(Route(proto, makers[proto], module.WS_SUBPROTOCOLS, path=kind.path, lenient=text,
                            text=text, binary_only=getattr(module, "WS_BINARY_ONLY", False)))
    return tuple(routes)


async def serve_listener(broker: Any, kind: ListenerKind, host: str, port: int, makers: dict[str, MakeSession],
                         *, context: ssl.SSLContext | None, sessions: set, accepting: list,
                         task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run one listener of the node; reports its bound port. Raises OSError when the port
    cannot be bound."""
    opener: Opener | None = None
    if kind.websocket:
        opener = websocket_opener(_routes(kind, makers))
        log = ws_log
    else:
        log = PROTOCOL_SERVERS[kind.protocols[0]].log
    if kind.tls:
        assert context is not None
        opener = tls_opener(context, then=opener)
    await serve_protocol(kind.name, host, port, makers[kind.protocols[0]], log, sessions=sessions,
                         accepting=accepting, opener=opener,
                         handshake_timeout=handshake_timeout(broker, kind),
                         task_status=task_status)
