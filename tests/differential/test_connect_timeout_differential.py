"""Silent sockets against mqemu and the reference brokers: each engine closes a STOMP or MQTT
socket that never sends a byte, or stops inside its first frame, after its connect timeout
(RabbitMQ 10 s, ActiveMQ 30 s), without writing anything. mqemu must close at the same time
(within a second) with the same silence.

All sockets are opened at once, so the test takes about 30 s. References: the
``MQEMU_REF_RABBIT_*`` and ``MQEMU_REF_ACTIVEMQ_*`` variables (``HOST:PORT``); a pair without
its variable is skipped.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(90)

REFS = {
    ("rabbitmq", "stomp"): "MQEMU_REF_RABBIT_STOMP",
    ("rabbitmq", "mqtt"): "MQEMU_REF_RABBIT_MQTT",
    ("activemq", "stomp"): "MQEMU_REF_ACTIVEMQ_STOMP",
    ("activemq", "mqtt"): "MQEMU_REF_ACTIVEMQ_MQTT",
}
FIRST_BYTES = {"stomp": b"CONNECT\naccept-version:1.2\n", "mqtt": b"\x10\x0e\x00\x04MQ"}
EXPECTED = {"rabbitmq": 10.0, "activemq": 30.0}


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def _closed_after(addr: tuple[str, int], first: bytes, out: dict, key: tuple) -> None:
    """Seconds until the server closed the socket, and what it wrote."""
    s = socket.create_connection(addr, timeout=60)
    t0 = time.monotonic()
    received = b""
    try:
        if first:
            s.sendall(first)
        while True:
            data = s.recv(4096)
            if not data:
                break
            received += data
    except ConnectionResetError:
        pass
    except socket.timeout:
        out[key] = (None, received)
        return
    finally:
        s.close()
    out[key] = (time.monotonic() - t0, received)


def test_silent_sockets_close_as_the_engines_do():
    pairs = {k: os.environ.get(v) for k, v in REFS.items() if os.environ.get(v)}
    if not pairs:
        pytest.skip("no MQEMU_REF_* STOMP/MQTT reference is set")
    from mqemu.ha.node import NodeThread

    nodes = {engine: NodeThread(engine=engine, ports={"amqp": "off"}).start()
             for engine in {e for e, _p in pairs}}
    try:
        results: dict = {}
        threads = []
        for (engine, protocol), ref in pairs.items():
            ours = ("127.0.0.1", nodes[engine].ports[protocol])
            for first in (b"", FIRST_BYTES[protocol]):
                for who, addr in (("mqemu", ours), ("reference", _address(ref))):
                    key = (engine, protocol, bool(first), who)
                    threads.append(threading.Thread(target=_closed_after, args=(addr, first, results, key)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(80)
    finally:
        for node in nodes.values():
            node.stop()
    for (engine, protocol, partial, who), (after, received) in sorted(results.items()):
        print(f"{engine} {protocol} {'partial' if partial else 'silent'} {who}: {after} s, {received!r}")
    for (engine, protocol, partial, _who), (after, received) in results.items():
        ref_after, ref_received = results[engine, protocol, partial, "reference"]
        assert received == ref_received == b""
        assert ref_after is not None and abs(ref_after - EXPECTED[engine]) < 1.0, "the reference changed"
        assert after is not None and abs(after - ref_after) < 1.0, (engine, protocol, partial, after, ref_after)
