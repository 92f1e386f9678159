"""Brokers made with boto3 are real: an app keeps running through RebootBroker (a failover
for the pair, a restart for a single instance) with nothing acknowledged lost (the harness's
workload and checker), a broker outlives a restart of ``mqemu aws``, and the AWS CLI works
against it unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from mqemu.ha.checker import check
from mqemu.ha.history import read_history
from mqemu.ha.workload import Workload, WorkloadOptions
from mqemu.ha.workload_clients import Settings

pytestmark = pytest.mark.timeout(240)

PASSWORD = "mqemu-secret-1"


def _create(c, name, engine, mode, version=None):
    users = [{"Username": "app", "Password": PASSWORD, **({"Groups": ["admins"]} if engine == "ActiveMQ" else {})}]
    return c.create_broker(BrokerName=name, DeploymentMode=mode, EngineType=engine, HostInstanceType="mq.m5.large",
                           PubliclyAccessible=False, Users=users, **({"EngineVersion": version} if version else {}))


@pytest.mark.parametrize("engine,mode,protocol", [
    ("ActiveMQ", "ACTIVE_STANDBY_MULTI_AZ", "stomp"),
    ("ActiveMQ", "ACTIVE_STANDBY_MULTI_AZ", "mqtt"),
    ("ActiveMQ", "SINGLE_INSTANCE", "stomp"),
    ("RabbitMQ", "SINGLE_INSTANCE", "amqp"),
])
def test_reboot_loses_nothing_acknowledged(mqemu_aws_plain, tmp_path, engine, mode, protocol):
    aws, c = mqemu_aws_plain, mqemu_aws_plain.client  # plain endpoints: the workload's clients have no TLS
    broker_id = _create(c, "rebooted", engine, mode)["BrokerId"]
    described = aws.wait_state(broker_id, "RUNNING")
    endpoints = aws.endpoints(described, protocol)
    assert len(endpoints) == (2 if mode == "ACTIVE_STANDBY_MULTI_AZ" else 1)
    pair = mode == "ACTIVE_STANDBY_MULTI_AZ"
    if pair:  # the first instance is the active: the standby's endpoint refuses, as ActiveMQ's slave
        assert _accepts(endpoints[0]) and not _accepts(endpoints[1])
    history = str(tmp_path / "history.jsonl")
    w = Workload(WorkloadOptions(protocol, endpoints, count=300, drain=3.0,
                                 settings=Settings(user="app", password=PASSWORD)), history).start()
    try:
        assert w.wait_until(lambda w: w.confirmed >= 100, 60), w.confirmed
        w.fault("reboot", broker_id, "invoke")
        c.reboot_broker(BrokerId=broker_id)
        assert c.describe_broker(BrokerId=broker_id)["BrokerState"] in ("REBOOT_IN_PROGRESS", "RUNNING")
        aws.wait_state(broker_id, "RUNNING", timeout=90)
        w.fault("reboot", broker_id, "ok")
        assert w.wait(120)
    finally:
        w.stop()
    verdict = check(read_history(history))
    counts = verdict.counts
    assert counts.lost == 0, counts.lost_ids
    assert counts.unexpected == 0 and verdict.valid
    assert counts.acknowledged == 300 and counts.delivered >= 300
    after = aws.wait_state(broker_id, "RUNNING")
    assert aws.endpoints(after, protocol) == endpoints  # the same endpoints after the reboot
    if pair:  # the roles switched: the old standby serves, the old active is the standby now
        assert _accepts(endpoints[1]) and not _accepts(endpoints[0])
    c.delete_broker(BrokerId=broker_id)
    aws.wait_gone(broker_id)


def _accepts(endpoint):
    import socket

    try:
        socket.create_connection(endpoint, timeout=5).close()
    except OSError:
        return False
    return True


def test_a_broker_its_messages_and_records_survive_a_restart_of_mqemu_aws(mqemu_aws_plain):
    import stomp

    aws, c = mqemu_aws_plain, mqemu_aws_plain.client
    broker_id = _create(c, "kept", "ActiveMQ", "SINGLE_INSTANCE")["BrokerId"]
    conf = c.create_configuration(Name="kept-conf", EngineType="ACTIVEMQ", Tags={"keep": "yes"})
    before = aws.wait_state(broker_id, "RUNNING")
    (endpoint,) = aws.endpoints(before, "stomp")
    (instance,) = before["BrokerInstances"]
    assert instance["ConsoleURL"].startswith("http://127.0.0.1:")  # plain endpoints: the console over HTTP
    with urllib.request.urlopen(instance["ConsoleURL"], timeout=10) as r:
        assert r.status == 200
    conn = stomp.Connection12([endpoint])
    conn.connect("app", PASSWORD, wait=True)
    conn.send("/queue/kept", "still here", headers={"persistent": "true", "receipt": "r1"})
    conn.disconnect(receipt="bye")
    aws.restart()
    c = aws.client
    assert c.describe_broker(BrokerId=broker_id)["BrokerState"] in ("REBOOT_IN_PROGRESS", "RUNNING")
    after = aws.wait_state(broker_id, "RUNNING")
    assert aws.endpoints(after, "stomp") == [endpoint]
    assert after["BrokerInstances"][0]["ConsoleURL"] == instance["ConsoleURL"]
    assert c.list_tags(ResourceArn=conf["Arn"])["Tags"] == {"keep": "yes"}
    assert c.list_users(BrokerId=broker_id)["Users"] == [{"Username": "app"}]

    received = []

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            received.append(frame.body)

    conn = stomp.Connection12([endpoint])
    conn.set_listener("", Listener())
    conn.connect("app", PASSWORD, wait=True)
    conn.subscribe("/queue/kept", id="1", ack="auto", headers={"receipt": "sub"})
    import time

    deadline = time.monotonic() + 20
    while not received and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.disconnect()
    assert received == ["still here"]
    c.delete_broker(BrokerId=broker_id)
    aws.wait_gone(broker_id)
    assert not os.path.exists(os.path.join(aws.data_dir, "brokers", broker_id))  # its data went with it


def test_the_aws_cli_works_unchanged(mqemu_aws):
    aws, c = mqemu_aws, mqemu_aws.client
    broker_id = _create(c, "for-cli", "RabbitMQ", "SINGLE_INSTANCE", "3.13")["BrokerId"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "mqemu", "AWS_SECRET_ACCESS_KEY": "mqemu",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def cli(*args):
        out = subprocess.run([sys.executable, "-m", "awscli", "mq", *args, "--endpoint-url", aws.endpoint,
                              "--output", "json"], env=env, capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout, out.stderr

    rc, out, err = cli("list-brokers")
    assert rc == 0, err
    assert [b["BrokerId"] for b in json.loads(out)["BrokerSummaries"]] == [broker_id]
    rc, out, err = cli("describe-broker", "--broker-id", "b-missing")
    assert rc != 0 and "NotFoundException" in err
    aws.wait_state(broker_id, "RUNNING")
    rc, out, err = cli("describe-broker", "--broker-id", broker_id)
    assert rc == 0 and json.loads(out)["BrokerState"] == "RUNNING", err
    rc, out, err = cli("delete-broker", "--broker-id", broker_id)
    assert rc == 0 and json.loads(out) == {"BrokerId": broker_id}, err
    aws.wait_gone(broker_id)


def test_states_with_delays_and_what_each_state_refuses(tmp_path):
    """With a timing profile each transitional state lasts long enough to be seen, and
    operations are refused there as on AWS."""
    from mqemu.ha.aws.testing import AwsControlPlane

    with AwsControlPlane(str(tmp_path), timing="create=1.5,reboot=1.5,delete=1.5") as aws:
        c = aws.client
        bid = _create(c, "slow", "ActiveMQ", "SINGLE_INSTANCE")["BrokerId"]
        d = c.describe_broker(BrokerId=bid)
        assert d["BrokerState"] == "CREATION_IN_PROGRESS" and d["BrokerInstances"] == []
        for refused in (lambda: c.reboot_broker(BrokerId=bid), lambda: c.delete_broker(BrokerId=bid)):
            with pytest.raises(c.exceptions.BadRequestException):
                refused()
        with pytest.raises(c.exceptions.ConflictException):
            c.update_broker(BrokerId=bid, AutoMinorVersionUpgrade=False)
        aws.wait_state(bid, "RUNNING")
        c.reboot_broker(BrokerId=bid)
        assert c.describe_broker(BrokerId=bid)["BrokerState"] == "REBOOT_IN_PROGRESS"
        with pytest.raises(c.exceptions.BadRequestException):
            c.reboot_broker(BrokerId=bid)
        aws.wait_state(bid, "RUNNING")
        c.delete_broker(BrokerId=bid)
        assert c.describe_broker(BrokerId=bid)["BrokerState"] == "DELETION_IN_PROGRESS"
        with pytest.raises(c.exceptions.BadRequestException):
            c.delete_broker(BrokerId=bid)
        with pytest.raises(c.exceptions.BadRequestException):
            c.create_user(BrokerId=bid, Username="late", Password=PASSWORD)
        aws.wait_gone(bid)


def test_the_readme_example_runs(mqemu_aws, capsys):
    """README's full example (a pair, stomp.py over TLS, a reboot, everything read back), as
    written, against the fixture's control plane (its endpoint and CA file)."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("A full example: an ActiveMQ pair"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "http://127.0.0.1:9011" in code and '"aws-data/tls/ca.pem"' in code
    code = code.replace("http://127.0.0.1:9011", mqemu_aws.endpoint).replace(
        '"aws-data/tls/ca.pem"', repr(mqemu_aws.ca_file))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == str([f"order {n}" for n in range(10)])


