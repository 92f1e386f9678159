"""A raw-socket STOMP client and the scenarios run with it against mqemu and a reference broker.

Each scenario is a plain function ``scenario(addr, engine) -> dict``: it sends hand-written
frames to ``addr`` (host, port) and returns what a client can observe, already normalised
(generated names and ids replaced by placeholders), so ``test_stomp_differential`` only has
to compare two dicts. ``engine`` is ``"rabbitmq"`` or ``"activemq"``: the flavour the
scenario is written for (the headers each engine wants, such as the RabbitMQ ``host``).

Frames are decoded with mqemu's own ``StompDecoder``; the bytes sent are written out by hand,
so a scenario can send what no encoder would.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mqemu.protocols.stomp.codec import NEED_DATA, StompDecoder, StompFrameError

Addr = tuple[str, int]
WAIT = 1.5  # seconds to wait for a frame that should come


def ref_address(value: str) -> Addr:
    """``HOST:PORT`` (the form of ``MQEMU_REF_RABBIT_STOMP`` and ``MQEMU_REF_ACTIVEMQ_STOMP``)."""
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass
class RFrame:
    command: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RawStomp:
    """One socket; ``send`` raw bytes, ``frames`` what came back, ``closed`` once EOF was read."""

    addr: Addr
    version: str | None = "1.2"
    sock: socket.socket = field(init=False)
    decoder: StompDecoder = field(init=False)
    closed: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.create_connection(self.addr, timeout=5)
        self.decoder = StompDecoder(auto_version=False)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, command: str, headers: dict[str, str] | list[tuple[str, str]] = (),
              body: bytes = b"") -> None:
        items = headers.items() if isinstance(headers, dict) else headers
        head = "".join(f"{k}:{v}\n" for k, v in items)
        self.send(f"{command}\n{head}\n".encode() + body + b"\x00")

    def connect(self, engine: str, version: str = "1.2", **headers: str) -> RFrame:
        """CONNECT with the login each reference accepts; returns the answer (CONNECTED or ERROR)."""
        h = {"accept-version": version, "host": "/", "login": "guest", "passcode": "guest"}
        h.update({k.replace("_", "-"): v for k, v in headers.items()})
        if version == "1.0":
            del h["accept-version"]
        self.frame("CONNECT", h)
        f = self.read(WAIT)
        assert f is not None, "no answer to CONNECT"
        if f.command == "CONNECTED":
            self.version = f.headers.get("version", "1.0")
            self.decoder.version = self.version
        return f

    def read(self, timeout: float = WAIT) -> RFrame | None:
        """The next frame, or None when none comes within timeout or the socket closed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.decoder.next_frame()
            except StompFrameError:
                return None
            if f is not NEED_DATA:
                return RFrame(f.command, f.headers, f.body)
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:  # reset by the peer
                data = b""
            if not data:
                self.closed = True
            else:
                self.decoder.feed(data)

    def read_all(self, timeout: float = WAIT) -> list[RFrame]:
        """Frames until none comes for ``timeout`` (or the socket closed)."""
        out = []
        while (f := self.read(timeout)) is not None:
            out.append(f)
        return out

    def messages(self, n: int, timeout: float = WAIT) -> list[RFrame]:
        """Up to n MESSAGE frames (other frames are kept too, in order)."""
        out = []
        while len(out) < n and (f := self.read(timeout)) is not None:
            out.append(f)
        return out

    def wait_closed(self, timeout: float = WAIT) -> bool:
        self.read_all(timeout)
        return self.closed

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawStomp":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def unique(tag: str) -> str:
    return f"mqemu-diff-{tag}-{uuid.uuid4().hex[:8]}"


# -- normalising --------------------------------------------------------------------------
_UNIQUE = re.compile(r"mqemu-diff-[a-z0-9-]+?-[0-9a-f]{8}")


def norm(text: str) -> str:
    return _UNIQUE.sub("<name>", text)


