"""A configuration's ActiveMQ XML applied whole at RebootBroker (``mqemu serve
--activemq-xml`` on the broker's nodes): its destinations and redelivery policy take effect
after the reboot and not before; XML the nodes could not apply is refused at
UpdateConfiguration."""

from __future__ import annotations

import base64

import botocore.exceptions
import pika
import pytest

pytestmark = pytest.mark.timeout(240)

PASSWORD = "mqemu-secret-1"

XML = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<broker xmlns="http://activemq.apache.org/schema/core">
  <destinationPolicy>
    <policyMap>
      <policyEntries>
        <policyEntry queue="&gt;">
          <deadLetterStrategy>
            <individualDeadLetterStrategy queuePrefix="DLQ."/>
          </deadLetterStrategy>
        </policyEntry>
      </policyEntries>
    </policyMap>
  </destinationPolicy>
  <destinations>
    <queue physicalName="jobs.incoming"/>
  </destinations>
  <plugins>
    <redeliveryPlugin>
      <redeliveryPolicyMap>
        <redeliveryPolicyMap>
          <defaultEntry>
            <redeliveryPolicy maximumRedeliveries="1"/>
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


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_configuration_s_destinations_and_redelivery_policy_apply_at_the_reboot(mqemu_aws_plain):
    aws, c = mqemu_aws_plain, mqemu_aws_plain.client  # plain amqp://
    bid = c.create_broker(BrokerName="policies", DeploymentMode="SINGLE_INSTANCE", EngineType="ActiveMQ",
                          HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "admin", "Password": PASSWORD, "Groups": ["admins"]}])["BrokerId"]
    conf = c.create_configuration(Name="policies", EngineType="ACTIVEMQ")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        c.update_configuration(ConfigurationId=conf["Id"],
                               Data=_b64(XML.replace('maximumRedeliveries="1"', 'maximumRedeliveries="one"')))
    assert refused.value.response["Error"]["Code"] == "BadRequestException"
    assert "redeliveryPolicy@maximumRedeliveries: 'one' is not an integer" in refused.value.response["Error"]["Message"]
    rev = c.update_configuration(ConfigurationId=conf["Id"], Data=_b64(XML))
    # Amazon MQ's sanitization as before: transport connectors are its own
    assert rev["Warnings"] == [{"ElementName": "transportConnectors", "Reason": "DISALLOWED_ELEMENT_REMOVED"}]
    ((host, port),) = aws.endpoints(aws.wait_state(bid, "RUNNING"), "amqp")
    params = pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials("admin", PASSWORD))

    def exists(queue: str) -> bool:
        with pika.BlockingConnection(params) as conn:
            try:
                conn.channel().queue_declare(queue, passive=True)
                return True
            except pika.exceptions.ChannelClosedByBroker as e:
                assert e.reply_code == 404
                return False

    c.update_broker(BrokerId=bid, Configuration={"Id": conf["Id"], "Revision": rev["LatestRevision"]["Revision"]})
    assert not exists("jobs.incoming")  # pending until the reboot
    c.reboot_broker(BrokerId=bid)
    aws.wait_state(bid, "RUNNING", timeout=90)
    assert exists("jobs.incoming")
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.basic_publish("", "jobs.incoming", b"poison", pika.BasicProperties(delivery_mode=2))
        deliveries = 0
        while (got := ch.basic_get("jobs.incoming"))[0] is not None:
            deliveries += 1
            ch.basic_reject(got[0].delivery_tag, requeue=True)
        assert deliveries == 2  # 1 + maximumRedeliveries
        assert ch.basic_get("DLQ.jobs.incoming", auto_ack=True)[2] == b"poison"
