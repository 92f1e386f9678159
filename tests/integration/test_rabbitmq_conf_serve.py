"""``mqemu serve --rabbitmq-conf FILE`` over the wire with pika: the file's heartbeat is what
connection.tune proposes, its consumer_timeout closes a channel that holds a delivery too
long with RabbitMQ 3.10's 406 (and requeues the delivery), a channel that acks in time keeps
going, and a bad file stops the node at start."""

from __future__ import annotations

import time

import pika
import pytest
from test_cli import start, wait_ready

pytestmark = pytest.mark.timeout(60)

CONF = """# as on Amazon MQ
consumer_timeout = 500
heartbeat = 30
management.restrictions.operator_policy_changes.disabled = false
listeners.tcp.default = 5672
"""


def timed_out(channel: int) -> str:
    return (f"PRECONDITION_FAILED - delivery acknowledgement on channel {channel} timed out. Timeout value used: "
            "500 ms. This timeout value can be configured, see consumers doc guide to learn more")


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "rabbitmq.conf"
    path.write_text(CONF)
    proc, ready = start(tmp_path, "--rabbitmq-conf", str(path), "--amqp-port", "0", "--stomp-port", "off",
                        "--mqtt-port", "off")
    try:
        yield wait_ready(proc, ready)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "rabbitmq.conf: applied: consumer_timeout = 500, heartbeat = 30" in err
        assert ("rabbitmq.conf: ignored (mqemu has no such feature): "
                "management.restrictions.operator_policy_changes.disabled") in err
        assert "rabbitmq.conf: ignored (not among Amazon MQ's configurable keys): listeners.tcp.default" in err


def connect(port: int, proposed: list[int] | None = None) -> pika.BlockingConnection:
    def heartbeat(_conn, server_value):
        if proposed is not None:
            proposed.append(server_value)
        return server_value

    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=heartbeat))


def test_the_file_s_heartbeat_is_proposed_in_connection_tune(node):
    proposed: list[int] = []
    with connect(node["amqp"], proposed):
        assert proposed == [30]


def test_a_consumer_that_does_not_ack_loses_its_channel_and_the_delivery_is_requeued(node):
    with connect(node["amqp"]) as conn:
        ch = conn.channel()
        ch.queue_declare("slow")
        ch.basic_publish("", "slow", b"job")
        got = []
        ch.basic_consume("slow", lambda _ch, method, _props, body: got.append((method.delivery_tag, body)))
        began = time.monotonic()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            ch.start_consuming()
        waited = time.monotonic() - began
        assert got == [(1, b"job")]
        assert (closed.value.reply_code, closed.value.reply_text) == (406, timed_out(ch.channel_number))
        assert 0.5 <= waited < 5
        other = conn.channel()
        method, _, body = other.basic_get("slow", auto_ack=True)  # requeued by the close
        assert body == b"job" and method.redelivered


def test_basic_get_without_ack_times_out_too(node):
    with connect(node["amqp"]) as conn:
        ch = conn.channel()
        ch.queue_declare("polled")
        ch.basic_publish("", "polled", b"job")
        reasons: list[Exception] = []
        ch._impl.add_on_close_callback(lambda _ch, reason: reasons.append(reason))  # pika's Channel
        assert ch.basic_get("polled")[2] == b"job"
        deadline = time.monotonic() + 5
        while not reasons and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
        assert [(r.reply_code, r.reply_text) for r in reasons] == [(406, timed_out(ch.channel_number))]
        assert conn.channel().basic_get("polled", auto_ack=True)[2] == b"job"  # requeued


def test_a_consumer_that_acks_in_time_keeps_its_channel(node):
    with connect(node["amqp"]) as conn:
        ch = conn.channel()
        ch.queue_declare("quick")
        ch.basic_qos(prefetch_count=1)
        got = []

        def on_message(channel, method, _props, body):
            got.append(body)
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume("quick", on_message)
        began = time.monotonic()
        n = 0
        while time.monotonic() - began < 1.5:  # three timeouts, every delivery acked at once
            ch.basic_publish("", "quick", str(n).encode())
            n += 1
            conn.process_data_events(time_limit=0.05)
        conn.process_data_events(time_limit=0.3)
        assert ch.is_open
        assert ch.queue_declare("quick", passive=True).method.message_count == 0
        assert got == [str(i).encode() for i in range(n)]


def test_a_bad_file_stops_the_node_naming_the_line(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("heartbeat = 30\nconsumer_timeout = 30 minutes\n")
    proc, _ = start(tmp_path, "--rabbitmq-conf", str(path), "--amqp-port", "0", "--stomp-port", "off",
                    "--mqtt-port", "off")
    assert proc.wait(10) == 2
    assert ("rabbitmq.conf line 2: consumer_timeout must be a whole number of milliseconds from 0 to 2147483647, "
            "not '30 minutes'") in proc.stderr.read()


def test_the_activemq_engine_refuses_the_file(tmp_path):
    path = tmp_path / "r.conf"
    path.write_text(CONF)
    proc, _ = start(tmp_path, "--engine", "activemq", "--rabbitmq-conf", str(path), "--amqp-port", "0",
                    "--stomp-port", "off", "--mqtt-port", "off")
    assert proc.wait(10) == 2
    assert "--rabbitmq-conf needs the RabbitMQ engine (--engine rabbitmq)" in proc.stderr.read()
