"""The ActiveMQ engine's authentication and authorisation against an ActiveMQ 5.17 that has
the simpleAuthenticationPlugin and the authorizationPlugin configured alike.

The shared reference ActiveMQ runs without authentication, so this compares with a second
one: ``scripts/ref_activemq_auth.sh start`` starts it with the users and entries of ``CONFIG``
below and writes ``MQEMU_REF_ACTIVEMQ_AUTH_STOMP`` and ``MQEMU_REF_ACTIVEMQ_AUTH_MQTT``
(``HOST:PORT``) to its env file; without them the tests skip. Each scenario returns what a
client observes (STOMP: frames, the ERROR's ``message`` and ``receipt-id``, whether the socket
closed; MQTT: the exact bytes of the answer), and the two must be equal.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from stomp_raw import WAIT, Addr, RawStomp, error_view, ref_address, unique

pytestmark = pytest.mark.timeout(60)

# The same users and entries as scripts/ref_activemq_auth.sh writes in activemq.xml.
CONFIG = """
engine = "activemq"

[[users]]
name = "admin"
password = "adminpw"
groups = ["admins", "users"]

[[users]]
name = "app"
password = "apppw"
groups = ["users"]

[[users]]
name = "reader"
password = "readerpw"
groups = ["readers"]

[[authorization]]
queue = ">"
read = "admins"
write = "admins"
admin = "admins"

[[authorization]]
queue = "orders.>"
read = "users"
write = "users"
admin = "users"

[[authorization]]
queue = "reports"
read = "readers"

[[authorization]]
queue = "inbox.>"
read = "users"
write = "users"

[[authorization]]
topic = ">"
read = "admins"
write = "admins"
admin = "admins"

[[authorization]]
topic = "news.>"
read = "users,readers"
write = "users"
admin = "users,readers"

