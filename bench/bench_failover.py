"""Failover under load: kill -9 of the active node, time to the first STOMP MESSAGE through
the standby, and what a publisher was told is stored and never came back (``lost``).

Targets, side by side in one run:
  mqemu-fast      an mqemu active/standby pair (``TopologyThread``, timing ``fast``: lock retry 100 ms)
  mqemu-engine    the same with timing ``engine`` (lock retry 10 s, ActiveMQ's default)
  activemq-100ms  the real ActiveMQ 5.17 pair on one KahaDB directory (``start.sh activemq-pair``)
                  whose slave polls the lock every 100 ms
  activemq-10s    the same pair, the slave started with the default 10 s poll

The ActiveMQ targets share one pair: the poll that matters is the slave's, set when it is
(re)started, so each restart of a killed master is done with the poll of the next ActiveMQ
cycle (``MQEMU_REF_ACTIVEMQ_PAIR_LOCK_MS``) and the slave's own ``activemq.xml`` says which it has.

Per target a workload over raw STOMP 1.2 sockets: a producer sending persistent messages with
receipts at a steady rate, and a consumer (ack client-individual), both reconnecting over the
endpoint list (a round of the list, then 10 ms). Per cycle: the workload flows, kill -9 of the
active, time from the kill to the first MESSAGE the consumer gets on a connection opened after
the kill, then restart of the killed node (it rejoins as standby) and wait until the pair is
whole again. Targets are interleaved per cycle. At the end the producers stop, the consumers
drain, and ``lost`` counts receipted messages never delivered (per pair: the two ActiveMQ
targets share one pair and one count).

usage: .venv/bin/python bench/bench_failover.py [--cycles 100] [--slow-cycles 10]
           [--targets mqemu-fast,mqemu-engine,activemq-100ms,activemq-10s] [--rate 100] [--seed 1]
``--cycles`` is for the 100 ms targets, ``--slow-cycles`` (default: cycles / 5, at least 1)
for the 10 s ones; ``--targets mqemu-fast:100,activemq-10s:8`` gives a target its own count. ``--cycles 3 --targets mqemu-fast`` runs in well under a minute. The
ActiveMQ targets need ``/work/shared/refbrokers/start.sh activemq-pair`` run first (by you).

Measured (2026-11-29, 2 cores shared with other developers' test runs; rate 100 msg/s per
target; seconds from the kill -9 to the first MESSAGE through the new active):

  one run of 145 interleaved cycles, load average 7-9 (1, 5, 15 min at the end: 8.45 7.92 7.26)
  target           cycles   median      p95      min      max  lost receipted
  mqemu-fast          100    0.133    0.201    0.040    0.461     0     51948
  mqemu-engine         10    4.371    9.828    2.022    9.828     0     48352
  activemq-100ms       25    1.937    3.074    0.806    4.786     0     45533 (one pair for both)
  activemq-10s         10    7.504   11.945    3.737   11.945     0     45533
  mqemu-fast   medians after the kill: lock taken and store open 0.099, recovered 0.101,
               STOMP listening 0.109, node active 0.111, proxy on 0.118, first delivery 0.133

  a shorter run, load average 4-6 (4.22 5.94 6.58 at the end)
  mqemu-fast           10    0.119    0.159    0.059    0.159     0      8509
  activemq-100ms        8    1.125    1.493    0.940    1.493     0      5296 (one pair for both)
  activemq-10s          3    8.932    9.602    8.158    9.602     0      5296
  mqemu-fast     medians: lock and store open 0.092, listening 0.097, proxy on 0.106, delivery 0.119
  activemq-100ms medians: first log line of the new master 0.229, journal replay 0.388 s (as its
                 log reports it), STOMP connector
                 started 0.919, first delivery 1.125

Duplicates (unacknowledged deliveries redelivered after a kill): 85, 4 and 21 (the pair) in the
long run. The fast profile is well under ActiveMQ's 0.44 s (the issue's figure, measured on
another occasion) and under the pair measured here beside it, on the same loaded machine. Of its ~0.12 s: the 100 ms lock poll
(~50 ms on average, plus the wake-up of a loaded machine), opening the store (median 14 ms),
recovery and listener start (~10 ms), the supervisor seeing the role in the status file (its
20 ms watch, ~7 ms), the client's reconnect round (10 ms pause) and its CONNECT/SUBSCRIBE. The
engine profile's 10 s poll gives ActiveMQ's spread (0-10 s plus the takeover).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

RECONNECT_PAUSE = 0.01  # between rounds of the endpoint list
REF_DIR = os.environ.get("MQEMU_REF_DIR", "/tmp/mqemu-ref")
START_SH = os.environ.get("MQEMU_REFBROKERS_START", "/work/shared/refbrokers/start.sh")
PAIR_PORTS = (("127.0.0.1", 61651), ("127.0.0.1", 61652))


# -- raw STOMP ------------------------------------------------------------------------------
class Stomp:
    """One STOMP 1.2 connection on a plain socket: frames out, frames in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    def connect(cls, endpoints: list[tuple[str, int]], deadline: float, stop: threading.Event | None = None) -> "Stomp":
        """Try each endpoint in turn until one answers CONNECTED (a careful app's loop)."""
        while True:
            for host, port in endpoints:
                try:
                    sock = socket.create_connection((host, port), timeout=2)
                except OSError:
                    continue
                conn = cls(sock)
                try:
                    sock.settimeout(5)
                    conn.send("CONNECT", {"accept-version": "1.2", "host": "/", "heart-beat": "0,0"})
                    cmd, _, _ = conn.read()
                    if cmd == "CONNECTED":
                        return conn
                except OSError:
                    pass
                conn.close()
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise TimeoutError(f"no endpoint of {endpoints} answered")
            time.sleep(RECONNECT_PAUSE)

    def send(self, command: str, headers: dict[str, str], body: bytes = b"") -> None:
        head = command + "\n" + "".join(f"{k}:{v}\n" for k, v in headers.items()) + "\n"
        self.sock.sendall(head.encode() + body + b"\0")

    def read(self) -> tuple[str, dict[str, str], bytes]:
        """The next frame; OSError (EOFError included as ConnectionError) when the link ends."""
        while True:
            stripped = self.buf.lstrip(b"\r\n")  # heart-beats between frames
            self.buf = stripped
            end = self.buf.find(b"\n\n")
            if end >= 0:
                lines = self.buf[:end].decode().split("\n")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    k, _, v = line.rstrip("\r").partition(":")
                    headers.setdefault(k, v)
                start = end + 2
                if "content-length" in headers:
                    stop = start + int(headers["content-length"])
                    if len(self.buf) > stop:
                        body, self.buf = self.buf[start:stop], self.buf[stop + 1:]
                        return lines[0].rstrip("\r"), headers, body
                else:
                    nul = self.buf.find(b"\0", start)
                    if nul >= 0:
                        body, self.buf = self.buf[start:nul], self.buf[nul + 1:]
                        return lines[0].rstrip("\r"), headers, body
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("EOF")
            self.buf += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# -- the workload -------------------------------------------------------------------------
