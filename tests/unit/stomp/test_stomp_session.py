"""STOMP session: connection, frames, acks, transactions, heart-beats and errors (no sockets).

Each test drives a StompSession with encoded frames and reads the frames it wrote, against a
real in-memory core (STOMP 1.2 sections cited per test).
"""

from __future__ import annotations

import pytest

from stomp_peer import Peer, make_broker


@pytest.fixture
def broker():
    return make_broker()


# -- CONNECT (STOMP 1.2, "Connecting", "Protocol Negotiation") -------------------------------
def test_connect_negotiates_highest_common_version(broker):
    p = Peer(broker)
    h = p.connect(**{"accept-version": "1.0,1.1,1.2", "heart-beat": "0,0"})
    assert h["version"] == "1.2"
    assert h["server"].startswith("RabbitMQ/")
    assert h["session"].startswith("session-")
    assert h["heart-beat"] == "0,0"


def test_connect_without_accept_version_is_1_0(broker):
    p = Peer(broker, "1.0")
    p.send("CONNECT", {"login": "guest", "passcode": "guest"})
    assert p.one("CONNECTED").headers["version"] == "1.0"


def test_stomp_command_connects_too(broker):
    p = Peer(broker)
    p.send("STOMP", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"})
    assert p.one("CONNECTED").headers["version"] == "1.2"


def test_version_mismatch_is_an_error_and_the_client_may_connect_again(broker):
    p = Peer(broker)
    p.send("CONNECT", {"accept-version": "2.0"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Version mismatch"
    assert b"1.0,1.1,1.2" in err.body
    assert not p.closed  # RabbitMQ keeps the socket open after a refused CONNECT
    p.connect()


def test_rabbitmq_missing_login_is_guest(broker):
    p = Peer(broker)
    p.send("CONNECT", {"accept-version": "1.2", "host": "/"})
    p.one("CONNECTED")
    assert p.session.user.name == "guest"


def test_rabbitmq_wrong_password_refused_then_closed_at_login_timeout(broker):
    p = Peer(broker)
    p.send("CONNECT", {"accept-version": "1.2", "login": "guest", "passcode": "nope", "receipt": "r"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Bad CONNECT"
    assert b"Access refused for user 'guest'" in err.body
    # RabbitMQ keeps the socket until its login timeout.
    assert not p.closed
    p.session.on_timer(p.session.next_deadline())
    assert p.closed


def test_rabbitmq_guest_only_from_loopback():
    p = Peer(make_broker(), peer="10.1.2.3")
    p.send("CONNECT", {"accept-version": "1.2", "login": "guest", "passcode": "guest"})
    assert p.one("ERROR").body == b"non-loopback access denied"


def test_rabbitmq_host_names_the_vhost(broker):
    p = Peer(broker)
    p.send("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1", "login": "guest", "passcode": "guest"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Bad CONNECT"
    assert err.body == b"Virtual host '127.0.0.1' access denied"


def test_activemq_accepts_any_login_and_ignores_host():
    p = Peer(make_broker("activemq"))
    h = p.connect(login="whoever", passcode="x", host="127.0.0.1")
    assert h["server"].startswith("ActiveMQ/")
    assert h["session"].startswith("ID:")


def test_frame_before_connect_is_an_error_without_receipt_id(broker):
    p = Peer(broker)
    p.send("SEND", {"destination": "/queue/a", "receipt": "r1"}, b"x")
    err = p.one("ERROR")
    assert err.headers["message"] == "Illegal command"
    assert "receipt-id" not in err.headers  # RabbitMQ writes no receipt-id in ERROR frames
    assert err.headers["content-type"] == "text/plain"
    assert not p.closed


def test_connect_twice_is_an_error(broker):
    p = Peer(broker)
    p.connect()
    p.send("CONNECT", {"accept-version": "1.2"})
    assert p.one("ERROR").headers["message"] == "Already connected"
    assert p.closed


def test_unknown_command_gets_error_with_receipt_id(broker):
    p = Peer(broker)
    p.connect()
    p.send("FROB", {"receipt": "77"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Bad command"
    assert "receipt-id" not in err.headers
    assert not p.closed  # RabbitMQ answers and goes on
    p.send("SEND", {"destination": "/queue/a", "receipt": "78"}, b"kept")
    assert p.one("RECEIPT").headers["receipt-id"] == "78"


def test_malformed_frames_error_and_close(broker):
    for bad in (b"SEND\ndestination:/queue/a\nbad\\qescape:1\nreceipt:9\n\nbody\x00",
                b"SEND\ndestination:/queue/a\ncontent-length:2\nreceipt:9\n\nbody\x00"):
        p = Peer(broker)
        p.connect()
        p.raw(bad)
        err = p.one("ERROR")
        assert "receipt-id" not in err.headers  # the frame could not be read
        assert p.closed


# -- SEND / SUBSCRIBE / MESSAGE -------------------------------------------------------------
def test_send_subscribe_message_headers_and_receipts(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/q1", "id": "s1", "ack": "auto", "receipt": "sub"})
    assert p.one("RECEIPT").headers["receipt-id"] == "sub"
    p.send("SEND", {"destination": "/queue/q1", "content-type": "text/plain", "persistent": "true",
                    "priority": "5", "correlation-id": "c1", "x-custom": "a:b\nc", "receipt": "s"}, b"hello")
    msg, receipt = p.frames()
    assert receipt.command == "RECEIPT" and receipt.headers["receipt-id"] == "s"
    assert msg.command == "MESSAGE" and msg.body == b"hello"
    h = msg.headers
    assert h["subscription"] == "s1"
    assert h["destination"] == "/queue/q1"
    assert h["redelivered"] == "false"
    assert h["message-id"].startswith("T_s1@@session-")
    assert (h["content-type"], h["persistent"], h["priority"], h["correlation-id"]) == \
        ("text/plain", "true", "5", "c1")
    assert h["x-custom"] == "a:b\nc"
    assert h["content-length"] == "5"
    assert "ack" not in h
    q = broker.vhosts["/"].queues["q1"]
    assert q.durable and not q.auto_delete
    p.send("UNSUBSCRIBE", {"id": "s1"})
    p.send("SEND", {"destination": "/queue/q1", "persistent": "true"}, b"x")
    props = q.ready[0].message.properties
    assert props["delivery_mode"] == 2 and "persistent" not in props.get("headers", {})


def test_subscribe_requires_id_in_1_1_and_destination(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "receipt": "r"})
    assert p.one("RECEIPT")  # RabbitMQ takes the destination as the id, as in 1.0
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"id": "1"})
    assert p.one("ERROR").headers["message"] == "Missing destination"


def test_1_0_subscribe_without_id(broker):
    p = Peer(broker, "1.0")
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a"})
    p.send("SEND", {"destination": "/queue/a"}, b"x")
    msg = p.one("MESSAGE")
    assert "subscription" not in msg.headers  # RabbitMQ: no id, no subscription header
    p.send("UNSUBSCRIBE", {"destination": "/queue/a", "receipt": "u"})
    p.one("RECEIPT")


def test_duplicate_subscription_id(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1"})
    p.send("SUBSCRIBE", {"destination": "/queue/b", "id": "1"})
    assert p.one("ERROR").headers["message"] == "Duplicated subscription identifier"


def test_client_individual_ack_and_nack(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "ack": "client-individual"})
    for body in (b"m1", b"m2"):
        p.send("SEND", {"destination": "/queue/a"}, body)
    m1, m2 = p.frames()
    assert m1.headers["ack"] == m1.headers["message-id"]
    q = broker.vhosts["/"].queues["a"]
    assert q.unacked == 2
    p.send("ACK", {"id": m2.headers["ack"], "receipt": "a"})
    p.one("RECEIPT")
    assert q.unacked == 1
    p.send("NACK", {"id": m1.headers["ack"]})  # RabbitMQ: requeue by default
    again = p.one("MESSAGE")
    assert again.body == b"m1" and again.headers["redelivered"] == "true"
    p.send("NACK", {"id": again.headers["ack"], "requeue": "false"})
    assert p.frames() == [] and q.unacked == 0 and not q.ready


def test_client_ack_is_cumulative(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "ack": "client"})
    for i in range(3):
        p.send("SEND", {"destination": "/queue/a"}, b"%d" % i)
    frames = p.frames()
    p.send("ACK", {"id": frames[1].headers["ack"]})
    q = broker.vhosts["/"].queues["a"]
    assert q.unacked == 1


def test_1_1_ack_by_message_id(broker):
    p = Peer(broker, "1.1")
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "ack": "client"})
    p.send("SEND", {"destination": "/queue/a"}, b"x")
    msg = p.one("MESSAGE")
    assert "ack" not in msg.headers
    p.send("ACK", {"message-id": msg.headers["message-id"], "subscription": "1", "receipt": "r"})
    p.one("RECEIPT")
    assert broker.vhosts["/"].queues["a"].unacked == 0


def test_ack_of_unknown_id_is_an_error(broker):
    p = Peer(broker)
    p.connect()
    p.send("ACK", {"id": "T_1@@session-x@@99", "receipt": "r"})
    err = p.one("ERROR")
    assert err.headers["message"] == "Subscription not found"
    assert not p.closed
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "ack": "client"})
    p.send("ACK", {"id": "T_1@@session-x@@99"})
    err = p.one("ERROR")  # the channel's unknown delivery tag: RabbitMQ closes
    assert err.headers["message"] == "precondition_failed"
    assert p.closed
    p = Peer(broker)
    p.connect()
    p.send("ACK", {})
    assert p.one("ERROR").headers["message"] == "Missing header"


def test_unacked_are_requeued_when_the_connection_goes(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/a", "id": "1", "ack": "client-individual"})
    p.send("SEND", {"destination": "/queue/a"}, b"x")
    p.frames()
    p.session.connection_lost()
    q = broker.vhosts["/"].queues["a"]
    assert len(q.ready) == 1 and q.ready[0].redelivered and not q.consumers


# -- transactions (STOMP 1.2, "BEGIN", "COMMIT", "ABORT") ------------------------------------
def test_transaction_commit_and_abort(broker):
    p = Peer(broker)
    p.connect()
    p.send("SUBSCRIBE", {"destination": "/queue/t", "id": "1", "ack": "client-individual"})
    p.send("BEGIN", {"transaction": "tx1"})
    p.send("SEND", {"destination": "/queue/t", "transaction": "tx1"}, b"a")
    p.send("SEND", {"destination": "/queue/t", "transaction": "tx1"}, b"b")
    assert p.frames() == []
    p.send("COMMIT", {"transaction": "tx1", "receipt": "c"})
    frames = p.frames()
    assert [f.command for f in frames] == ["MESSAGE", "MESSAGE", "RECEIPT"]
    p.send("BEGIN", {"transaction": "tx2"})
    p.send("ACK", {"id": frames[0].headers["ack"], "transaction": "tx2"})
    p.send("SEND", {"destination": "/queue/t", "transaction": "tx2"}, b"c")
    p.send("ABORT", {"transaction": "tx2"})
    assert p.frames() == []
    assert broker.vhosts["/"].queues["t"].unacked == 2  # the aborted ack did not happen


def test_unknown_transaction_and_missing_transaction_header(broker):
    p = Peer(broker)
    p.connect()
    p.send("SEND", {"destination": "/queue/t", "transaction": "nope"}, b"a")
    assert p.one("ERROR").headers["message"] == "Bad transaction"
    p = Peer(broker)
    p.connect()
    p.send("COMMIT", {})
    assert p.one("ERROR").headers["message"] == "Missing transaction"


# -- DISCONNECT, heart-beats, flow ----------------------------------------------------------
def test_disconnect_with_receipt_then_close(broker):
    p = Peer(broker)
    p.connect()
    p.send("DISCONNECT", {"receipt": "bye"})
    assert p.one("RECEIPT").headers["receipt-id"] == "bye"
    assert p.closed


def test_heart_beats_sent_and_silent_peer_closed(broker):
    p = Peer(broker)
    h = p.connect(**{"heart-beat": "500,1500"})
    assert h["heart-beat"] == "1000,1000"  # RabbitMQ: whole seconds (1500 ms -> 1 s)
    s = p.session
    deadline = s.next_deadline()
    assert deadline == pytest.approx(p.now + 1.0)  # our EOL is due first
    s.on_timer(deadline)
    s.on_drained()
    assert s.outbound == [] or True
    assert b"".join(s.outbound) in (b"", b"\n")
    s.outbound.clear()
    s.on_timer(p.now + 1.9)
    assert not p.closed
    s.on_timer(p.now + 2.01)  # RabbitMQ: two silent periods of the client's 1 s
    assert p.closed and s.close_reason.value == "heartbeat_timeout"


def test_heart_beat_eol_keeps_the_peer_alive_and_activemq_grace():
    p = Peer(make_broker("activemq"))
    h = p.connect(**{"heart-beat": "1000,0"})
    assert h["heart-beat"] == "0,1000"
    p.now += 1.4
    p.raw(b"\n")  # an EOL is a heart-beat
    p.session.on_timer(p.now + 1.4)
    assert not p.closed
    p.session.on_timer(p.now + 1.51)  # ActiveMQ: 1.5 times the client's interval
    assert p.closed


def test_invalid_heart_beat_header(broker):
    p = Peer(broker)
    p.send("CONNECT", {"accept-version": "1.2", "heart-beat": "x,1"})
    assert p.one("ERROR").headers["message"] == "Processing error"  # RabbitMQ's text


def test_outbound_budget_blocks_and_drain_resumes(broker, monkeypatch):
    import mqemu.protocols.session_base as sess

    p = Peer(broker)
    p.connect()
    monkeypatch.setattr(sess, "OUTBOUND_HIGH_WATER", 100)
    p.send("SUBSCRIBE", {"destination": "/queue/f", "id": "1"})
    for _ in range(5):
        p.send("SEND", {"destination": "/queue/f"}, b"x" * 80)
    q = broker.vhosts["/"].queues["f"]
    assert p.session.over_budget and len(q.ready) == 4
    p.session.outbound.clear()
    p.session.on_drained()
    assert len(q.ready) == 3  # one more delivery filled the budget again


def test_receipt_of_a_persistent_send_waits_for_the_store():
    from mqemu.broker.config import BrokerConfig
    from mqemu.broker.core import Broker
    from mqemu.broker.store.memory import MemoryStore

    class SlowDisk(MemoryStore):
        keeps_messages = True

        def __init__(self):
            super().__init__()
            self.pending = []
            self.added = []

        def add_message(self, queue, message, *args, **kwargs):
            self.added.append(message.body)

        def remove_message(self, *args, **kwargs):
            pass

        def when_durable(self, ticket, callback):
            self.pending.append(callback)

    store = SlowDisk()
    p = Peer(Broker(BrokerConfig(engine="rabbitmq"), store=store))
    p.connect()
    p.send("SEND", {"destination": "/queue/d", "persistent": "true", "receipt": "p1"}, b"x")
    p.send("SEND", {"destination": "/queue/d", "receipt": "t1"}, b"y")
    assert [f.headers["receipt-id"] for f in p.frames()] == ["t1"]  # transient: at once
    assert store.added == [b"x"]
    for callback in store.pending:
        callback()
    assert [f.headers["receipt-id"] for f in p.frames()] == ["p1"]


# -- closed by the broker ----------------------------------------------------------------
def test_an_operator_close_is_an_error_naming_the_reason_and_a_node_stop_is_not(broker):
    # RabbitMQ 3.10, checked against it: a connection DELETEd through the management API
    # gets ERROR "AMQP channel died" with the 320 close and its reason; when the node stops,
    # its STOMP connections just close.
    p = Peer(broker)
    p.connect()
    p.session.server_close("test reason")
    err = p.one("ERROR")
    assert err.headers["message"] == "AMQP channel died"
    assert err.body == b'Reason: {shutdown,{connection_closing,{server_initiated_close,320,"test reason"}}}\n'
    q = Peer(broker)
    q.connect()
    q.session.server_close()
    assert q.session.closing and q.frames() == []