[[authorization]]
topic = "ActiveMQ.Advisory.>"
read = "*"
write = "*"
admin = "*"
"""


@pytest.fixture(scope="module", params=["toml", "activemq.xml"])
def pair(request, tmp_path_factory):
    """((mqemu STOMP, reference STOMP), (mqemu MQTT, reference MQTT)); skips without them.
    mqemu takes the users and entries from ``CONFIG`` (toml) or from the reference's own
    activemq.xml (``mqemu serve --activemq-xml``'s loader)."""
    stomp_ref = os.environ.get("MQEMU_REF_ACTIVEMQ_AUTH_STOMP")
    mqtt_ref = os.environ.get("MQEMU_REF_ACTIVEMQ_AUTH_MQTT")
    if not stomp_ref or not mqtt_ref:
        pytest.skip("MQEMU_REF_ACTIVEMQ_AUTH_STOMP/_MQTT are not set (scripts/ref_activemq_auth.sh start)")
    from mqemu.broker.activemq_xml import apply_activemq_xml, load_activemq_xml
    from mqemu.broker.config import load_config
    from mqemu.ha.node import NodeThread

    if request.param == "toml":
        path = tmp_path_factory.mktemp("auth") / "mqemu.toml"
        path.write_text(CONFIG)
        config = load_config(str(path))
    else:
        xml = os.path.join(os.environ.get("MQEMU_REF_AUTH_DIR") or os.path.join(
            os.environ.get("TMPDIR") or "/tmp", "mqemu-ref-auth"), "conf", "activemq.xml")
        if not os.path.exists(xml):
            pytest.skip(f"the reference's {xml} is not there")
        config = load_config(None, "activemq")
        apply_activemq_xml(config, load_activemq_xml(xml))
    with NodeThread(config=config, ports={"amqp": "off"}) as node:
        yield ((("127.0.0.1", node.ports["stomp"]), ref_address(stomp_ref)),
               (("127.0.0.1", node.ports["mqtt"]), ref_address(mqtt_ref)))


# -- STOMP ----------------------------------------------------------------------------------
def _login(login: str | None, passcode: str | None):
    def scenario(addr: Addr) -> dict[str, Any]:
        with RawStomp(addr) as c:
            headers = {"accept-version": "1.2", "host": "/"}
            if login is not None:
                headers.update(login=login, passcode=passcode or "")
            c.frame("CONNECT", headers)
            frames = c.read_all(WAIT)
            view = error_view(c, frames)
            view["body"] = frames[0].body if frames else None
            return view
    return scenario


def _as_app(*frames: tuple[str, dict[str, str]], user: str = "app", password: str = "apppw"):
    """Frames sent by a connected user, one at a time: what each got back."""
    def scenario(addr: Addr) -> list[dict[str, Any]]:
        with RawStomp(addr) as c:
            assert c.connect("activemq", login=user, passcode=password).command == "CONNECTED"
            out = []
            for command, headers in frames:
                c.frame(command, headers, b"x" if command == "SEND" else b"")
                out.append(error_view(c, c.read_all(WAIT)))
            return out
    return scenario


def _stomp_scenarios() -> dict[str, Any]:
    u = unique("q")
    return {
        "wrong password": _login("admin", "wrong"),
        "unknown user": _login("nobody", "x"),
        "no login": _login(None, None),
        "write refused": _as_app(("SEND", {"destination": "/queue/secret", "receipt": "r1"}),
                                 ("SEND", {"destination": f"/queue/orders.{u}", "receipt": "r2"})),
        "create refused": _as_app(("SEND", {"destination": f"/queue/inbox.{u}", "receipt": "r1"})),
        "read refused": _as_app(("SUBSCRIBE", {"destination": "/queue/reports", "id": "1", "receipt": "r1"})),
        "topic wildcards": _as_app(
            ("SUBSCRIBE", {"destination": "/topic/>", "id": "1", "receipt": "r1"}),
            ("SUBSCRIBE", {"destination": "/topic/*.today", "id": "2", "receipt": "r2"}),
            ("SUBSCRIBE", {"destination": "/topic/news.>", "id": "3", "receipt": "r3"})),
        "topic write refused": _as_app(("SEND", {"destination": f"/topic/payroll.{u}", "receipt": "r1"}),
                                       ("SEND", {"destination": f"/topic/news.{u}", "receipt": "r2"})),
        "reader": _as_app(("SUBSCRIBE", {"destination": "/queue/reports", "id": "1", "receipt": "r1"}),
                          ("SEND", {"destination": f"/topic/news.{u}", "receipt": "r2"}),
                          user="reader", password="readerpw"),
    }


STOMP = _stomp_scenarios()


@pytest.mark.parametrize("name", sorted(STOMP))
def test_stomp_as_activemq_with_authentication(name, pair) -> None:
    (ours, ref), _ = pair
    scenario = STOMP[name]
    a, b = scenario(ours), scenario(ref)
    print(f"{name}\n  mqemu:     {a}\n  reference: {b}")
    assert a == b


# -- MQTT -----------------------------------------------------------------------------------
def _utf8(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


def _connect(addr: Addr, user: str | None, password: str | None) -> tuple[socket.socket, bytes]:
    flags = 0x02 | (0xC0 if user is not None else 0)
    body = _utf8("MQTT") + bytes([4, flags, 0, 60]) + _utf8(unique("c"))
    if user is not None:
        body += _utf8(user) + _utf8(password or "")
    s = socket.create_connection(addr, timeout=5)
    s.sendall(bytes([0x10, len(body)]) + body)
    return s, _read(s, 4)


def _read(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize("user, password", [("admin", "wrong"), ("guest", "guest"), (None, None)])
def test_mqtt_refused_login_as_activemq(pair, user, password) -> None:
    _, (ours, ref) = pair
    answers = []
    for addr in (ours, ref):
        s, connack = _connect(addr, user, password)
        with s:
            answers.append((connack, _read(s, 1)))  # then the socket closes: b""
    assert answers[0] == answers[1] == (bytes([0x20, 2, 0, 5]), b"")


def test_mqtt_subscribe_and_publish_refusals_as_activemq(pair) -> None:
    _, (ours, ref) = pair
    answers = []
    for addr in (ours, ref):
        s, connack = _connect(addr, "app", "apppw")
        with s:
            payload = (1).to_bytes(2, "big") + _utf8("payroll/+") + b"\x01" + _utf8("news/#") + b"\x01"
            s.sendall(bytes([0x82, len(payload)]) + payload)
            suback = _read(s, 6)
            pub = _utf8("payroll/x") + (7).to_bytes(2, "big") + b"forged"
            s.sendall(bytes([0x32, len(pub)]) + pub)
            answers.append((connack, suback, _read(s, 4)))
    print(answers)
    assert answers[0] == answers[1] == (bytes([0x20, 2, 0, 0]), bytes([0x90, 4, 0, 1, 0x80, 1]),
                                        bytes([0x40, 2, 0, 7]))


def _publishes(s: socket.socket, timeout: float) -> list[tuple[str, bytes]]:
    """The (topic, payload) of the PUBLISH packets that arrive within timeout (QoS 1)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    out = []
    while len(data) >= 2:
        size, shift, i = 0, 0, 1
        while True:
            size |= (data[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not data[i - 1] & 0x80:
                break
        packet, data = data[i:i + size], data[i + size:]
        n = int.from_bytes(packet[:2], "big")
        out.append((packet[2:2 + n].decode(), packet[2 + n + 2:]))
    return out


def test_mqtt_session_taken_by_another_user_as_activemq(pair) -> None:
    """ActiveMQ lets another user take a persistent session over and restores its
    subscriptions as that user: what it may not read (payroll/#) is dropped, queued or live."""
    _, (ours, ref) = pair
    seen = []
    for addr in (ours, ref):
        cid = unique("take")
        t = cid[-8:]  # topics of this run only (ActiveMQ replays recent topic messages to
        # a restored MQTT subscription: other runs' must not reach this one)

        def connect(user: str, password: str, client_id: str, clean: bool,
                    addr: tuple[str, int] = addr) -> socket.socket:
            flags = 0xC0 | (0x02 if clean else 0)
            body = _utf8("MQTT") + bytes([4, flags, 0, 60]) + _utf8(client_id) + _utf8(user) + _utf8(password)
            s = socket.create_connection(addr, timeout=5)
            s.sendall(bytes([0x10, len(body)]) + body)
            assert _read(s, 4)[3] == 0
            return s

        def publish(s: socket.socket, topic: str, payload: bytes, pid: int) -> None:
            p = _utf8(topic) + pid.to_bytes(2, "big") + payload
            s.sendall(bytes([0x32, len(p)]) + p)
            assert _read(s, 4) == bytes([0x40, 2]) + pid.to_bytes(2, "big")

        owner = connect("admin", "adminpw", cid, clean=False)
        payload = (1).to_bytes(2, "big") + _utf8(f"news/{t}/#") + b"\x01" + _utf8(f"payroll/{t}/#") + b"\x01"
        owner.sendall(bytes([0x82, len(payload)]) + payload)
        assert _read(owner, 6) == bytes([0x90, 4, 0, 1, 1, 1])
        owner.sendall(b"\xe0\x00")
        owner.close()
        publisher = connect("admin", "adminpw", cid + "-p", clean=True)
        with publisher:
            publish(publisher, f"payroll/{t}/a", b"queued salary", 1)
            publish(publisher, f"news/{t}/a", b"queued headline", 2)
            thief = connect("reader", "readerpw", cid, clean=False)
            with thief:
                got = _publishes(thief, WAIT)
                publish(publisher, f"payroll/{t}/b", b"live salary", 3)
                publish(publisher, f"news/{t}/b", b"live headline", 4)
                got += _publishes(thief, WAIT)
        seen.append([(topic.replace(t, "<t>"), body) for topic, body in got])
    print(seen)
    assert seen[0] == seen[1] == [("news/<t>/a", b"queued headline"), ("news/<t>/b", b"live headline")]