class Producer(threading.Thread):
    """Persistent SENDs with receipts at ``rate`` per second; ``receipted`` holds the bodies the
    broker confirmed. A send that got no receipt is sent again after the reconnect."""

    def __init__(self, endpoints: list[tuple[str, int]], queue: str, rate: float) -> None:
        super().__init__(daemon=True, name=f"producer {queue}")
        self.endpoints, self.queue, self.period = endpoints, queue, 1.0 / rate
        self.receipted: set[bytes] = set()
        self.reconnects = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the bench
            self.error = e

    def _run(self) -> None:
        seq = 0
        while not self.stopping.is_set():
            try:
                conn = Stomp.connect(self.endpoints, time.monotonic() + 120, self.stopping)
            except TimeoutError:
                if self.stopping.is_set():
                    return
                raise
            try:
                next_at = time.monotonic()
                while not self.stopping.is_set():
                    body = b"m%08d" % seq
                    conn.send("SEND", {"destination": self.queue, "persistent": "true", "receipt": str(seq),
                                       "content-length": str(len(body))}, body)
                    while True:
                        cmd, headers, _ = conn.read()
                        if cmd == "RECEIPT" and headers.get("receipt-id") == str(seq):
                            break
                        if cmd == "ERROR":
                            raise ConnectionError(f"ERROR {headers.get('message')}")
                    self.receipted.add(body)
                    seq += 1
                    next_at += self.period
                    pause = next_at - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        next_at = time.monotonic()
                conn.close()
            except OSError:
                conn.close()
                self.reconnects += 1


