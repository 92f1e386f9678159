#!/usr/bin/env python3
"""Memory under a flood: a node's peak RSS while one client publishes at full speed into
something that never drains, and whether the memory alarm blocks the publisher.

Cases (each against a fresh ``mqemu serve`` with ``memory_high_watermark = WATERMARK``):

- ``queue``: AMQP 0-9-1 publishes into a queue with no consumer;
- ``mqtt``: MQTT QoS 0 publishes to a topic whose only subscriber (QoS 0) never reads;
- ``stomp``: STOMP SENDs to ``/topic/flood`` whose only subscriber never reads.

Each runs with and without ``--data-dir``. Each publisher (``--publishers``, default 2) is a
plain socket sending pre-encoded frames from its own process; the parent samples the node's VmRSS every 50 ms.
Printed per case: peak RSS, the watermark, messages sent, how long the publisher stood still
(a blocked publisher's writes stop), whether an AMQP publisher got ``connection.blocked``,
and the node's alarm log lines.

usage: python3 bench/bench_memory.py [--seconds 60] [--size 1024] [--watermark 200MiB]
                                     [--publishers 2] [--cases queue,mqtt,stomp]
                                     [--modes memory,disk]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

BATCH = 64  # frames per send


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- raw clients ---------------------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed")
        data += part
    return data


def _amqp_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = _recv_exact(sock, 7)
    kind, _channel, size = struct.unpack(">BHI", head)
    payload = _recv_exact(sock, size + 1)[:-1]
    return kind, payload


def amqp_connect(port: int) -> socket.socket:
    from mqemu.protocols.amqp091 import spec
    from mqemu.protocols.amqp091.codec import encode_method
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    _amqp_frame(sock)  # start
    sock.sendall(encode_method(0, spec.ConnectionStartOk(
        client_properties={"capabilities": {"connection.blocked": True}}, mechanism="PLAIN",
        response=b"\x00guest\x00guest", locale="en_US")))
    _amqp_frame(sock)  # tune
    sock.sendall(encode_method(0, spec.ConnectionTuneOk(channel_max=0, frame_max=131072, heartbeat=0)))
    sock.sendall(encode_method(0, spec.ConnectionOpen(virtual_host="/")))
    _amqp_frame(sock)  # open-ok
    sock.sendall(encode_method(1, spec.ChannelOpen()))
    _amqp_frame(sock)
    return sock


def amqp_flood_frames(size: int) -> bytes:
    from mqemu.protocols.amqp091 import spec
    from mqemu.protocols.amqp091.codec import encode_content
    one = encode_content(1, spec.BasicPublish(exchange="", routing_key="flood", mandatory=False,
                                              immediate=False), {}, b"x" * size, 131072)
    return one * BATCH


def mqtt_connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
    sock.sendall(bytes([0x10, len(var)]) + var)
    assert _recv_exact(sock, 4)[:2] == b"\x20\x02"
    return sock


def _mqtt_len(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_flood_frames(size: int) -> bytes:
    var = b"\x00\x05flood" + b"x" * size
    return (b"\x30" + _mqtt_len(len(var)) + var) * BATCH


def stomp_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\n\n\x00")
    data = b""
    while b"\x00" not in data:
        data += sock.recv(4096)
    assert data.startswith(b"CONNECTED"), data
    return sock


def stomp_flood_frames(size: int) -> bytes:
    return (b"SEND\ndestination:/topic/flood\ncontent-length:%d\n\n%s\x00" % (size, b"x" * size)) * BATCH


def setup_case(case: str, ports: dict) -> tuple[socket.socket | None, bytes]:
    """Make the never-reading subscriber (kept open by the caller) and return the
    publisher's pre-encoded batch."""
    if case == "queue":
        from mqemu.protocols.amqp091 import spec
        from mqemu.protocols.amqp091.codec import encode_method
        sock = amqp_connect(ports["amqp"])
        sock.sendall(encode_method(1, spec.QueueDeclare(queue="flood", passive=False, durable=False,
                                                        exclusive=False, auto_delete=False, no_wait=False,
                                                        arguments={})))
        _amqp_frame(sock)
        sock.close()
        return None, b""
    if case == "mqtt":
        sub = mqtt_connect(ports["mqtt"], "stuck-subscriber")
        sub.sendall(b"\x82\x0a\x00\x01\x00\x05flood\x00")
        assert _recv_exact(sub, 5)[0] == 0x90
        sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sub, b""
    if case == "stomp":
        sub = stomp_connect(ports["stomp"])
        sub.sendall(b"SUBSCRIBE\nid:0\ndestination:/topic/flood\nreceipt:r1\n\n\x00")
        data = b""
        while b"\x00" not in data:
            data += sub.recv(4096)
        assert data.startswith(b"RECEIPT"), data
        sub.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        return sub, b""
    raise ValueError(case)


