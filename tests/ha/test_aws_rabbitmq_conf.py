"""A RabbitMQ configuration's rabbitmq.conf applied at RebootBroker (``mqemu serve
--rabbitmq-conf`` on the broker's node): its consumer_timeout closes a channel that holds a
delivery after the reboot, not before; a conf the node could not apply is refused at
UpdateConfiguration."""

from __future__ import annotations

import base64
import time

import botocore.exceptions
import pika
import pytest

pytestmark = pytest.mark.timeout(240)

PASSWORD = "mqemu-secret-1"

CONF = """# applied at the next reboot
consumer_timeout = 500
management.restrictions.operator_policy_changes.disabled = false
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _holds_a_delivery(params: pika.ConnectionParameters, queue: str, seconds: float) -> list[tuple[int, str]]:
    """Consume one message without acking it for ``seconds``; the channel closes seen meanwhile."""
    closes: list[tuple[int, str]] = []
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch._impl.add_on_close_callback(lambda _ch, r: closes.append((r.reply_code, r.reply_text)))  # pika's Channel
        ch.queue_declare(queue)
        ch.basic_publish("", queue, b"job")
        got = []
        ch.basic_consume(queue, lambda *a: got.append(a[3]))
        deadline = time.monotonic() + seconds
        while not closes and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
        assert got == [b"job"]
        return list(closes)  # not the client's own close on leaving


def test_a_configuration_s_consumer_timeout_applies_at_the_reboot(mqemu_aws_plain):
    aws, c = mqemu_aws_plain, mqemu_aws_plain.client  # plain amqp://
    bid = c.create_broker(BrokerName="timeouts", DeploymentMode="SINGLE_INSTANCE", EngineType="RabbitMQ",
                          HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "admin", "Password": PASSWORD}])["BrokerId"]
    conf = c.create_configuration(Name="timeouts", EngineType="RABBITMQ", EngineVersion="3.13")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        c.update_configuration(ConfigurationId=conf["Id"], Data=_b64("consumer_timeout = half an hour\n"))
    assert refused.value.response["Error"]["Code"] == "BadRequestException"
    assert refused.value.response["Error"]["Message"] == (
        "The configuration data is not in rabbitmq.conf format: rabbitmq.conf line 1: consumer_timeout must be a whole number "
        "of milliseconds from 0 to 2147483647, not 'half an hour'.")
    rev = c.update_configuration(ConfigurationId=conf["Id"], Data=_b64(CONF))
    assert rev.get("Warnings", []) == []
    ((host, port),) = aws.endpoints(aws.wait_state(bid, "RUNNING"), "amqp")
    params = pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials("admin", PASSWORD))

    c.update_broker(BrokerId=bid, Configuration={"Id": conf["Id"], "Revision": rev["LatestRevision"]["Revision"]})
    assert _holds_a_delivery(params, "before", 1.5) == []  # pending until the reboot: 30 minutes still
    c.reboot_broker(BrokerId=bid)
    aws.wait_state(bid, "RUNNING", timeout=90)
    assert _holds_a_delivery(params, "after", 10) == [
        (406, "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 500 ms. "
              "This timeout value can be configured, see consumers doc guide to learn more")]
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)
