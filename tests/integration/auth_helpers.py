"""Clients for the authentication and authorisation attack tests: raw STOMP frames,
stomp.py and paho-mqtt with queues of what they received."""

from __future__ import annotations

import queue
import socket

import paho.mqtt.client as mqtt
import stomp
from paho.mqtt.enums import CallbackAPIVersion
from stomp_inbox import Inbox

STALL = 1.0  # a well-behaved client must never wait longer than this on a fact


def stomp_exchange(port: int, data: bytes) -> bytes:
    """Send raw frames and read until the broker closes the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def connect_frame(login: str | None, passcode: str | None) -> bytes:
    lines = [b"CONNECT", b"accept-version:1.2", b"host:/"]
    if login is not None:
        lines.append(b"login:" + login.encode())
    if passcode is not None:
        lines.append(b"passcode:" + passcode.encode())
    return b"\n".join(lines) + b"\n\n\x00"


def stomp_client(port: int, login: str, passcode: str):
    conn = stomp.Connection12([("127.0.0.1", port)], vhost="/")
    listener = Inbox()
    conn.set_listener("c", listener)
    conn.connect(login, passcode, wait=True)
    return conn, listener


class MqttClient:
    def __init__(self, port: int, user: str | None, password: str | None, client_id: str,
                 protocol=mqtt.MQTTv311, clean: bool = True) -> None:
        kwargs = {"clean_session": clean} if protocol != mqtt.MQTTv5 else {}
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, **kwargs)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.inbox: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.pubacks: queue.Queue = queue.Queue()
        self.connack: queue.Queue = queue.Queue()
        self.c.on_connect = lambda cl, u, flags, rc, props: self.connack.put(rc.value)
        self.c.on_message = lambda cl, u, m: self.inbox.put((m.topic, m.payload))
        self.c.on_subscribe = lambda cl, u, mid, codes, props: self.subacks.put([rc.value for rc in codes])
        self.c.on_publish = lambda cl, u, mid, rc, props: self.pubacks.put(rc.value)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.code = self.connack.get(timeout=5)

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=5)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
