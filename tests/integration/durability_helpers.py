"""Run ``mqemu serve --data-dir`` as a subprocess for the durability tests.

Every process started here is registered with a ``Nodes`` object, whose ``close()`` kills
and waits for all of them; tests call it in a ``finally`` (or use the ``nodes`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pika

from mqemu.protocols.mqtt.codec import MqttDecoder
from mqemu.protocols.mqtt.packets import Connack, Connect, encode


class NodeProcess:
    def __init__(self, proc: subprocess.Popen, ready: Path, log: Path) -> None:
        self.proc, self.ready, self.log = proc, ready, log
        self.port = 0

    def wait_ready(self, timeout: float = 15) -> "NodeProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.exists():
                try:
                    self.port = json.loads(self.ready.read_text())["amqp"]
                    return self
                except (ValueError, KeyError):
                    pass
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}: {self.log.read_text()}")
            time.sleep(0.02)
        raise AssertionError(f"node not ready after {timeout} s: {self.log.read_text()}")

    def connect(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port, connection_attempts=1,
                                                                 blocked_connection_timeout=30))

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Nodes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.count = 0

    def start(self, data_dir: Path | None, *extra: str) -> NodeProcess:
        self.count += 1
        ready = self.tmp / f"ready{self.count}.json"
        log = self.tmp / f"node{self.count}.log"
        args = [sys.executable, "-m", "mqemu.ha.cli", "serve", "--amqp-port", "0", "--stomp-port", "off",
                "--mqtt-port", "off", "--http-port", "off", "--ready-file", str(ready), *extra]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs.append(proc)
        return NodeProcess(proc, ready, log)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def drain(node: NodeProcess, queue: str) -> list[tuple[bytes, bool]]:
    """Every message in queue as (body, redelivered), acked."""
    conn = node.connect()
    try:
        ch = conn.channel()
        out = []
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((body, method.redelivered))
    finally:
        conn.close()


class RawMqtt:
    """A bare MQTT 3.1.1 client over a socket (to stop an exchange half way, or to see exactly
    what a session sends)."""

    def __init__(self, port: int, client_id: str, clean: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.dec = MqttDecoder(protocol_level=4)
        self.pending: list = []
        self.send(Connect("MQTT", 4, clean, 0, client_id))
        self.connack = self.recv()
        assert isinstance(self.connack, Connack) and self.connack.reason_code == 0

    def send(self, *packets) -> None:
        self.sock.sendall(b"".join(encode(p, 4) for p in packets))

    def recv(self):
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.dec.feed(data)
            self.pending = self.dec.read_packets()
        return self.pending.pop(0)

    def nothing(self, wait: float = 0.3) -> bool:
        """True when nothing arrives within ``wait`` seconds (or the broker closed)."""
        if self.pending:
            return False
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65536) == b""
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(5)

    def close(self) -> None:
        self.sock.close()