def error_view(c: RawStomp, frames: list[RFrame]) -> dict[str, Any]:
    """What a client sees of a refused frame: commands received, the ERROR's message header
    and receipt-id, and whether the server closed the socket."""
    view: dict[str, Any] = {"commands": [f.command for f in frames], "closed": c.closed}
    for f in frames:
        if f.command == "ERROR":
            view["message"] = norm(f.headers.get("message", ""))
            view["receipt-id"] = f.headers.get("receipt-id")
            break
    return view


def message_view(f: RFrame | None, values: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """A MESSAGE's header names (sorted), the values named in ``values`` and its body."""
    if f is None:
        return None
    return {"command": f.command, "names": sorted(f.headers),
            **{k: norm(f.headers[k]) if k in f.headers else None for k in values},
            "body": f.body}


# -- bad input ------------------------------------------------------------------------------
def _bad(build: Callable[[RawStomp, str], None], connect: bool = True, version: str = "1.2"
         ) -> Callable[[Addr, str], dict[str, Any]]:
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        with RawStomp(addr) as c:
            if connect:
                assert c.connect(engine, version).command == "CONNECTED"
            build(c, engine)
            frames = c.read_all(WAIT)
            return error_view(c, frames)
    return scenario


def _send_before_connect(c: RawStomp, engine: str) -> None:
    c.frame("SEND", {"destination": "/queue/" + unique("early"), "receipt": "r1"}, b"x")


def _connect_twice(c: RawStomp, engine: str) -> None:
    c.frame("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest",
                        "receipt": "r1"})


def _unknown_command(c: RawStomp, engine: str) -> None:
    c.frame("FOO", {"receipt": "r1"})


def _send_no_destination(c: RawStomp, engine: str) -> None:
    c.frame("SEND", {"receipt": "r1"}, b"x")


def _subscribe_no_destination(c: RawStomp, engine: str) -> None:
    c.frame("SUBSCRIBE", {"id": "0", "receipt": "r1"})


def _subscribe_no_id(c: RawStomp, engine: str) -> None:
    c.frame("SUBSCRIBE", {"destination": "/queue/" + unique("noid"), "receipt": "r1"})


def _ack_unknown(c: RawStomp, engine: str) -> None:
    mid = "T_0@@session-x@@42" if engine == "rabbitmq" else "ID:nowhere-1:1:1:1:42"
    c.frame("ACK", {"id": mid, "receipt": "r1"})


def _nack_10(c: RawStomp, engine: str) -> None:
    c.frame("NACK", {"message-id": "x", "receipt": "r1"})


def _bad_escape(c: RawStomp, engine: str) -> None:
    c.send(b"SEND\ndestination:/queue/" + unique("esc").encode() + b"\nbad:a\\tb\nreceipt:r1\n\nx\x00")


def _body_longer(c: RawStomp, engine: str) -> None:
    c.send(b"SEND\ndestination:/queue/" + unique("long").encode()
           + b"\ncontent-length:1\nreceipt:r1\n\nhello\x00")


def _unsubscribe_unknown(c: RawStomp, engine: str) -> None:
    c.frame("UNSUBSCRIBE", {"id": "nope", "receipt": "r1"})


def _commit_unknown(c: RawStomp, engine: str) -> None:
    c.frame("COMMIT", {"transaction": "nope", "receipt": "r1"})


def _expiration(value: str) -> Callable[[RawStomp, str], None]:
    def build(c: RawStomp, engine: str) -> None:
        c.frame("SEND", {"destination": "/queue/" + unique("exp"), "expiration": value, "receipt": "r1"}, b"x")
    return build


def _connect_frame(headers: dict[str, str]) -> Callable[[Addr, str], dict[str, Any]]:
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        with RawStomp(addr) as c:
            c.frame("CONNECT", headers)
            frames = c.read_all(WAIT)
            view = error_view(c, frames)
            view.pop("receipt-id", None)
            return view
    return scenario


_LOGIN = {"host": "/", "login": "guest", "passcode": "guest"}