class Consumer(threading.Thread):
    """Subscribed with client-individual acks, reconnecting over the list; ``gen`` counts its
    connections, ``first`` maps a connection's number to the time of its first MESSAGE."""

    def __init__(self, endpoints: list[tuple[str, int]], queue: str) -> None:
        super().__init__(daemon=True, name=f"consumer {queue}")
        self.endpoints, self.queue = endpoints, queue
        self.delivered: set[bytes] = set()
        self.deliveries = 0
        self.gen = 0
        self.first: dict[int, float] = {}
        self.last_delivery = time.monotonic()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:
            self.error = e

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn = Stomp.connect(self.endpoints, time.monotonic() + 120, self.stopping)
            except TimeoutError:
                if self.stopping.is_set():
                    return
                raise
            self.gen += 1
            gen = self.gen
            try:
                conn.send("SUBSCRIBE", {"id": "0", "destination": self.queue, "ack": "client-individual"})
                conn.sock.settimeout(0.5)
                while not self.stopping.is_set():
                    try:
                        cmd, headers, body = conn.read()
                    except socket.timeout:
                        continue
                    if cmd == "MESSAGE":
                        now = time.monotonic()
                        self.first.setdefault(gen, now)
                        self.last_delivery = now
                        self.delivered.add(body)
                        self.deliveries += 1
                        conn.send("ACK", {"id": headers.get("ack") or headers.get("message-id", "")})
                    elif cmd == "ERROR":
                        raise ConnectionError(f"ERROR {headers.get('message')}")
                conn.close()
            except OSError:
                conn.close()


class Workload:
    def __init__(self, endpoints: list[tuple[str, int]], queue: str, rate: float) -> None:
        self.producer = Producer(endpoints, queue, rate)
        self.consumer = Consumer(endpoints, queue)

    def start(self) -> None:
        self.producer.start()
        self.consumer.start()

    def check(self) -> None:
        for t in (self.producer, self.consumer):
            if t.error is not None:
                raise RuntimeError(f"{t.name} failed: {t.error!r}")

    def wait_flowing(self, count: int = 20, timeout: float = 60) -> None:
        """Until the consumer got ``count`` more messages on its current connection."""
        deadline = time.monotonic() + timeout
        start = self.consumer.deliveries
        while self.consumer.deliveries < start + count:
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workload does not flow ({self.consumer.deliveries - start} in {timeout} s)")
            time.sleep(0.01)

    def first_delivery_after(self, gen: int, timeout: float = 60) -> float:
        """The monotonic time of the first MESSAGE on a connection opened after ``gen``."""
        deadline = time.monotonic() + timeout
        while True:
            later = [t for g, t in self.consumer.first.items() if g > gen]
            if later:
                return min(later)
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no delivery through the new active within {timeout} s")
            time.sleep(0.002)

    def finish(self, idle: float = 5, timeout: float = 120) -> dict[str, int]:
        """Stop sending, drain; the counts (``lost``: receipted, never delivered)."""
        self.producer.stopping.set()
        self.producer.join(30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = self.producer.receipted - self.consumer.delivered
            if not missing or time.monotonic() - self.consumer.last_delivery > idle:
                break
            time.sleep(0.05)
        self.consumer.stopping.set()
        self.consumer.join(5)
        lost = self.producer.receipted - self.consumer.delivered
        return {"receipted": len(self.producer.receipted), "lost": len(lost),
                "deliveries": self.consumer.deliveries, "duplicates": self.consumer.deliveries - len(self.consumer.delivered),
                "producer_reconnects": self.producer.reconnects, "consumer_connections": self.consumer.gen}


# -- targets ------------------------------------------------------------------------------
class MqemuPair:
    """An mqemu active/standby pair (two node processes behind the topology's proxies)."""

    def __init__(self, timing: str, rate: float, queue: str) -> None:
        from mqemu.ha.harness import TopologyThread

        self.timing = timing
        self.workdir = tempfile.mkdtemp(prefix="mqemu-fobench-")
        self.topology = TopologyThread(mode="active-standby", timing=timing, protocols=("stomp",),
                                       workdir=self.workdir).start()
        self.workload = Workload(self.topology.endpoints("stomp"), queue, rate)
        self.workload.start()
        self.breakdowns: list[dict[str, float]] = []

    def cycle(self, label: str) -> float:
        self.workload.wait_flowing()
        gen = self.workload.consumer.gen
        t0, w0 = time.monotonic(), time.time()
        killed = self.topology.kill("active")["nodes"][0]
        first = self.workload.first_delivery_after(gen, timeout=60)
        took = first - t0
        self._breakdown(killed, w0, took)
        self.topology.start_node(killed)
        self.topology.wait_for_role(killed, "standby", timeout=60)
        return took

    def _breakdown(self, killed: str, w0: float, took: float) -> None:
        """Where the time went, from the new active's own events and the supervisor's."""
        t = self.topology.topology
        node = next(n for n in t.nodes if n.name != killed)
        marks: dict[str, float] = {}
        for e in node.status().get("events", []):
            if e["time"] >= w0 - 0.001:
                key = {"lock-acquired": "lock", "recovered": "recovered", "listening": "listening"}.get(e["event"])
                if e["event"] == "role" and e.get("role") == "active":
                    key = "node active"
                if key and key not in marks:
                    marks[key] = e["time"] - w0
        for e in list(t.events):
            if e["time"] >= w0 and e["event"] == "role" and e.get("node") == node.name and e.get("role") == "active":
                marks.setdefault("proxy on", e["time"] - w0)
        marks["first delivery"] = took
        self.breakdowns.append(marks)

    def close(self) -> dict[str, int]:
        try:
            return self.workload.finish()
        finally:
            self.topology.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)


