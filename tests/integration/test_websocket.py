"""STOMP and MQTT over WebSocket: paho-mqtt's websockets transport, a wsproto STOMP client,
RabbitMQ's Web-STOMP / Web-MQTT layout (path /ws, one port each) and ActiveMQ's one ws port
(STOMP or MQTT by subprotocol), over TLS too, and bad handshakes and frames beside a good
client."""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from mqemu.broker.config import BrokerConfig
from mqemu.ha.tls import TLSOptions

from ws_helpers import WsClient, stomp_frame

pytestmark = pytest.mark.timeout(40)

CONNECT = stomp_frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"})


@pytest.fixture
def rabbit_ws(mqemu_start):
    return mqemu_start(websocket=True, tls=TLSOptions(generate=True))


@pytest.fixture
def activemq_ws(mqemu_start):
    return mqemu_start(engine="activemq", websocket=True, tls=TLSOptions(generate=True))


def paho_ws(port: int, path: str, client_id: str, context: ssl.SSLContext | None = None,
            topic: str = "ws/t") -> tuple[mqtt.Client, queue.Queue]:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, transport="websockets")
    c.ws_set_options(path=path)
    if context is not None:
        c.tls_set_context(context)
    inbox: queue.Queue = queue.Queue()
    connected, subscribed = threading.Event(), threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = lambda cl, u, m: inbox.put(m.payload)
    c.connect("localhost", port)
    c.loop_start()
    assert connected.wait(5)
    c.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    return c, inbox


def stop(c: mqtt.Client) -> None:
    c.loop_stop()
    c.disconnect()


def stomp_ws(port: int, path: str = "/ws", subprotocols=("v12.stomp",), context=None) -> WsClient:
    client = WsClient(port, path, subprotocols, context)
    assert client.status == 101
    client.send_text(CONNECT)
    assert b"CONNECTED" in client.read_until(b"\x00")
    client.messages.clear()
    return client


def test_rabbitmq_ws_listeners_are_named(rabbit_ws):
    assert {"stomp-ws", "mqtt-ws", "stomp-wss", "mqtt-wss"} <= set(rabbit_ws.ports)
    assert "ws" not in rabbit_ws.ports
    assert rabbit_ws.url("stomp-ws") == f"ws://127.0.0.1:{rabbit_ws.ports['stomp-ws']}/ws"


def test_paho_over_web_mqtt(rabbit_ws):
    c, inbox = paho_ws(rabbit_ws.ports["mqtt-ws"], "/ws", "web-mqtt")
    try:
        c.publish("ws/t", b"over websocket", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5) == b"over websocket"
    finally:
        stop(c)


def test_paho_over_web_mqtt_tls(rabbit_ws):
    context = ssl.create_default_context(cafile=rabbit_ws.node.tls.ca_file)
    c, inbox = paho_ws(rabbit_ws.ports["mqtt-wss"], "/ws", "web-mqtts", context)
    try:
        c.publish("ws/t", b"over wss", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5) == b"over wss"
    finally:
        stop(c)


def test_stomp_over_web_stomp_frames_split_and_joined(rabbit_ws):
    client = stomp_ws(rabbit_ws.ports["stomp-ws"])
    assert client.subprotocol == "v12.stomp"
    # two frames in one message, then one frame cut across two messages
    client.send_text(stomp_frame("SUBSCRIBE", {"id": "1", "destination": "/queue/ws-q", "receipt": "r1"})
                     + stomp_frame("SEND", {"destination": "/queue/ws-q"}, "first"))
    second = stomp_frame("SEND", {"destination": "/queue/ws-q"}, "second")
    client.send_text(second[:9])
    client.send_bytes(second[9:].encode())  # binary messages are accepted too
    data = client.read_until(b"second\x00")
    assert b"RECEIPT" in data and b"first" in data
    assert {kind for kind, _ in client.messages} == {"text"}  # frames go out as text messages
    client.close()


def test_web_stomp_picks_the_best_offered_subprotocol_and_takes_none(rabbit_ws):
    offered = WsClient(rabbit_ws.ports["stomp-ws"], "/ws", ("v10.stomp", "v12.stomp", "v11.stomp"))
    assert (offered.status, offered.subprotocol) == (101, "v12.stomp")
    offered.close()
    none = stomp_ws(rabbit_ws.ports["stomp-ws"], subprotocols=())
    assert none.subprotocol is None
    none.close()


def test_stomp_over_wss_to_mqtt_over_ws(rabbit_ws):
    """Web-STOMP over TLS publishes to amq.topic; a Web-MQTT subscriber gets it."""
    c, inbox = paho_ws(rabbit_ws.ports["mqtt-ws"], "/ws", "cross", topic="cross/x")
    try:
        context = ssl.create_default_context(cafile=rabbit_ws.node.tls.ca_file)
        client = stomp_ws(rabbit_ws.ports["stomp-wss"], context=context)
        client.send_text(stomp_frame("SEND", {"destination": "/topic/cross.x", "receipt": "s"}, "from stomp"))
        assert b"RECEIPT" in client.read_until(b"\x00")
        assert inbox.get(timeout=5) == b"from stomp"
        client.close()
    finally:
        stop(c)