BAD_INPUT: dict[str, Callable[[Addr, str], dict[str, Any]]] = {
    "send_before_connect": _bad(_send_before_connect, connect=False),
    "connect_twice": _bad(_connect_twice),
    "unknown_command": _bad(_unknown_command),
    "send_without_destination": _bad(_send_no_destination),
    "subscribe_without_destination": _bad(_subscribe_no_destination),
    "subscribe_without_id_11": _bad(_subscribe_no_id, version="1.1"),
    "subscribe_without_id_12": _bad(_subscribe_no_id),
    "ack_unknown_id": _bad(_ack_unknown),
    "nack_in_10": _bad(_nack_10, version="1.0"),
    "bad_escape": _bad(_bad_escape),
    "body_longer_than_content_length": _bad(_body_longer),
    "unsubscribe_unknown": _bad(_unsubscribe_unknown),
    "commit_unknown_transaction": _bad(_commit_unknown),
    "expiration_not_an_integer": _bad(_expiration("abc")),
    "expiration_negative": _bad(_expiration("-5")),
    "expiration_over_ten_years": _bad(_expiration("315360000001")),
    "bad_heart_beat": _connect_frame({"accept-version": "1.2", "heart-beat": "x,y", **_LOGIN}),
    "unsupported_version": _connect_frame({"accept-version": "2.0,3.1", **_LOGIN}),
    "bad_login": _connect_frame({"accept-version": "1.2", "host": "/", "login": "guest",
                                 "passcode": "wrong"}),
    # 18 KB of headers: more than mqemu buffers before login (16 KiB)
    "connect_over_16k": _connect_frame({"accept-version": "1.2", **_LOGIN,
                                        **{f"pad{i}": "v" * 900 for i in range(20)}}),
}


# -- destinations ---------------------------------------------------------------------------
# Header values that are the same on every run (ids and clocks are compared by name only).
VALUES = ("destination", "subscription", "content-type", "colour", "redelivered", "persistent",
          "priority", "expires", "reply-to", "correlation-id", "content-length")
_TEMP = re.compile(r"(/reply-queue/|/queue/)amq\.gen-[\w-]+|(/remote-temp-queue/)ID:\S+")


def norm_dest(text: str) -> str:
    """Names the broker generates for temporary queues become placeholders."""
    return _TEMP.sub(lambda m: (m.group(1) or m.group(2)) + "<temp>", norm(text))


def view(f: RFrame | None) -> dict[str, Any] | None:
    v = message_view(f, VALUES)
    if v is not None and v.get("reply-to"):
        v["reply-to"] = norm_dest(v["reply-to"])
    if v is not None and v.get("destination"):
        v["destination"] = norm_dest(v["destination"])
    return v


def _session(addr: Addr, engine: str, version: str = "1.2", **headers: str) -> RawStomp:
    c = RawStomp(addr)
    answer = c.connect(engine, version, **headers)
    assert answer.command == "CONNECTED", answer
    return c


def queue_round_trip(addr: Addr, engine: str) -> dict[str, Any]:
    q = "/queue/" + unique("rt")
    with _session(addr, engine) as c:
        c.frame("SEND", {"destination": q, "content-type": "text/plain", "colour": "red",
                         "correlation-id": "c-1", "receipt": "s"}, b"hello")
        sent = c.read()
        c.frame("SUBSCRIBE", {"destination": q, "id": "sub-1", "ack": "auto"})
        return {"receipt": sent and sent.headers.get("receipt-id"), "message": view(c.read())}


def persistent_round_trip(addr: Addr, engine: str) -> dict[str, Any]:
    q = "/queue/" + unique("pers")
    with _session(addr, engine) as c:
        c.frame("SEND", {"destination": q, "persistent": "true", "priority": "7", "receipt": "s"}, b"p")
        c.read()
        c.frame("SUBSCRIBE", {"destination": q, "id": "1", "ack": "client-individual"})
        return {"message": view(c.read())}