class ActiveMQPair:
    """The reference ActiveMQ pair of ``start.sh activemq-pair`` (started beforehand)."""

    def __init__(self, rate: float, queue: str) -> None:
        if not any(_port_open(p) for p in PAIR_PORTS):
            raise SystemExit("no ActiveMQ pair: run /work/shared/refbrokers/start.sh activemq-pair first")
        self.workload = Workload(list(PAIR_PORTS), queue, rate)
        self.workload.start()
        self.breakdowns: dict[str, list[dict[str, float]]] = {}

    @staticmethod
    def _pid(i: int) -> int | None:
        try:
            with open(f"{REF_DIR}/activemq-pair/broker{i}/pid") as f:
                pid = int(f.read())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    @staticmethod
    def _poll_ms(i: int) -> int:
        with open(f"{REF_DIR}/activemq-pair/broker{i}/conf/activemq.xml") as f:
            m = re.search(r'lockAcquireSleepInterval="(\d+)"', f.read())
        return int(m.group(1)) if m else 10000

    def master(self) -> int:
        for i, addr in ((1, PAIR_PORTS[0]), (2, PAIR_PORTS[1])):
            if _port_open(addr):
                return i
        raise RuntimeError("the ActiveMQ pair has no master")

    def _restart(self, i: int, poll_ms: int) -> None:
        env = {**os.environ, "MQEMU_REF_ACTIVEMQ_PAIR_LOCK_MS": str(poll_ms)}
        subprocess.run([START_SH, "activemq-pair"], env=env, check=True, stdout=subprocess.DEVNULL)
        if self._pid(i) is None:
            raise RuntimeError(f"ActiveMQ pair broker {i} did not come back")

    def prepare(self, poll_ms: int) -> None:
        """Make the slave one that polls every ``poll_ms`` (restart it if not)."""
        slave = 3 - self.master()
        if self._pid(slave) is not None and self._poll_ms(slave) == poll_ms:
            return
        pid = self._pid(slave)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid)
        self._restart(slave, poll_ms)

    def cycle(self, label: str, next_poll_ms: int) -> float:
        self.workload.wait_flowing()
        master = self.master()
        pid = self._pid(master)
        assert pid is not None
        gen = self.workload.consumer.gen
        t0, w0 = time.monotonic(), time.time()
        os.kill(pid, signal.SIGKILL)
        first = self.workload.first_delivery_after(gen, timeout=60)
        self._breakdown(label, 3 - master, w0, first - t0)
        _wait_dead(pid)
        self._restart(master, next_poll_ms)
        return first - t0

    def _breakdown(self, label: str, slave: int, w0: float, took: float) -> None:
        """Where the time went, from the new master's log (log4j's millisecond time stamps):
        its first line after the kill (it has the lock), the journal replay, the STOMP connector."""
        marks: dict[str, float] = {}
        try:
            with open(f"{REF_DIR}/activemq-pair/broker{slave}/out.log", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return
        for line in lines:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \|", line)
            if not m:
                continue
            # log4j writes local time, as mktime reads it
            at = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
            if at < w0 - 0.001:
                continue
            marks.setdefault("lock", at - w0)
            r = re.search(r"replayed \d+ operations from the journal in ([0-9.]+) seconds", line)
            if r:
                marks["replay"] = float(r.group(1))
            if "Connector stomp started" in line:
                marks.setdefault("listening", at - w0)
        marks["first delivery"] = took
        self.breakdowns.setdefault(label, []).append(marks)

    def close(self) -> dict[str, int]:
        return self.workload.finish()


def _port_open(addr: tuple[str, int]) -> bool:
    try:
        socket.create_connection(addr, timeout=1).close()
        return True
    except OSError:
        return False


def _wait_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


POLL_MS = {"activemq-100ms": 100, "activemq-10s": 10000}
TARGETS = ("mqemu-fast", "mqemu-engine", "activemq-100ms", "activemq-10s")
SLOW = ("mqemu-engine", "activemq-10s")


def parse_targets(spec: str, cycles: int, slow_cycles: int) -> dict[str, int]:
    """``name[:cycles],...`` -> cycles per target (default: ``cycles``, ``slow_cycles`` for 10 s ones)."""
    out = {}
    for item in spec.split(","):
        name, _, n = item.strip().partition(":")
        if name not in TARGETS:
            raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
        out[name] = int(n) if n else (slow_cycles if name in SLOW else cycles)
    return out


def schedule(counts: dict[str, int], seed: int) -> list[str]:
    """The cycles' targets, interleaved: each target's cycles spread over the run."""
    rng = random.Random(seed)
    keyed = []
    for t, n in counts.items():
        keyed += [((k + rng.random()) / n, t) for k in range(n)]
    return [t for _, t in sorted(keyed)]


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    if not s:
        return {}
    p95 = s[min(len(s) - 1, max(0, int(round(0.95 * len(s))) - 1))]
    return {"median": statistics.median(s), "p95": p95, "min": s[0], "max": s[-1]}


def run(counts: dict[str, int], rate: float = 100, seed: int = 1, out: Any = sys.stdout) -> dict[str, Any]:
    """Run the scenario (``counts``: cycles per target); returns per target: ``times`` (s),
    ``lost`` and the workload's counts."""
    targets = list(counts)
    order = schedule(counts, seed)
    stamp = f"{os.getpid()}.{int(time.time())}"
    pairs: dict[str, Any] = {}
    results: dict[str, Any] = {t: {"times": []} for t in targets}
    try:
        for t in targets:
            if t.startswith("mqemu-"):
                pairs[t] = MqemuPair(t.split("-", 1)[1], rate, f"/queue/fobench.{t}.{stamp}")
            elif "activemq" not in pairs:
                pairs["activemq"] = ActiveMQPair(rate, f"/queue/fobench.activemq.{stamp}")
        amq_order = [t for t in order if t in POLL_MS]
        if amq_order:
            pairs["activemq"].prepare(POLL_MS[amq_order[0]])
        for i, t in enumerate(order):
            if t in POLL_MS:
                amq_order.pop(0)
                next_ms = POLL_MS[amq_order[0]] if amq_order else POLL_MS[t]
                took = pairs["activemq"].cycle(t, next_ms)
            else:
                took = pairs[t].cycle(t)
            results[t]["times"].append(took)
            print(f"cycle {i + 1}/{len(order)} {t}: {took:.3f} s", file=out, flush=True)
    finally:
        for key, pair in pairs.items():
            counts = pair.close()
            for t in targets:
                if t == key or (key == "activemq" and t in POLL_MS):
                    results[t].update(counts)
                    if isinstance(pair, MqemuPair):
                        results[t]["breakdowns"] = pair.breakdowns
                    else:
                        results[t]["breakdowns"] = pair.breakdowns.get(t, [])
    return results


def report(results: dict[str, Any], out: Any = sys.stdout) -> None:
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", file=out)
    print(f"{'target':16} {'cycles':>6} {'median':>8} {'p95':>8} {'min':>8} {'max':>8} {'lost':>5} "
          f"{'receipted':>9} {'dups':>5}", file=out)
    for t, r in results.items():
        s = summary(r["times"])
        if not s:
            continue
        shared = " (pair)" if t in POLL_MS and sum(k in POLL_MS for k in results) > 1 else ""
        print(f"{t:16} {len(r['times']):6d} {s['median']:8.3f} {s['p95']:8.3f} {s['min']:8.3f} {s['max']:8.3f} "
              f"{r.get('lost', -1):5d} {r.get('receipted', 0):9d} {r.get('duplicates', 0):5d}{shared}", file=out)
    for t, r in results.items():
        if r.get("breakdowns"):
            keys = ["lock", "replay", "recovered", "listening", "node active", "proxy on", "first delivery"]
            med = {k: statistics.median([b[k] for b in r["breakdowns"] if k in b])
                   for k in keys if any(k in b for b in r["breakdowns"])}
            print(f"{t} median seconds after the kill: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()),
                  file=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--slow-cycles", type=int, default=None)
    parser.add_argument("--targets", default=",".join(TARGETS), help="name[:cycles],... (interleaved)")
    parser.add_argument("--rate", type=float, default=100, help="messages per second per producer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    slow = args.slow_cycles if args.slow_cycles is not None else max(1, args.cycles // 5)
    results = run(parse_targets(args.targets, args.cycles, slow), args.rate, args.seed)
    report(results)


if __name__ == "__main__":
    main()
