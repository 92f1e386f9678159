"""The workload against real mqemu nodes, for every protocol: a clean run, and a run across
a node restart on the same data directory and ports; each history is then checked."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import pytest

from mqemu.ha.checker import check
from mqemu.ha.cli import main
from mqemu.ha.history import read_history
from mqemu.ha.node import NodeThread
from mqemu.ha.workload import Workload, WorkloadOptions, parse_endpoints
from mqemu.ha.workload_clients import Settings, StompClient

PROTOCOLS = ["amqp", "stomp", "mqtt"]


def _workload(protocol: str, ports: list[int], history, **kw) -> Workload:
    options = WorkloadOptions(protocol, [("127.0.0.1", p) for p in ports], settings=Settings(timeout=2.0),
                              drain=3.0, **kw)
    return Workload(options, history)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_clean_run_loses_nothing_and_delivers_everything_once_in_order(protocol, mqemu_start, tmp_path):
    node = mqemu_start()
    path = tmp_path / "h.jsonl"
    w = _workload(protocol, [node.ports[protocol]], path, count=150).start()
    assert w.wait(20), "the workload did not finish"
    records = read_history(path)
    v = check(records)
    c = v.counts
    assert (c.attempted, c.acknowledged, c.delivered, c.ok_frac) == (150, 150, 150, 1.0)
    assert (c.lost, c.duplicated, c.recovered, c.unexpected, c.reordered, c.redelivered) == (0, 0, 0, 0, 0, 0)
    assert v.valid and v.unavailable == []
    kinds = {(r["process"], r["type"], r["f"]) for r in records}
    assert {("consumer-0", "ok", "connect"), ("publisher-0", "ok", "connect"), ("consumer-0", "ok", "ack"),
            ("publisher-0", "info", "done"), ("consumer-0", "info", "done")} <= kinds
    # STOMP's acks are answered (a receipt each); AMQP's and MQTT's are only written
    confirmed = {r.get("confirmed", True) for r in records if (r["f"], r["type"]) == ("ack", "ok")}
    assert confirmed == ({True} if protocol == "stomp" else {False})


@pytest.mark.timeout(40)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_node_restart_on_the_same_data_dir_loses_nothing_confirmed(protocol, tmp_path):
    data = str(tmp_path / "data")
    first = NodeThread(data_dir=data).start()
    second = None
    ports = dict(first.ports)
    w = _workload(protocol, [ports[protocol]], tmp_path / "h.jsonl", count=600, rate=400).start()
    try:
        assert w.wait_until(lambda w: w.confirmed >= 100, 15), "no 100 confirms before the restart"
        w.fault("stop", "node-1")
        first.stop()
        second = NodeThread(data_dir=data, ports=ports).start()
        w.fault("stop", "node-1", "ok")
        assert second.ports == ports
        assert w.wait(25), "the workload did not finish after the restart"
    finally:
        w.stop()
        first.stop()
        if second is not None:
            second.stop()
    v = check(read_history(tmp_path / "h.jsonl"))
    c = v.counts
    assert c.lost == 0 and c.lost_ids == []
    assert c.unexpected == 0
    assert (c.attempted, c.acknowledged, c.delivered) == (600, 600, 600)
    reconnects = [u for u in v.unavailable if u.kind == "connect"]
    assert {u.process for u in reconnects} == {"publisher-0", "consumer-0"}
    assert all(u.end is not None for u in v.unavailable), v.unavailable
    [fault] = v.faults
    assert fault.action == "stop" and fault.delivery_after_reconnect is not None


def test_parse_endpoints_takes_lists_failover_strings_and_credentials():
    assert parse_endpoints("amqp://u:p%40@h1:1,h2", "amqp") == ([("h1", 1), ("h2", 5672)], "u", "p@")
    assert parse_endpoints("failover:(tcp://a:61616,tcp://b:61617)?randomize=false", "stomp") == (
        [("a", 61616), ("b", 61617)], None, None)
    assert parse_endpoints("mqtt://x", "mqtt") == ([("x", 1883)], None, None)
    with pytest.raises(ValueError):
        parse_endpoints(" , ", "amqp")


@pytest.mark.timeout(30)
def test_cli_workload_then_check(mqemu_server, tmp_path, capsys):
    path = tmp_path / "h.jsonl"
    url = f"stomp://127.0.0.1:{mqemu_server.ports['stomp']}"
    assert main(["workload", "--url", url, "--protocol", "stomp", "--count", "50", "--history", str(path),
                 "--queue", "cli-q", "--drain", "2"]) == 0
    assert capsys.readouterr().out.startswith("published 50 (acknowledged 50), delivered 50")
    assert main(["check", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["lost"] == 0


@pytest.mark.timeout(20)
def test_no_broker_the_workload_keeps_trying_and_stops_cleanly(tmp_path):
    w = _workload("amqp", [_free_port()], tmp_path / "h.jsonl", count=10).start()
    assert w.wait_until(lambda w: w.connect_failures >= 4, 10)
    assert w.stop(10)
    v = check(read_history(tmp_path / "h.jsonl"))
    assert v.counts.attempted == 0
    assert {(u.process, u.kind, u.end) for u in v.unavailable} == {("consumer-0", "connect", None),
                                                                   ("publisher-0", "connect", None)}


@pytest.mark.timeout(30)
def test_a_ctrl_c_in_wait_never_passes_a_running_client_for_ended(tmp_path):
    """On CPython 3.11 a Ctrl-C landing in ``Thread.join`` marks the joined thread stopped
    while it runs (cpython#90882): ``wait`` then closed the history under the consumer's
    last records, which the checker read as acknowledged messages lost (the external-mode
    test's flake). Two interrupts, one in each client's wait; both clients still run."""
    w = _workload("amqp", [_free_port()], tmp_path / "h.jsonl", count=10).start()  # nothing listens
    try:
        for _ in range(2):
            timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                w.wait(10)
            timer.join()
        assert not w.wait(0.3), "wait() took running clients for ended"
        assert w.history._file is not None  # still open
    finally:
        assert w.stop(10)
    done = sorted(r["process"] for r in read_history(tmp_path / "h.jsonl") if r["f"] == "done")
    assert done == ["consumer-0", "publisher-0"]  # each client's last record is in the file


def _free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


@pytest.mark.timeout(30)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dead_first_endpoint_is_skipped_for_the_next_one(protocol, mqemu_server, tmp_path):
    dead = _free_port()
    w = _workload(protocol, [dead, mqemu_server.ports[protocol]], tmp_path / "h.jsonl", count=30).start()
    assert w.wait(20)
    records = read_history(tmp_path / "h.jsonl")
    v = check(records)
    assert (v.counts.attempted, v.counts.acknowledged, v.counts.delivered, v.counts.lost) == (30, 30, 30, 0)
    refused = [r for r in records if r["f"] == "connect" and r["type"] == "fail"]
    assert {r["value"] for r in refused} == {f"127.0.0.1:{dead}"}
    assert {(u.process, u.kind) for u in v.unavailable} == {("publisher-0", "connect"), ("consumer-0", "connect")}
    assert all(u.end is not None for u in v.unavailable)


class _Serve:
    """``mqemu serve`` as a process of its own, so a kill -9 is real."""

    def __init__(self, tmp, data: str, ports: dict[str, int] | None = None) -> None:
        import subprocess
        import sys
        ports = ports or {"amqp": 0, "stomp": 0, "mqtt": 0}
        self.ready = tmp / f"ready-{uuid.uuid4().hex[:6]}.json"
        args = [sys.executable, "-m", "mqemu.ha.cli", "serve", "--data-dir", data, "--ready-file", str(self.ready),
                "--log-level", "warning", "--http-port", "off"]
        for proto, port in ports.items():
            args += [f"--{proto}-port", str(port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ports(self, timeout: float = 15) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the ready file is the fact: every listener is bound
            if self.ready.exists():
                try:
                    info = json.loads(self.ready.read_text())
                    return {p: info[p] for p in ("amqp", "stomp", "mqtt")}
                except (ValueError, KeyError):
                    pass
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else ""
            time.sleep(0.02)
        raise AssertionError("mqemu serve did not write its ready file")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.mark.timeout(45)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_kill_9_of_the_node_process_loses_nothing_confirmed(protocol, tmp_path):
    data = str(tmp_path / "data")
    nodes = [_Serve(tmp_path, data)]
    try:
        ports = nodes[0].ports()
        w = _workload(protocol, [ports[protocol]], tmp_path / "h.jsonl", count=500, rate=400).start()
        try:
            assert w.wait_until(lambda w: w.confirmed >= 100, 15), "no 100 confirms before the kill"
            w.fault("kill", "node-1")
            nodes[0].kill9()
            # only the port under test again: another socket (an outgoing connection's local
            # port, from the same ephemeral range) may have taken the others meanwhile
            nodes.append(_Serve(tmp_path, data, {p: ports[p] if p == protocol else 0 for p in ports}))
            assert nodes[1].ports()[protocol] == ports[protocol]
            w.fault("kill", "node-1", "ok")
            assert w.wait(25), "the workload did not finish after the kill"
        finally:
            w.stop()
    finally:
        for node in nodes:
            node.kill9()
    v = check(read_history(tmp_path / "h.jsonl"))
    c = v.counts
    assert (c.lost, c.unexpected) == (0, 0), (c.lost_ids, c.unexpected_ids)
    assert (c.attempted, c.acknowledged, c.delivered) == (500, 500, 500)
    [fault] = v.faults
    assert fault.action == "kill" and fault.reconnected is not None and fault.reconnected > fault.start
    assert fault.delivery_after_reconnect is not None


class _Stall:
    """A TCP relay in front of a node that can stop relaying: the sockets stay open and
    nothing answers, as when the broker is paused (SIGSTOP). Bytes held while stalled are
    passed on once it resumes."""

    def __init__(self, port: int) -> None:
        import socket
        self.target = port
        self.go = threading.Event()
        self.go.set()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b) -> None:
        import socket
        while True:
            try:
                data = a.recv(65536)
            except OSError:
                data = b""
            self.go.wait()
            try:
                if not data:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.go.set()
        for s in [self.listener, *self.sockets]:
            s.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stalled_broker_times_out_the_publish_and_the_workload_recovers(protocol, mqemu_server, tmp_path):
    stall = _Stall(mqemu_server.ports[protocol])
    w = _workload(protocol, [stall.port], tmp_path / "h.jsonl", count=300, rate=200)
    w.options.settings.timeout = 1.0
    try:
        w.start()
        assert w.wait_until(lambda w: w.confirmed >= 50, 15)
        w.fault("pause", "node")
        stall.go.clear()
        # the facts: a publish timed out, then a new connection could not be made either
        assert w.wait_until(lambda w: w.unknown >= 1 and w.connect_failures >= 1, 15)
        stall.go.set()
        w.fault("pause", "node", "ok")
        assert w.wait(25), "the workload did not finish after the stall"
    finally:
        w.stop()
        stall.close()
    v = check(read_history(tmp_path / "h.jsonl"))
    c = v.counts
    assert (c.lost, c.unexpected, c.attempted, c.acknowledged, c.delivered) == (0, 0, 300, 300, 300)
    [publish_gap] = [u for u in v.unavailable if (u.process, u.kind) == ("publisher-0", "enqueue")]
    assert publish_gap.error is not None and publish_gap.error.startswith("TimeoutError: no ")
    assert publish_gap.end is not None and publish_gap.seconds is not None and publish_gap.seconds >= 1.0


@pytest.mark.timeout(30)
def test_a_stomp_ack_is_done_only_once_its_receipt_comes(mqemu_server):
    """An ACK the network holds is not done yet: ack() waits for its receipt and raises when
    none comes, so the history records an ack a fault cut as unknown, and the broker's
    redelivery of it as a redelivery, not a duplicate."""
    stall = _Stall(mqemu_server.ports["stomp"])
    s = Settings(queue=f"ack-{uuid.uuid4().hex[:8]}", timeout=1.0)
    consumer = StompClient("127.0.0.1", stall.port, s, consumer=True)
    publisher = StompClient("127.0.0.1", mqemu_server.ports["stomp"], s, consumer=False)
    try:
        consumer.subscribe()
        publisher.publish(b"m")
        got: list = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = consumer.poll(0.2)
        [d] = got
        stall.go.clear()  # the ACK leaves the client, and goes no further
        with pytest.raises(TimeoutError, match="no receipt"):
            consumer.ack(d)
    finally:
        stall.close()
        consumer.close()
        publisher.close()


@pytest.mark.timeout(40)
def test_ctrl_c_drains_even_when_started_with_sigint_ignored(mqemu_server, tmp_path):
    """A shell's background job (`mqemu workload ... &`) starts with SIGINT ignored; a
    `kill -INT` must still stop publishing and drain, not be lost (it hung a test loop)."""
    import subprocess
    import sys
    path = tmp_path / "h.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "mqemu.ha.cli", "workload", "--url",
                             f"127.0.0.1:{mqemu_server.ports['amqp']}", "--protocol", "amqp", "--seconds", "60",
                             "--rate", "100", "--drain", "2", "--history", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 20
        while not (path.exists() and path.read_bytes().count(b"\n") >= 256) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
    c = check(read_history(path)).counts
    assert c.attempted == c.delivered and c.lost == 0 and c.attempted < 60 * 100 / 2


@pytest.mark.timeout(30)
def test_a_run_bounded_by_time_publishes_at_the_rate_until_then(mqemu_server, tmp_path):
    w = _workload("amqp", [mqemu_server.ports["amqp"]], tmp_path / "h.jsonl", seconds=0.5, rate=100).start()
    assert w.wait(20)
    records = read_history(tmp_path / "h.jsonl")
    c = check(records).counts
    assert 1 <= c.attempted <= 51  # one every 10 ms for 0.5 s, fewer if confirms are slow
    assert (c.acknowledged, c.delivered, c.lost) == (c.attempted, c.attempted, 0)
    invokes = [r["time"] for r in records if r["f"] == "enqueue" and r["type"] == "invoke"]
    assert invokes[-1] - invokes[0] < 0.5
