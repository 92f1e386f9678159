"""``mqemu serve --engine activemq --activemq-xml FILE`` over the wire: the file's users are
refused or let in, its destinations exist from the start, its redelivery policy sends a
message to the dead-letter queue its policy names, and a bad file stops the node at start."""

from __future__ import annotations

import pika
import pytest
from auth_helpers import STALL, connect_frame, stomp_client, stomp_exchange
from test_cli import start, wait_ready

pytestmark = pytest.mark.timeout(60)

XML = """<?xml version="1.0" encoding="UTF-8"?>
<broker xmlns="http://activemq.apache.org/schema/core" brokerName="wire">
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry queue="orders.&gt;">
          <deadLetterStrategy>
            <individualDeadLetterStrategy queuePrefix="DLQ."/>
          </deadLetterStrategy>
        </policyEntry>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
  <destinations>
    <queue physicalName="orders.incoming"/>
  </destinations>
  <plugins>
    <simpleAuthenticationPlugin>
      <users>
        <authenticationUser username="admin" password="adminpw" groups="admins"/>
        <authenticationUser username="app" password="apppw" groups="users"/>
      </users>
    </simpleAuthenticationPlugin>
    <authorizationPlugin>
      <map>
        <authorizationMap>
          <authorizationEntries>
            <authorizationEntry queue="&gt;" read="admins" write="admins" admin="admins"/>
            <authorizationEntry queue="orders.&gt;" read="users" write="users"/>
            <authorizationEntry topic="&gt;" read="admins" write="admins" admin="admins"/>
          </authorizationEntries>
        </authorizationMap>
      </map>
    </authorizationPlugin>
    <redeliveryPlugin>
      <redeliveryPolicyMap>
        <redeliveryPolicyMap>
          <redeliveryPolicyEntries>
            <redeliveryPolicy queue="orders.&gt;" maximumRedeliveries="2"/>
          </redeliveryPolicyEntries>
          <defaultEntry>
            <redeliveryPolicy maximumRedeliveries="5"/>
          </defaultEntry>
        </redeliveryPolicyMap>
      </redeliveryPolicyMap>
    </redeliveryPlugin>
  </plugins>
  <transportConnectors>
    <transportConnector name="stomp" uri="stomp://0.0.0.0:61613"/>
  </transportConnectors>
</broker>
"""


@pytest.fixture
def node(tmp_path):
    path = tmp_path / "activemq.xml"
    path.write_text(XML)
    proc, ready = start(tmp_path, "--engine", "activemq", "--activemq-xml", str(path), "--amqp-port", "0",
                        "--stomp-port", "0", "--mqtt-port", "off")
    try:
        yield wait_ready(proc, ready)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "activemq.xml: ignored: broker@brokerName, broker/transportConnectors" in err
        assert "transport connectors not opened (ports come from the command line): stomp stomp://0.0.0.0:61613" in err


def test_users_of_the_file_are_refused_or_let_in(node):
    reply = stomp_exchange(node["stomp"], connect_frame("app", "wrong"))
    assert reply.startswith(b"ERROR\n") and b"message:User name [app] or password is invalid." in reply
    conn, listener = stomp_client(node["stomp"], "app", "apppw")
    try:
        # created at start: app may write to it without the admin right that creating needs
        conn.send("/queue/orders.incoming", "o1", headers={"receipt": "r1"})
        assert listener.receipts.get(timeout=STALL * 5) == "r1"
        conn.send("/queue/orders.other", "o2", headers={"receipt": "r2"})
        error = listener.errors.get(timeout=STALL * 5)
        assert error.headers["message"] == "User app is not authorized to create: queue://orders.other"
    finally:
        if conn.is_connected():
            conn.disconnect()


def test_redelivery_policy_sends_to_the_policy_s_dead_letter_queue(node):
    params = pika.ConnectionParameters("127.0.0.1", node["amqp"], credentials=pika.PlainCredentials("admin", "adminpw"))
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        assert ch.queue_declare("orders.incoming", passive=True).method.message_count == 0  # made at start
        ch.basic_publish("", "orders.incoming", b"poison", pika.BasicProperties(delivery_mode=2))
        deliveries = 0
        while True:
            method, _, body = ch.basic_get("orders.incoming")
            if method is None:
                break
            assert body == b"poison"
            deliveries += 1
            ch.basic_reject(method.delivery_tag, requeue=True)
        assert deliveries == 3  # 1 + maximumRedeliveries of orders.>, not the default entry's 5
        method, props, body = ch.basic_get("DLQ.orders.incoming", auto_ack=True)
        assert body == b"poison"
        assert "maximumRedeliveries = 2" in props.headers["dlqDeliveryFailureCause"]
        assert ch.queue_declare("ActiveMQ.DLQ", passive=False).method.message_count == 0


def test_a_bad_file_stops_the_node_with_the_first_error(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text(XML.replace('maximumRedeliveries="2"', 'maximumRedeliveries="two"'))
    proc, _ = start(tmp_path, "--engine", "activemq", "--activemq-xml", str(path), "--amqp-port", "0",
                    "--stomp-port", "off", "--mqtt-port", "off")
    assert proc.wait(10) == 2
    assert ("activemq.xml: broker/plugins/redeliveryPlugin/redeliveryPolicyMap/redeliveryPolicyMap/"
            "redeliveryPolicyEntries/redeliveryPolicy@maximumRedeliveries: 'two' is not an integer") in proc.stderr.read()


def test_the_rabbitmq_engine_refuses_the_file(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(XML)
    proc, _ = start(tmp_path, "--activemq-xml", str(path), "--amqp-port", "0", "--stomp-port", "off",
                    "--mqtt-port", "off")
    assert proc.wait(10) == 2
    assert "--activemq-xml needs the ActiveMQ engine (--engine activemq)" in proc.stderr.read()
