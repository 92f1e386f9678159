"""STOMP as each engine writes it, on the wire (issue 11 items 7-10): CONNECTED's header
order and the EOL after every frame's NUL, a duplicate subscription's consumer tag, RabbitMQ's
True/False headers, and when a transactional SEND gets its receipt. Raw sockets against a node
on port 0; every wait is for a frame (a receipt), never a sleep. The same scenarios run
against the reference brokers in ``tests/differential/stomp_raw.py`` (``ENGINE_WIRE``)."""

from __future__ import annotations

import re
import socket
import uuid

import pytest

pytestmark = pytest.mark.timeout(20)

LOGIN = "host:/\nlogin:guest\npasscode:guest\n"


class Wire:
    """One raw connection: ``frame`` sends, ``until`` reads whole frames (bytes as received,
    the NUL and what follows it up to the next command included)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def frame(self, command: str, **headers: str) -> None:
        head = "".join(f"{k.replace('_', '-')}:{v}\n" for k, v in headers.items())
        self.sock.sendall(f"{command}\n{head}\n".encode() + b"\x00")

    def connect(self, version: str = "1.2") -> bytes:
        self.sock.sendall(f"CONNECT\naccept-version:{version}\n{LOGIN}\n".encode() + b"\x00")
        return self.until(lambda frames: len(frames) >= 1)[0]

    def until(self, done) -> list[bytes]:
        """Whole frames (each with the EOLs after its NUL received so far) once ``done``."""
        while True:
            frames = _split(self.buf)
            if frames and done(frames):
                return frames
            data = self.sock.recv(65536)
            assert data, f"closed; got {self.buf!r}"
            self.buf += data

    def receipts(self, *last: str) -> list[str]:
        """The receipt ids received, in order, once every one of ``last`` came."""
        frames = self.until(lambda fs: all(any(f"receipt-id:{r}\n".encode() in f for f in fs) for r in last))
        return [m.group(1).decode() for f in frames
                if (m := re.match(rb"RECEIPT\nreceipt-id:([^\n]*)\n", f))]

    def close(self) -> None:
        self.sock.close()


def _split(buf: bytes) -> list[bytes]:
    """Whole frames in ``buf``, each with the EOLs that follow its NUL."""
    out = []
    for m in re.finditer(rb"[A-Z]+\n.*?\x00\n*", buf, re.S):
        out.append(m.group(0))
    return out


def _q(tag: str) -> str:
    return f"/queue/wire-{tag}-{uuid.uuid4().hex[:6]}"


# -- item 7: CONNECTED's order, NUL then LF ---------------------------------------------
@pytest.mark.parametrize("engine,order", [
    ("rabbitmq", ["server", "session", "heart-beat", "version"]),
    ("activemq", ["server", "heart-beat", "session", "version"]),
])
def test_connected_order_and_every_frame_ends_with_nul_lf(mqemu_start, engine, order):
    node = mqemu_start(engine=engine)
    w = Wire(node.ports["stomp"])
    try:
        connected = w.connect()
        assert connected.endswith(b"\n\n\x00\n")
        lines = connected.split(b"\n\n")[0].decode().split("\n")
        assert lines[0] == "CONNECTED" and [line.split(":")[0] for line in lines[1:]] == order
        q = _q("nul")
        w.frame("SEND", destination=q, receipt="s")
        w.frame("SUBSCRIBE", destination=q, id="1", receipt="r")
        w.frame("UNSUBSCRIBE", id="nope")
        frames = w.until(lambda fs: [f.split(b"\n")[0] for f in fs][-1:] == [b"ERROR"]
                         and fs[-1].endswith(b"\x00\n"))
        commands = [f.split(b"\n")[0] for f in frames]
        assert commands == [b"CONNECTED", b"RECEIPT", b"RECEIPT", b"MESSAGE", b"ERROR"]
        assert all(f.endswith(b"\x00\n") and not f.endswith(b"\x00\n\n") for f in frames)
    finally:
        w.close()


# -- item 8: a duplicate subscription names RabbitMQ's consumer tag ---------------------
@pytest.mark.parametrize("version,sub_id,named", [
    ("1.2", "s1", "T_s1"), ("1.2", None, "Q_{dest}"), ("1.0", None, "Q_{dest}")])
def test_duplicate_subscription_names_the_consumer_tag(mqemu_server, version, sub_id, named):
    w = Wire(mqemu_server.ports["stomp"])
    try:
        w.connect(version)
        q = _q("dup")
        ids = {} if sub_id is None else {"id": sub_id}
        w.frame("SUBSCRIBE", destination=q, receipt="first", **ids)
        w.frame("SUBSCRIBE", destination=q, **ids)
        frames = w.until(lambda fs: fs[-1].startswith(b"ERROR") and fs[-1].endswith(b"\x00\n"))
        error = frames[-1].decode()
        assert "message:Duplicated subscription identifier\n" in error
        assert f"A subscription identified by '{named.format(dest=q)}' already exists." in error
    finally:
        w.close()


# -- item 9: True/False as RabbitMQ reads them -------------------------------------------
@pytest.mark.parametrize("requeue,redelivered", [
    ("False", False), ("false", False), ("True", True), ("true", True), ("no", True), (None, True)])
def test_nack_requeue_header_takes_python_booleans(mqemu_server, requeue, redelivered):
    w = Wire(mqemu_server.ports["stomp"])
    try:
        w.connect()
        q = _q("nack")
        w.frame("SEND", destination=q, receipt="s1", x_n="first")
        w.frame("SUBSCRIBE", destination=q, id="1", ack="client-individual")
        first = w.until(lambda fs: any(f.startswith(b"MESSAGE") for f in fs))[-1]
        ack = re.search(rb"\nack:([^\n]*)\n", first).group(1).decode()
        extra = {} if requeue is None else {"requeue": requeue}
        w.frame("NACK", id=ack, **extra)
        w.frame("SEND", destination=q, receipt="s2", x_n="second")
        frames = w.until(lambda fs: sum(f.startswith(b"MESSAGE") for f in fs) >= 2)
        nxt = [f for f in frames if f.startswith(b"MESSAGE")][1]
        if redelivered:
            assert b"x-n:first\n" in nxt and b"redelivered:true\n" in nxt
        else:
            assert b"x-n:second\n" in nxt and b"redelivered:false\n" in nxt
    finally:
        w.close()


def test_durable_true_subscription_needs_an_id_as_on_rabbitmq(mqemu_server):
    w = Wire(mqemu_server.ports["stomp"])
    try:
        w.connect()
        w.frame("SUBSCRIBE", destination="/topic/wire-durable", durable="True")
        frames = w.until(lambda fs: fs[-1].startswith(b"ERROR") and fs[-1].endswith(b"\x00\n"))
        assert b"message:Missing Header\n" in frames[-1]
    finally:
        w.close()


# -- item 10: transactional SENDs' receipts ----------------------------------------------
def _tx_receipts(port: int, end: str, persistent: bool = False) -> tuple[list[str], list[str]]:
    """(receipts up to a marker sent after two transactional SENDs, receipts after ``end``)."""
    w = Wire(port)
    try:
        w.connect()
        q = _q("tx")
        extra = {"persistent": "true"} if persistent else {}
        w.frame("BEGIN", transaction="t", receipt="b")
        w.frame("SEND", destination=q, transaction="t", receipt="s1", **extra)
        w.frame("SEND", destination=q, transaction="t", receipt="s2", **extra)
        w.frame("SUBSCRIBE", destination=_q("marker"), id="m", receipt="m")
        before = w.receipts("m")
        w.frame(end, transaction="t", receipt="e")
        w.frame("SUBSCRIBE", destination=q, id="q", receipt="z")
        after = w.receipts("z", "s2" if end == "COMMIT" and persistent else "z")[len(before):]
        got = w.until(lambda fs: sum(f.startswith(b"MESSAGE") for f in fs) >= 2) if end == "COMMIT" else []
        assert sum(f.startswith(b"MESSAGE") for f in got) == (2 if end == "COMMIT" else 0)
        return before, after
    finally:
        w.close()


def test_rabbitmq_tx_send_receipts_come_at_commit(mqemu_server):
    before, after = _tx_receipts(mqemu_server.ports["stomp"], "COMMIT")
    assert before == ["b", "m"]
    assert after == ["e", "s1", "s2", "z"]


def test_rabbitmq_tx_send_receipts_at_commit_once_on_disk(mqemu_start, tmp_path):
    node = mqemu_start(data_dir=str(tmp_path / "data"))
    before, after = _tx_receipts(node.ports["stomp"], "COMMIT", persistent=True)
    assert before == ["b", "m"]
    assert after[0] == "e" and sorted(after[1:]) == ["s1", "s2", "z"]
    assert after.index("s1") < after.index("s2")


def test_rabbitmq_aborted_tx_sends_get_no_receipt(mqemu_server):
    before, after = _tx_receipts(mqemu_server.ports["stomp"], "ABORT")
    assert before == ["b", "m"] and after == ["e", "z"]


def test_activemq_tx_send_receipts_come_at_once(mqemu_start, tmp_path):
    node = mqemu_start(engine="activemq", data_dir=str(tmp_path / "data"))
    before, after = _tx_receipts(node.ports["stomp"], "COMMIT", persistent=True)
    assert before == ["b", "s1", "s2", "m"]
    assert after == ["e", "z"]  # not twice: the COMMIT does not answer them again
    node2 = mqemu_start(engine="activemq")
    before, after = _tx_receipts(node2.ports["stomp"], "ABORT")
    assert before == ["b", "s1", "s2", "m"] and after == ["e", "z"]
