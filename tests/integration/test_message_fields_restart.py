"""Protocol fields of a message (``Message.fields``) survive a restart with ``--data-dir``.

An ActiveMQ STOMP text message (a SEND without content-length) is delivered without a
content-length; it must come back in that form from the store (raw sockets show the bytes).
An MQTT client's own message queued in its persistent session before a restart is still
not delivered to a no-local subscription after it.
"""

from __future__ import annotations

import queue as queues
import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

pytestmark = pytest.mark.timeout(30)


class RawStomp:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send(self, command: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        head = "".join(f"{k}:{v}\n" for k, v in headers)
        self.sock.sendall(f"{command}\n{head}\n".encode() + body + b"\x00")

    def frame(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """The next frame (heart-beat EOLs skipped); bodies here never hold a NUL."""
        while b"\x00" not in self.buf.lstrip(b"\r\n"):
            data = self.sock.recv(65536)
            assert data, f"connection closed; unread: {self.buf!r}"
            self.buf += data
        self.buf = self.buf.lstrip(b"\r\n")
        raw, _, self.buf = self.buf.partition(b"\x00")
        head, _, body = raw.partition(b"\n\n")
        command, *lines = head.decode().split("\n")
        return command, [tuple(line.split(":", 1)) for line in lines], body  # type: ignore[misc]

    def close(self) -> None:
        self.sock.close()


def _connected(port: int) -> RawStomp:
    s = RawStomp(port)
    s.send("CONNECT", [("accept-version", "1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")])
    assert s.frame()[0] == "CONNECTED"
    return s


def _send_text(port: int, queue: str, body: bytes) -> None:
    s = _connected(port)
    s.send("SEND", [("destination", f"/queue/{queue}"), ("persistent", "true"), ("color", "blue"),
                    ("receipt", "r1")], body)  # no content-length: a JMS TextMessage
    assert s.frame()[:2] == ("RECEIPT", [("receipt-id", "r1")])
    s.close()


def _receive(port: int, queue: str) -> tuple[list[tuple[str, str]], bytes]:
    s = _connected(port)
    s.send("SUBSCRIBE", [("destination", f"/queue/{queue}"), ("id", "0"), ("ack", "auto")])
    command, headers, body = s.frame()
    s.close()
    assert command == "MESSAGE"
    return headers, body


def _form(headers: list[tuple[str, str]]) -> list[str]:
    """The header names a client sees, without those that differ per delivery."""
    return sorted(k for k, _ in headers if k not in ("message-id", "timestamp", "redelivered"))


def test_activemq_stomp_text_message_keeps_its_form_after_restart(mqemu_start, tmp_path):
    data = str(tmp_path / "data")
    node = mqemu_start(engine="activemq", data_dir=data)
    port = node.ports["stomp"]
    _send_text(port, "texts", b"before")
    before, body = _receive(port, "texts")
    assert body == b"before"
    assert "content-length" not in dict(before)
    _send_text(port, "texts", b"kept")
    node._thread.stop()

    again = mqemu_start(engine="activemq", data_dir=data)
    after, body = _receive(again.ports["stomp"], "texts")
    assert body == b"kept"
    assert "content-length" not in dict(after), after
    assert _form(after) == _form(before)
    assert dict(after)["color"] == "blue"


def test_activemq_stomp_bytes_message_keeps_content_length_after_restart(mqemu_start, tmp_path):
    data = str(tmp_path / "data")
    node = mqemu_start(engine="activemq", data_dir=data)
    s = _connected(node.ports["stomp"])
    s.send("SEND", [("destination", "/queue/bytes"), ("persistent", "true"), ("content-length", "4"),
                    ("receipt", "r1")], b"a\x00bc")
    assert s.frame()[0] == "RECEIPT"
    s.close()
    node._thread.stop()

    again = mqemu_start(engine="activemq", data_dir=data)
    s = _connected(again.ports["stomp"])
    s.send("SUBSCRIBE", [("destination", "/queue/bytes"), ("id", "0")])
    while b"\x00bc\x00" not in s.buf:
        s.buf += s.sock.recv(65536)
    s.close()
    assert b"content-length:4\n" in s.buf


# -- MQTT: the publisher field (no-local) after a restart -----------------------------------
def _mqtt(port: int, client_id: str, inbox, **connect_props):
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5, manual_ack=True)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_message = lambda cl, u, m: inbox.put(m)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    for k, v in connect_props.items():
        setattr(props, k, v)
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    assert connected.wait(5)
    return c


def _stop(c) -> None:
    c.disconnect()
    c.loop_stop()


def test_mqtt_no_local_holds_for_a_message_queued_before_a_restart(mqemu_start, tmp_path):
    """The client's own message waits in its persistent session queue (its receive maximum
    is used up) while the node restarts: it must still not come back to it."""
    data = str(tmp_path / "data")
    node = mqemu_start(data_dir=data)
    port = node.ports["mqtt"]
    inbox: queues.Queue = queues.Queue()
    me = _mqtt(port, "me", inbox, ReceiveMaximum=1)
    done = threading.Event()
    me.on_subscribe = lambda *a: done.set()
    me.subscribe("t", options=SubscribeOptions(qos=1, noLocal=True))
    assert done.wait(5)
    other = _mqtt(port, "other", queues.Queue())
    other.publish("t", b"first", qos=1).wait_for_publish(5)
    first = inbox.get(timeout=5)
    assert first.payload == b"first"  # not acked: the receive maximum (1) is used up
    me.publish("t", b"mine", qos=1).wait_for_publish(5)
    other.publish("t", b"second", qos=1).wait_for_publish(5)
    assert inbox.empty()
    _stop(me)
    _stop(other)
    node._thread.stop()

    again = mqemu_start(data_dir=data)
    inbox = queues.Queue()
    me = _mqtt(again.ports["mqtt"], "me", inbox)
    got = []
    try:
        while b"second" not in got:
            m = inbox.get(timeout=5)
            got.append(m.payload)
            me.ack(m.mid, m.qos)
    finally:
        _stop(me)
    assert got == [b"first", b"second"]