def topic_fan_out(addr: Addr, engine: str) -> dict[str, Any]:
    t = "/topic/" + unique("fan")
    with _session(addr, engine) as a, _session(addr, engine) as b:
        for c in (a, b):
            c.frame("SUBSCRIBE", {"destination": t, "id": "s", "receipt": "sub"})
            c.read()
        a.frame("SEND", {"destination": t, "colour": "blue"}, b"news")
        got = [view(a.read()), view(b.read())]
        with _session(addr, engine) as late:
            late.frame("SUBSCRIBE", {"destination": t, "id": "late", "receipt": "sub"})
            late.read()
            stale = late.read(0.5)
        return {"subscribers": got, "late": view(stale)}


def temp_queue_reply_to(addr: Addr, engine: str) -> dict[str, Any]:
    q = "/queue/" + unique("rpc")
    with _session(addr, engine) as client, _session(addr, engine) as server:
        if engine == "activemq":  # ActiveMQ: the requester subscribes to its temporary queue
            client.frame("SUBSCRIBE", {"destination": "/temp-queue/replies", "id": "r", "receipt": "sub"})
            client.read()
        server.frame("SUBSCRIBE", {"destination": q, "id": "s", "receipt": "sub"})
        server.read()
        client.frame("SEND", {"destination": q, "reply-to": "/temp-queue/replies"}, b"ping")
        request = server.read()
        reply_to = request.headers.get("reply-to", "") if request else ""
        server.frame("SEND", {"destination": reply_to, "receipt": "sent"}, b"pong")
        sent = server.read()
        reply = client.read()
        return {"request": view(request), "sent": sent and sent.command, "reply": view(reply)}


def durable_topic(addr: Addr, engine: str) -> dict[str, Any]:
    t = "/topic/" + unique("dur")
    cid = unique("cid")
    if engine == "rabbitmq":
        conn: dict[str, str] = {}
        sub = {"destination": t, "id": "d1", "durable": "true", "auto-delete": "false", "ack": "auto"}
        unsubs = [{"id": "d1", "durable": "true"}]
    else:  # ActiveMQ: UNSUBSCRIBE by id ends the consumer, then by name removes the subscription
        conn = {"client-id": cid}
        sub = {"destination": t, "id": "d1", "activemq.subscriptionName": "dsub", "ack": "auto"}
        unsubs = [{"id": "d1", "activemq.subscriptionName": "dsub"}, {"id": "d1"},
                  {"id": "d1", "activemq.subscriptionName": "dsub"},
                  {"id": "d1", "activemq.subscriptionName": "dsub"}]
    with _session(addr, engine, **conn) as c:
        c.frame("SUBSCRIBE", {**sub, "receipt": "sub"})
        c.read()
    with _session(addr, engine) as p:
        p.frame("SEND", {"destination": t, "receipt": "s"}, b"while away")
        p.read()
    time.sleep(0.2)
    with _session(addr, engine, **conn) as c:
        c.frame("SUBSCRIBE", {**sub, "receipt": "sub"})
        c.read()
        kept = view(c.read())
        unsubscribed = []
        for unsub in unsubs:
            c.frame("UNSUBSCRIBE", {**unsub, "receipt": "unsub"})
            answer = c.read()
            unsubscribed.append(answer and (answer.command, norm(answer.headers.get("message", ""))))
    with _session(addr, engine) as p:
        p.frame("SEND", {"destination": t, "receipt": "s"}, b"after removal")
        p.read()
    with _session(addr, engine, **conn) as c:
        c.frame("SUBSCRIBE", {**sub, "receipt": "sub"})
        c.read()
        after = view(c.read(0.5))
        for unsub in unsubs[1:3] if engine == "activemq" else unsubs:
            c.frame("UNSUBSCRIBE", {**unsub, "receipt": "unsub"})
            c.read()
    return {"kept": kept, "unsubscribe": unsubscribed, "after_removal": after}