def test_no_node_outlives_a_kill_9_of_mqemu_aws(tmp_path):
    """The brokers' nodes are in their own process groups, so a kill of the control plane's
    group does not reach them: their parent-death signal does."""
    import signal
    import time

    from mqemu.ha.aws.testing import AwsControlPlane

    aws = AwsControlPlane(str(tmp_path)).start()
    try:
        bid = _create(aws.client, "orphan", "ActiveMQ", "SINGLE_INSTANCE")["BrokerId"]
        aws.wait_state(bid, "RUNNING")
        with open(os.path.join(aws.data_dir, "brokers", bid, "work", "node-1.status.json")) as f:
            pids = [json.load(f)["pid"]]
        assert all(_alive(pid) for pid in pids)
        os.killpg(aws.proc.pid, signal.SIGKILL)
        aws.proc.wait(10)
        aws.proc = None
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in pids)
    finally:
        aws.stop()


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_configuration_s_authorization_entries_apply_at_the_reboot(mqemu_aws_plain):
    """UpdateBroker with a configuration whose authorization map lets only admins write:
    before the reboot a user outside that group may send, after it the broker refuses."""
    import base64

    import stomp

    aws, c = mqemu_aws_plain, mqemu_aws_plain.client
    bid = c.create_broker(BrokerName="guarded", DeploymentMode="SINGLE_INSTANCE", EngineType="ActiveMQ",
                          HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "admin", "Password": PASSWORD, "Groups": ["admins"]},
                                 {"Username": "reader", "Password": PASSWORD, "Groups": ["users"]}])["BrokerId"]
    conf = c.create_configuration(Name="guard", EngineType="ACTIVEMQ")
    xml = ('<broker xmlns="http://activemq.apache.org/schema/core"><plugins><authorizationPlugin><map>'
           '<authorizationMap><authorizationEntries>'
           '<authorizationEntry queue="&gt;" read="admins,users" write="admins" admin="admins"/>'
           '<authorizationEntry topic="&gt;" read="admins,users" write="admins" admin="admins"/>'
           '</authorizationEntries></authorizationMap></map></authorizationPlugin></plugins></broker>')
    rev = c.update_configuration(ConfigurationId=conf["Id"], Data=base64.b64encode(xml.encode()).decode())
    assert rev["Warnings"] == []
    (endpoint,) = aws.endpoints(aws.wait_state(bid, "RUNNING"), "stomp")

    def may_send(user):
        errors = []

        class Listener(stomp.ConnectionListener):
            def on_error(self, frame):
                errors.append(frame.body)

        conn = stomp.Connection12([endpoint])
        conn.set_listener("", Listener())
        conn.connect(user, PASSWORD, wait=True)
        try:
            conn.send("/queue/guarded", "x", headers={"receipt": "r"})
            conn.disconnect(receipt="bye")
        except stomp.exception.StompException:
            pass
        return not errors

    assert may_send("reader")
    c.update_broker(BrokerId=bid, Configuration={"Id": conf["Id"], "Revision": rev["LatestRevision"]["Revision"]})
    assert may_send("reader")  # pending until the reboot
    c.reboot_broker(BrokerId=bid)
    aws.wait_state(bid, "RUNNING", timeout=90)
    assert not may_send("reader") and may_send("admin")