def test_activemq_ws_port_serves_stomp_and_mqtt_by_subprotocol(activemq_ws):
    ports = activemq_ws.ports
    assert {"ws", "wss"} <= set(ports) and "stomp-ws" not in ports
    c, inbox = paho_ws(ports["ws"], "/", "amq-ws", topic="amq/t")
    try:
        client = stomp_ws(ports["ws"], path="/any/path", subprotocols=())
        client.send_text(stomp_frame("SEND", {"destination": "/topic/amq.t", "receipt": "s"}, "stomp to mqtt"))
        assert b"RECEIPT" in client.read_until(b"\x00")
        assert inbox.get(timeout=5) == b"stomp to mqtt"
        client.close()
    finally:
        stop(c)
    context = ssl.create_default_context(cafile=activemq_ws.node.tls.ca_file)
    secure = stomp_ws(ports["wss"], context=context)
    assert secure.subprotocol == "v12.stomp"
    secure.close()


def no_warnings(caplog) -> None:
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("mqemu")]


@pytest.mark.parametrize("path, subprotocols, status", [
    ("/nope", ("mqtt",), 404),  # Web-MQTT serves /ws only
    ("/ws", ("foo",), 400),  # MQTT over WebSocket needs the mqtt subprotocol
])
def test_bad_handshakes_are_refused_beside_a_good_client(rabbit_ws, caplog, path, subprotocols, status):
    caplog.set_level(logging.INFO, logger="mqemu")
    c, inbox = paho_ws(rabbit_ws.ports["mqtt-ws"], "/ws", "good")
    try:
        bad = WsClient(rabbit_ws.ports["mqtt-ws"], path, subprotocols)
        assert bad.status == status
        assert bad.wait_closed() is not None
        bad.close()
        c.publish("ws/t", b"still fine", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5) == b"still fine"
    finally:
        stop(c)
    assert any("handshake failed" in r.getMessage() and r.exc_info is None for r in caplog.records)
    no_warnings(caplog)


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_http_without_upgrade_and_garbage_get_refused(rabbit_ws, caplog):
    caplog.set_level(logging.INFO, logger="mqemu")
    port = rabbit_ws.ports["stomp-ws"]
    assert raw(port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(port, b"\x00\x01garbage that is no HTTP\r\n\r\n").startswith(b"HTTP/1.1 400")
    client = stomp_ws(port)  # the listener goes on
    client.close()
    no_warnings(caplog)


def test_text_message_to_mqtt_closes_with_1003(rabbit_ws, caplog):
    client = WsClient(rabbit_ws.ports["mqtt-ws"], "/ws", ("mqtt",))
    assert (client.status, client.subprotocol) == (101, "mqtt")
    client.send_text("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
    assert client.wait_closed() == 1003
    client.close()
    no_warnings(caplog)


def test_malformed_frames_close_that_connection_only(rabbit_ws, caplog):
    good = stomp_ws(rabbit_ws.ports["stomp-ws"])
    bad = WsClient(rabbit_ws.ports["stomp-ws"], "/ws")
    bad.sock.sendall(b"\x81\x05hello")  # an unmasked client frame: a protocol error
    assert bad.wait_closed() == 1002
    bad.close()
    reserved = WsClient(rabbit_ws.ports["stomp-ws"], "/ws")
    reserved.sock.sendall(b"\x83\x80\x00\x00\x00\x00")  # reserved opcode 3
    assert reserved.wait_closed() == 1002
    reserved.close()
    good.send_text(stomp_frame("SEND", {"destination": "/queue/still", "receipt": "ok"}, "x"))
    assert b"RECEIPT" in good.read_until(b"\x00")
    good.close()
    no_warnings(caplog)


def test_a_stalled_websocket_handshake_is_closed_at_the_timeout(mqemu_start, caplog):
    caplog.set_level(logging.INFO, logger="mqemu")
    cfg = BrokerConfig()
    cfg.extra = {"stomp": {"connect_timeout": 1.0}}
    node = mqemu_start(websocket=True, config=cfg)
    port = node.ports["stomp-ws"]
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # the request never ends
    started = time.monotonic()
    client = stomp_ws(port)
    client.close()
    stalled.settimeout(5)
    assert stalled.recv(100) == b""
    assert time.monotonic() - started < 4.0
    stalled.close()
    assert any("no handshake within 1 s" in r.getMessage() for r in caplog.records)
    no_warnings(caplog)