def _ack_mode(mode: str) -> Callable[[Addr, str], dict[str, Any]]:
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        q = "/queue/" + unique("ack")
        with _session(addr, engine) as c:
            for i in range(3):
                c.frame("SEND", {"destination": q, "receipt": f"s{i}"}, b"m%d" % i)
                c.read()
            c.frame("SUBSCRIBE", {"destination": q, "id": "1", "ack": mode})
            first = c.messages(3)
            c.frame("ACK", {"id": first[1].headers["ack"], "receipt": "ack"})
            acked = c.read()
        time.sleep(0.2)
        with _session(addr, engine) as c:
            c.frame("SUBSCRIBE", {"destination": q, "id": "1", "ack": "auto"})
            again = [view(f) for f in c.read_all(0.7)]
        return {"first": [view(f) for f in first], "ack": acked and acked.command, "again": again}
    return scenario


def selector(addr: Addr, engine: str) -> dict[str, Any]:
    q = "/queue/" + unique("sel")
    with _session(addr, engine) as c:
        for colour in ("red", "blue", "red"):
            c.frame("SEND", {"destination": q, "colour": colour, "receipt": "s"}, colour.encode())
            c.read()
        c.frame("SUBSCRIBE", {"destination": q, "id": "1", "selector": "colour = 'red'"})
        got = [view(f) for f in c.read_all(0.7)]
    with _session(addr, engine) as c:
        c.frame("SUBSCRIBE", {"destination": q, "id": "1"})
        rest = [view(f) for f in c.read_all(0.7)]
    return {"selected": got, "rest": rest}


def long_header_names(addr: Addr, engine: str) -> dict[str, Any]:
    """Headers AMQP 0-9-1 cannot carry (a name and values over 255 bytes) go from STOMP to
    STOMP as they were sent."""
    q = "/queue/" + unique("long")
    long = {"n" * 300: "name", "correlation-id": "c" * 300, "content-type": "t" * 300}
    with _session(addr, engine) as c:
        c.frame("SEND", {"destination": q, **long, "receipt": "s"}, b"long")
        sent = c.read()
        c.frame("SUBSCRIBE", {"destination": q, "id": "1"})
        got = c.read()
    return {"receipt": sent and sent.command,
            "sent_back": got is not None and all(got.headers.get(k) == v for k, v in long.items()),
            "body": got and got.body}


def version_10_message(addr: Addr, engine: str) -> dict[str, Any]:
    q = "/queue/" + unique("v10")
    with _session(addr, engine, version="1.0") as c:
        c.frame("SEND", {"destination": q, "receipt": "s"}, b"old")
        c.read()
        c.frame("SUBSCRIBE", {"destination": q})
        return {"message": view(c.read())}


def big_send(addr: Addr, engine: str) -> dict[str, Any]:
    """A 16 MiB SEND: RabbitMQ 3.10 has no STOMP frame limit of its own (3.13+: 4 MiB)."""
    q = "/queue/" + unique("big")
    size = 16 << 20
    with _session(addr, engine) as c:
        c.decoder.max_frame_size = 2 * size  # the client's own decoder takes the MESSAGE
        try:
            c.send(f"SEND\ndestination:{q}\nreceipt:s\ncontent-length:{size}\n\n".encode()
                   + b"x" * size + b"\x00")
        except OSError:  # refused and closed before the body was all written
            pass
        answer = c.read(10)
        if answer is None or answer.command != "RECEIPT":
            return {"answer": answer and answer.command}
        c.frame("SUBSCRIBE", {"destination": q, "id": "1", "ack": "auto"})
        got = c.read(10)
        return {"answer": "RECEIPT", "size": got and len(got.body)}