def publisher(case: str, ports: dict, size: int, seconds: float, out: "multiprocessing.Queue",
              number: int = 0) -> None:
    """Publish at full speed for seconds; report sends, the longest stall and blocked frames."""
    if case == "queue":
        sock, batch = amqp_connect(ports["amqp"]), amqp_flood_frames(size)
    elif case == "mqtt":
        sock, batch = mqtt_connect(ports["mqtt"], f"flooder-{number}"), mqtt_flood_frames(size)
    else:
        sock, batch = stomp_connect(ports["stomp"]), stomp_flood_frames(size)
    blocked = {"blocked": 0, "unblocked": 0}

    def reader() -> None:
        try:
            while True:
                try:
                    data = sock.recv(65536)
                except socket.timeout:  # the socket's timeout is the sender's
                    continue
                if not data:
                    return
                blocked["blocked"] += data.count(b"\x00\x0a\x00\x3c")
                blocked["unblocked"] += data.count(b"\x00\x0a\x00\x3d")
        except OSError:
            return

    threading.Thread(target=reader, daemon=True).start()
    sent = 0
    stall = 0.0
    end = time.monotonic() + seconds
    sock.settimeout(0.2)
    view = memoryview(batch)
    last = time.monotonic()
    while time.monotonic() < end:
        pos = 0
        while pos < len(view) and time.monotonic() < end:
            try:
                pos += sock.send(view[pos:])
            except socket.timeout:
                continue
            now = time.monotonic()
            stall = max(stall, now - last)
            last = now
        if pos == len(view):
            sent += BATCH
    stall = max(stall, time.monotonic() - last)
    out.put({"sent": sent, "longest_stall_s": round(stall, 2), **blocked})
    sock.close()


# -- the node -------------------------------------------------------------------------------
class Node:
    def __init__(self, work: str, watermark: str, data_dir: str | None) -> None:
        config = os.path.join(work, "mqemu.toml")
        with open(config, "w") as f:
            f.write(f'memory_high_watermark = {parse_size(watermark)}\n')
        self.ready = os.path.join(work, "ready.json")
        self.log_path = os.path.join(work, "node.log")
        args = [sys.executable, "-m", "mqemu.ha.cli", "serve", "--amqp-port", "0", "--stomp-port", "0",
                "--mqtt-port", "0", "--config", config, "--ready-file", self.ready]
        if data_dir:
            args += ["--data-dir", data_dir]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                raise SystemExit(f"node exited: see {self.log_path}")
            time.sleep(0.02)
        time.sleep(0.05)
        self.ports = json.load(open(self.ready))

    def stop(self) -> float:
        t = time.monotonic()
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        return time.monotonic() - t

    def alarm_lines(self) -> list[str]:
        with open(self.log_path, errors="replace") as f:
            return [line.strip() for line in f if "alarm" in line or "being dropped" in line or "page file" in line]


def parse_size(text: str) -> int:
    from mqemu.broker.config import parse_budget
    return parse_budget(text)


def run_case(case: str, mode: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="mqemu-bench-mem-") as work:
        data = os.path.join(work, "data") if mode == "disk" else None
        node = Node(work, args.watermark, data)
        try:
            sub, _ = setup_case(case, node.ports)
            out: multiprocessing.Queue = multiprocessing.Queue()
            pubs = [multiprocessing.Process(target=publisher,
                                            args=(case, node.ports, args.size, args.seconds, out, i))
                    for i in range(args.publishers)]
            base = rss_mb(node.proc.pid)
            peak = base
            for pub in pubs:
                pub.start()
            while any(pub.is_alive() for pub in pubs):
                peak = max(peak, rss_mb(node.proc.pid))
                time.sleep(0.05)
            results = [out.get(timeout=10) for _ in pubs]
            result = {"sent": sum(r["sent"] for r in results),
                      "longest_stall_s": max(r["longest_stall_s"] for r in results),
                      "blocked": sum(r["blocked"] for r in results),
                      "unblocked": sum(r["unblocked"] for r in results)}
            end_rss = rss_mb(node.proc.pid)
            if sub is not None:
                sub.close()
        finally:
            stop_s = node.stop()
        result.update(case=case, mode=mode, start_rss_mb=round(base), peak_rss_mb=round(peak),
                      end_rss_mb=round(end_rss), watermark_mb=round(parse_size(args.watermark) / 2**20),
                      sigterm_s=round(stop_s, 2), alarm_log=node.alarm_lines()[:6])
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--publishers", type=int, default=2, help="flooding connections per case")
    p.add_argument("--watermark", default="200MiB")
    p.add_argument("--cases", default="queue,mqtt,stomp")
    p.add_argument("--modes", default="memory,disk")
    args = p.parse_args()
    for mode in args.modes.split(","):
        for case in args.cases.split(","):
            r = run_case(case, mode, args)
            print(f"{case:6} {mode:6} peak RSS {r['peak_rss_mb']:5} MB (start {r['start_rss_mb']}, end "
                  f"{r['end_rss_mb']}, watermark {r['watermark_mb']}); sent {r['sent']} x {args.size} B; "
                  f"longest publisher stall {r['longest_stall_s']} s; blocked/unblocked frames "
                  f"{r['blocked']}/{r['unblocked']}; SIGTERM {r['sigterm_s']} s", flush=True)
            for line in r["alarm_log"]:
                print("    " + line[:200])


if __name__ == "__main__":
    main()
