"""moto's ``mq`` mock as a second opinion on shapes: the same calls against moto and
against mqemu return objects with the same keys and the same types.

Where they differ, moto is known to be wrong or thinner than AWS (``MOTO_LACKS``: fields
AWS returns that moto leaves out, such as the log groups the model requires, the
authentication strategy and the storage type); ``MQEMU_LACKS`` is what mqemu leaves out
(nothing now). Values differ on purpose: moto's
broker ids are not ``b-<uuid>`` and its ARNs lack the broker name, every moto broker is
RUNNING at once, its users change at once (no ``Pending``), and its DayOfWeek is "Sunday"
where the model's enum is SUNDAY; those are not compared.
"""

from __future__ import annotations

import base64
import datetime

import pytest

pytestmark = pytest.mark.timeout(120)

PASSWORD = "mqemu-secret-1"
MQEMU_LACKS: set[str] = set()
MOTO_LACKS = {
    "ActionsRequired", "ActionsRequired[]", "AuthenticationStrategy", "AutoMinorVersionUpgrade", "StorageType",
    "DataReplicationMode", "Logs.GeneralLogGroup", "Logs.AuditLogGroup", "ReplicationUser", "MaxResults",
    "Configurations.History[]", "Warnings", "Warnings[]", "Warnings[].ElementName", "Warnings[].Reason",
    "Warnings[].AttributeName", "Description", "NextToken", "Pending", "Configurations[].Description",
    "Configurations[].Tags",
}


def _shape(value, prefix=""):
    """{path: type name} of every key in a response (lists by their items)."""
    out = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "ResponseMetadata":
                continue
            path = f"{prefix}.{k}" if prefix else k
            out[path] = _type(v)
            out.update(_shape(v, path))
    elif isinstance(value, list):
        for item in value:
            out[f"{prefix}[]"] = _type(item)
            out.update(_shape(item, f"{prefix}[]"))
    return out


def _type(v):
    return "timestamp" if isinstance(v, datetime.datetime) else type(v).__name__


def _session(c, wait):
    """The calls, the same for both; returns {call: response}."""
    out = {}
    b = c.create_broker(BrokerName="twin", DeploymentMode="ACTIVE_STANDBY_MULTI_AZ", EngineType="ActiveMQ",
                        EngineVersion="5.18", HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                        SubnetIds=["subnet-a", "subnet-b"], Tags={"env": "test"},
                        Users=[{"Username": "admin", "Password": PASSWORD, "Groups": ["admins"]}])
    out["create_broker"] = b
    bid = b["BrokerId"]
    wait(bid)
    out["describe_broker"] = c.describe_broker(BrokerId=bid)
    out["list_brokers"] = c.list_brokers()
    conf = c.create_configuration(Name="twin-conf", EngineType="ACTIVEMQ", EngineVersion="5.18")
    out["create_configuration"] = conf
    out["describe_configuration"] = c.describe_configuration(ConfigurationId=conf["Id"])
    xml = '<broker xmlns="http://activemq.apache.org/schema/core"><plugins/></broker>'
    out["update_configuration"] = c.update_configuration(ConfigurationId=conf["Id"], Description="two",
                                                         Data=base64.b64encode(xml.encode()).decode())
    out["describe_configuration_revision"] = c.describe_configuration_revision(ConfigurationId=conf["Id"],
                                                                               ConfigurationRevision="2")
    out["list_configurations"] = c.list_configurations()
    out["describe_user"] = c.describe_user(BrokerId=bid, Username="admin")
    out["list_users"] = c.list_users(BrokerId=bid)
    out["create_user"] = c.create_user(BrokerId=bid, Username="app", Password=PASSWORD)
    c.create_tags(ResourceArn=b["BrokerArn"], Tags={"team": "mq"})
    c.delete_tags(ResourceArn=b["BrokerArn"], TagKeys=["env"])
    out["list_tags"] = c.list_tags(ResourceArn=b["BrokerArn"])
    out["reboot_broker"] = c.reboot_broker(BrokerId=bid)
    wait(bid)
    out["delete_broker"] = c.delete_broker(BrokerId=bid)
    return out


def test_mqemu_and_moto_answer_with_the_same_keys_and_types(mqemu_aws, monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    mine = _session(mqemu_aws.client, lambda bid: mqemu_aws.wait_state(bid, "RUNNING"))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    with moto.mock_aws():
        theirs = _session(boto3.client("mq", region_name="us-east-1"), lambda bid: None)
    assert mine.keys() == theirs.keys()
    for call in mine:
        ours, moto_shape = _shape(mine[call]), _shape(theirs[call])
        assert set(moto_shape) - set(ours) <= MQEMU_LACKS, (call, set(moto_shape) - set(ours))
        assert set(ours) - set(moto_shape) <= MOTO_LACKS, (call, set(ours) - set(moto_shape))
        for path in set(ours) & set(moto_shape):
            assert ours[path] == moto_shape[path], (call, path, ours[path], moto_shape[path])
    assert mine["describe_broker"]["Users"] == theirs["describe_broker"]["Users"] == [{"Username": "admin"}]
    assert mine["list_tags"]["Tags"] == theirs["list_tags"]["Tags"] == {"team": "mq"}