DESTINATIONS: dict[str, Callable[[Addr, str], dict[str, Any]]] = {
    "queue_round_trip": queue_round_trip,
    "persistent_round_trip": persistent_round_trip,
    "topic_fan_out": topic_fan_out,
    "temp_queue_reply_to": temp_queue_reply_to,
    "durable_topic_subscription": durable_topic,
    "ack_client_cumulative": _ack_mode("client"),
    "ack_client_individual": _ack_mode("client-individual"),
    "selector": selector,
    "version_10_message": version_10_message,
    "long_header_names": long_header_names,
    "big_send": big_send,
}


# -- the engine's own wire habits (issue 11 items 7-10) ---------------------------------------
def frame_layout(addr: Addr, engine: str) -> dict[str, Any]:
    """CONNECTED's header names in order, and what follows each frame's NUL (the decoder takes
    EOLs between frames as heart-beats, so the bytes are read here as they come). One frame at
    a time: the engines answer pipelined frames in their own order."""
    q = "/queue/" + unique("layout")
    login = "".join(f"{k}:{v}\n" for k, v in _LOGIN.items())
    sends = [f"CONNECT\naccept-version:1.2\n{login}\n".encode(), f"SEND\ndestination:{q}\nreceipt:s\n\nx".encode(),
             f"SUBSCRIBE\ndestination:{q}\nid:1\nreceipt:r\n\n".encode(), b"UNSUBSCRIBE\nid:nope\n\n"]
    data = b""
    with socket.create_connection(addr, timeout=5) as sock:
        for i, frame in enumerate(sends):
            sock.sendall(frame + b"\x00")
            want = i + 1 if i < 2 else i + 2  # the SUBSCRIBE brings a RECEIPT and a MESSAGE
            deadline = time.monotonic() + WAIT
            while (data.count(b"\x00") < want or not data.endswith(b"\n")) and time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
    frames = re.findall(rb"([A-Z]+)\n(.*?)\n\n.*?\x00(\n*)", data, re.S)
    connected = [f for f in frames if f[0] == b"CONNECTED"]
    return {"commands": sorted(f[0].decode() for f in frames),
            "after_nul": [f[2].decode() for f in frames],
            "connected": connected and [line.split(b":")[0].decode() for line in connected[0][1].split(b"\n")]}


def _duplicate_subscription(version: str, with_id: bool) -> Callable[[Addr, str], dict[str, Any]]:
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        q = "/queue/" + unique("dup")
        ids = {"id": "s1"} if with_id else {}
        with _session(addr, engine, version) as c:
            c.frame("SUBSCRIBE", {"destination": q, **ids, "receipt": "r"})
            first = c.read()
            c.frame("SUBSCRIBE", {"destination": q, **ids})
            frames = c.read_all()
            errors = [f for f in frames if f.command == "ERROR"]
            return {"first": first and first.command, **error_view(c, frames),
                    "body": errors and norm(errors[0].body.decode().split("\n")[0])}  # no stack trace
    return scenario


def _nack_requeue(value: str) -> Callable[[Addr, str], dict[str, Any]]:
    """NACK with ``requeue:<value>``, then a second message: which comes next."""
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        q = "/queue/" + unique("nack")
        with _session(addr, engine) as c:
            c.frame("SEND", {"destination": q, "receipt": "s1"}, b"first")
            c.read()
            c.frame("SUBSCRIBE", {"destination": q, "id": "1", "ack": "client-individual"})
            first = c.read()
            assert first is not None and first.command == "MESSAGE", first
            c.frame("NACK", {"id": first.headers["ack"], "requeue": value})
            c.frame("SEND", {"destination": q, "receipt": "s2"}, b"second")
            frames = c.read_all(0.7)
            return {"messages": [(f.body.decode(), f.headers.get("redelivered"))
                                 for f in frames if f.command == "MESSAGE"],
                    "receipts": [f.headers.get("receipt-id") for f in frames if f.command == "RECEIPT"]}
    return scenario


def _tx_receipts(end: str) -> Callable[[Addr, str], dict[str, Any]]:
    """Receipts of transactional SENDs: which come before the transaction ends, which after
    its COMMIT or ABORT, in order."""
    def scenario(addr: Addr, engine: str) -> dict[str, Any]:
        q = "/queue/" + unique("tx")
        with _session(addr, engine) as c:
            c.frame("BEGIN", {"transaction": "t", "receipt": "b"})
            c.frame("SEND", {"destination": q, "transaction": "t", "receipt": "s1"}, b"one")
            c.frame("SEND", {"destination": q, "transaction": "t", "receipt": "s2"}, b"two")
            c.frame("SUBSCRIBE", {"destination": "/queue/" + unique("mark"), "id": "m", "receipt": "m"})
            before = c.read_all(0.7)
            c.frame(end, {"transaction": "t", "receipt": "e"})
            ended = c.read_all(0.7)  # RabbitMQ: the SENDs' receipts once the messages are stored
            c.frame("SUBSCRIBE", {"destination": q, "id": "q", "receipt": "z"})
            after = c.read_all(0.7)
            return {"before": [f.headers.get("receipt-id", f.command) for f in before],
                    "at_end": [f.headers.get("receipt-id", f.command) for f in ended],
                    "after": [f.headers.get("receipt-id") or f.body.decode() for f in after]}
    return scenario


ENGINE_WIRE: dict[str, Callable[[Addr, str], dict[str, Any]]] = {
    "frame_layout": frame_layout,
    "duplicate_subscription_id": _duplicate_subscription("1.2", True),
    "duplicate_subscription_no_id_12": _duplicate_subscription("1.2", False),
    "duplicate_subscription_no_id_10": _duplicate_subscription("1.0", False),
    "nack_requeue_False": _nack_requeue("False"),
    "nack_requeue_True": _nack_requeue("True"),
    "tx_send_receipts_commit": _tx_receipts("COMMIT"),
    "tx_send_receipts_abort": _tx_receipts("ABORT"),
}


# Where mqemu chooses otherwise on purpose: scenario -> (what the reference does, why).
DELIBERATE: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("rabbitmq", "bad_escape"): ({"commands": [], "closed": True},
                                 ("RabbitMQ's frame parser fails and the socket is dropped without a word; "
                                  "mqemu sends ERROR 'Undefined escape sequence' first, then closes")),
    ("rabbitmq", "body_longer_than_content_length"): (
        {"commands": [], "closed": True},
        "as bad_escape: mqemu names the fault ('Body longer than content-length') before closing"),
    ("activemq", "big_send"): ({"answer": "RECEIPT", "size": 16 << 20},
                               ("ActiveMQ takes STOMP frames up to transport.maxDataLength (100 MB); "
                               "mqemu's ActiveMQ flavour keeps a 4 MiB frame limit to bound memory")),
    ("rabbitmq", "connect_twice"): ({"commands": [], "closed": True},
                                    ("RabbitMQ's processor crashes on a second CONNECT and drops the "
                                     "socket; mqemu sends ERROR 'Already connected', then closes")),
    ("rabbitmq", "connect_over_16k"): ({"commands": ["CONNECTED"], "closed": False},
                                       ("both engines take a CONNECT of any size; mqemu buffers at most "
                                        "16 KiB before login (ERROR 'Frame too large', then closes), so an "
                                        "unauthenticated client cannot make it hold megabytes")),
    ("activemq", "connect_over_16k"): ({"commands": ["CONNECTED"], "closed": False}, "as on rabbitmq"),
    ("activemq", "duplicate_subscription_id"): (
        {"first": "RECEIPT", "commands": [], "closed": False, "body": []},
        ("ActiveMQ takes a second SUBSCRIBE under a taken id silently (a second consumer whose "
         "MESSAGEs carry the same subscription); mqemu keys subscriptions by id, so ACK and "
         "UNSUBSCRIBE stay unambiguous, and refuses it with an ERROR")),
    ("activemq", "duplicate_subscription_no_id_10"): (
        {"first": "RECEIPT", "commands": [], "closed": False, "body": []},
        "as duplicate_subscription_id: STOMP 1.0 keys a subscription without id by its destination"),
}
