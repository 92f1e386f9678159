"""The Amazon MQ control plane through boto3: every operation, every error the model lists
for it (where mqemu can be made to raise it), pagination and the brokers' states.

One control plane serves the module (each test names its own brokers and configurations);
brokers that run nodes are deleted by the test that made them.
"""

from __future__ import annotations

import base64

import pytest
from botocore.config import Config
from botocore import UNSIGNED

from mqemu.ha.aws.testing import AwsControlPlane

pytestmark = pytest.mark.timeout(120)

PASSWORD = "mqemu-secret-1"


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    plane = AwsControlPlane(str(tmp_path_factory.mktemp("aws"))).start()
    try:
        yield plane
    finally:
        plane.stop()


def _active(name, mode="SINGLE_INSTANCE", **extra):
    args = dict(BrokerName=name, DeploymentMode=mode, EngineType="ActiveMQ", HostInstanceType="mq.m5.large",
                PubliclyAccessible=False, Users=[{"Username": "admin", "Password": PASSWORD, "Groups": ["admins"],
                                                  "ConsoleAccess": True}])
    args.update(extra)
    return args


def _stomp_server(aws, host, port, user="admin"):
    """The ``server`` header of a STOMP CONNECTED frame (over TLS, the node verified with the
    control plane's CA): the engine and release the node runs."""
    import stomp

    seen = []

    class Listener(stomp.ConnectionListener):
        def on_connected(self, frame):
            seen.append(frame.headers.get("server"))

    conn = stomp.Connection12([(host, port)])
    conn.set_ssl(for_hosts=[(host, port)], ca_certs=aws.ca_file)
    conn.set_listener("", Listener())
    conn.connect(user, PASSWORD, wait=True)
    conn.disconnect()
    return seen[0]


def _error(excinfo):
    e = excinfo.value.response
    return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"], e.get("ErrorAttribute")


def test_a_broker_is_created_runs_and_is_described_as_aws_describes_it(aws):
    c = aws.client
    created = c.create_broker(**_active("described", EngineVersion="5.17.6", Tags={"team": "mq"}))
    broker_id = created["BrokerId"]
    assert broker_id.startswith("b-") and len(broker_id) == 38
    assert created["BrokerArn"] == f"arn:aws:mq:us-east-1:123456789012:broker:described:{broker_id}"
    assert c.describe_broker(BrokerId=broker_id)["BrokerState"] in ("CREATION_IN_PROGRESS", "RUNNING")
    d = aws.wait_state(broker_id, "RUNNING")
    assert d["EngineType"] == "ActiveMQ" and d["EngineVersion"] == "5.17"
    assert d["DeploymentMode"] == "SINGLE_INSTANCE" and d["AuthenticationStrategy"] == "simple"
    assert d["Users"] == [{"Username": "admin"}] and d["Tags"] == {"team": "mq"}
    (instance,) = d["BrokerInstances"]
    # Amazon MQ's TLS endpoints (not its OpenWire ssl://) and the console
    assert [e.split("://")[0] for e in instance["Endpoints"]] == ["amqp+ssl", "stomp+ssl", "mqtt+ssl", "wss"]
    assert instance["ConsoleURL"].startswith("https://127.0.0.1:") and instance["IpAddress"] == "127.0.0.1"
    assert d["Configurations"]["Current"]["Revision"] == 1
    summary = [b for b in c.list_brokers()["BrokerSummaries"] if b["BrokerId"] == broker_id]
    assert summary[0]["BrokerState"] == "RUNNING" and summary[0]["EngineType"] == "ActiveMQ"
    # the users given really log in, with stomp.py, and a wrong password does not
    import stomp

    host, port = aws.endpoints(d, "stomp+ssl")[0]
    assert _stomp_server(aws, host, port) == "ActiveMQ/5.17.6"  # the node runs the version asked for
    bad = stomp.Connection12([(host, port)])
    bad.set_ssl(for_hosts=[(host, port)], ca_certs=aws.ca_file)
    with pytest.raises(stomp.exception.ConnectFailedException):
        bad.connect("admin", "not-the-password", wait=True)
    c.delete_broker(BrokerId=broker_id)
    aws.wait_gone(broker_id)


def test_create_broker_refuses_what_aws_refuses(aws):
    c = aws.client
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("old", EngineVersion="5.15.0"))
    assert _error(e) == ("BadRequestException", 400, "engineVersion")
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("rabbit-two", EngineType="RABBITMQ", HostInstanceType="mq.m5.large",
                                  Users=[{"Username": "a1", "Password": PASSWORD},
                                         {"Username": "a2", "Password": PASSWORD}]))
    assert e.value.response["Error"]["Message"] == "Specify exactly one user for engine type [RABBITMQ]."
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("rabbit-as", EngineType="RabbitMQ", mode="ACTIVE_STANDBY_MULTI_AZ",
                                  Users=[{"Username": "a1", "Password": PASSWORD}]))
    assert _error(e)[2] == "deploymentMode"
    with pytest.raises(c.exceptions.BadRequestException) as e:  # a cluster is RabbitMQ's only
        c.create_broker(**_active("active-cluster", mode="CLUSTER_MULTI_AZ"))
    assert _error(e)[2] == "deploymentMode"
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("micro-pair", mode="ACTIVE_STANDBY_MULTI_AZ", HostInstanceType="mq.t3.micro"))
    assert _error(e)[2] == "hostInstanceType"
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("short", Users=[{"Username": "admin", "Password": "short"}]))
    assert _error(e)[2] == "users.password"
    with pytest.raises(c.exceptions.BadRequestException) as e:
        c.create_broker(**_active("bad name!"))
    assert _error(e)[2] == "brokerName"
    with pytest.raises(c.exceptions.BadRequestException) as e:  # CreateBroker has no NotFoundException
        c.create_broker(**_active("no-config", Configuration={"Id": "c-0000", "Revision": 1}))
    assert _error(e)[2] == "configuration"


def test_a_duplicate_name_is_a_conflict_and_enums_are_taken_in_any_case(aws):
    c = aws.client
    b = c.create_broker(**_active("twice", DeploymentMode="single_instance", EngineType="activemq"))
    with pytest.raises(c.exceptions.ConflictException) as e:
        c.create_broker(**_active("twice"))
    assert _error(e) == ("ConflictException", 409, "brokerName")
    retried = c.create_broker(**_active("again", CreatorRequestId="req-1"))
    assert c.create_broker(**_active("again", CreatorRequestId="req-1"))["BrokerId"] == retried["BrokerId"]
    aws.wait_state(b["BrokerId"], "RUNNING")
    aws.wait_state(retried["BrokerId"], "RUNNING")
    c.delete_broker(BrokerId=retried["BrokerId"])
    c.delete_broker(BrokerId=b["BrokerId"])
    aws.wait_gone(b["BrokerId"])


def test_unknown_ids_are_not_found_for_every_operation_that_takes_one(aws):
    c = aws.client
    missing = "b-00000000-0000-0000-0000-000000000000"
    calls = [
        (c.describe_broker, dict(BrokerId=missing)), (c.update_broker, dict(BrokerId=missing)),
        (c.delete_broker, dict(BrokerId=missing)), (c.reboot_broker, dict(BrokerId=missing)),
        (c.promote, dict(BrokerId=missing, Mode="SWITCHOVER")),
        (c.create_user, dict(BrokerId=missing, Username="u1", Password=PASSWORD)),
        (c.describe_user, dict(BrokerId=missing, Username="u1")),
        (c.update_user, dict(BrokerId=missing, Username="u1")),
        (c.delete_user, dict(BrokerId=missing, Username="u1")), (c.list_users, dict(BrokerId=missing)),
        (c.describe_configuration, dict(ConfigurationId="c-none")),
        (c.update_configuration, dict(ConfigurationId="c-none", Data="PGJyb2tlci8+")),
        (c.delete_configuration, dict(ConfigurationId="c-none")),
        (c.describe_configuration_revision, dict(ConfigurationId="c-none", ConfigurationRevision="1")),
        (c.list_configuration_revisions, dict(ConfigurationId="c-none")),
        (c.create_tags, dict(ResourceArn="arn:aws:mq:us-east-1:1:broker:x:b-1", Tags={"a": "b"})),
        (c.delete_tags, dict(ResourceArn="arn:aws:mq:us-east-1:1:broker:x:b-1", TagKeys=["a"])),
        (c.list_tags, dict(ResourceArn="arn:aws:mq:us-east-1:1:broker:x:b-1")),
    ]
    for call, kwargs in calls:
        with pytest.raises(c.exceptions.NotFoundException) as e:
            call(**kwargs)
        assert _error(e)[:2] == ("NotFoundException", 404), call


def _raw(aws, method, path, body=None):
    """A request signed as boto3 signs it but not checked by botocore first: (status, headers, body)."""
    import json
    import urllib.error
    import urllib.request

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = None if body is None else json.dumps(body)
    req = AWSRequest(method, f"{aws.endpoint}{path}", data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("a", "b"), "mq", "us-east-1").add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(req.url, data=req.body or None, headers=dict(req.headers),
                                                           method=method), timeout=10) as resp:
            return resp.status, resp.headers, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_bad_requests_botocore_would_have_caught_are_refused_by_the_server(aws):
    """Ranges, required members, types and tokens, sent raw: 400, the error type header
    botocore maps, and AWS's body."""
    for method, path, body, attribute in [
        ("GET", "/v1/brokers?maxResults=0", None, "maxResults"),
        ("GET", "/v1/configurations?maxResults=101", None, "maxResults"),
        ("GET", "/v1/brokers?maxResults=ten", None, "maxResults"),
        ("GET", "/v1/broker-engine-types?nextToken=nope", None, "nextToken"),
        ("GET", "/v1/broker-instance-options?nextToken=nope", None, "nextToken"),
        ("POST", "/v1/brokers", {"brokerName": "x"}, "hostInstanceType"),
        ("POST", "/v1/brokers", {"brokerName": "x", "deploymentMode": "SINGLE_INSTANCE", "engineType": "ACTIVEMQ",
                                 "hostInstanceType": "mq.m5.large", "publiclyAccessible": "no"},
         "publiclyAccessible"),
        ("POST", "/v1/brokers", {"brokerName": "x", "deploymentMode": "TRIPLE", "engineType": "ACTIVEMQ",
                                 "hostInstanceType": "mq.m5.large", "publiclyAccessible": False}, "deploymentMode"),
        ("POST", "/v1/configurations", {"name": "x"}, "engineType"),
        ("PUT", "/v1/configurations/c-1", {}, "data"),
    ]:
        status, headers, doc = _raw(aws, method, path, body)
        assert status == 400 and headers["x-amzn-ErrorType"] == "BadRequestException", (path, doc)
        assert set(doc) == {"errorAttribute", "message"} and doc["errorAttribute"] == attribute, (path, doc)
    status, headers, doc = _raw(aws, "POST", "/v1/brokers", [1, 2])
    assert status == 400 and set(doc) == {"message"}


def test_an_unsigned_request_is_forbidden(aws):
    import boto3

    unsigned = boto3.client("mq", endpoint_url=aws.endpoint, region_name="us-east-1",
                            config=Config(signature_version=UNSIGNED))
    with pytest.raises(unsigned.exceptions.ForbiddenException) as e:
        unsigned.list_brokers()
    assert _error(e)[:2] == ("ForbiddenException", 403)


def test_configurations_have_revisions_and_sanitization_warnings(aws):
    c = aws.client
    created = c.create_configuration(Name="conf-a", EngineType="ACTIVEMQ", EngineVersion="5.18",
                                     AuthenticationStrategy="SIMPLE", Tags={"k": "v"})
    cid = created["Id"]
    assert cid.startswith("c-") and created["LatestRevision"]["Revision"] == 1
    assert created["Arn"] == f"arn:aws:mq:us-east-1:123456789012:configuration:{cid}"
    with pytest.raises(c.exceptions.ConflictException):
        c.create_configuration(Name="conf-a", EngineType="ACTIVEMQ")
    xml = ('<broker xmlns="http://activemq.apache.org/schema/core" schedulerSupport="${x}">'
           '<transportConnectors><transportConnector name="openwire" uri="tcp://0.0.0.0:61616"/>'
           '</transportConnectors><managementContext/>'
           '<plugins><authorizationPlugin><map><authorizationMap><authorizationEntries>'
           '<authorizationEntry queue="&gt;" read="admins" write="admins" admin="admins"/>'
           '</authorizationEntries></authorizationMap></map></authorizationPlugin></plugins></broker>')
    updated = c.update_configuration(ConfigurationId=cid, Data=base64.b64encode(xml.encode()).decode(),
                                     Description="second")
    assert updated["LatestRevision"]["Revision"] == 2
    assert sorted((w["ElementName"], w["Reason"], w.get("AttributeName")) for w in updated["Warnings"]) == [
        ("broker", "INVALID_ATTRIBUTE_VALUE_REMOVED", "schedulerSupport"),
        ("managementContext", "DISALLOWED_ELEMENT_REMOVED", None),
        ("transportConnectors", "DISALLOWED_ELEMENT_REMOVED", None)]
    rev2 = c.describe_configuration_revision(ConfigurationId=cid, ConfigurationRevision="2")
    kept = base64.b64decode(rev2["Data"]).decode()
    assert "transportConnector" not in kept and "authorizationEntry" in kept and rev2["Description"] == "second"
    with pytest.raises(c.exceptions.NotFoundException):
        c.describe_configuration_revision(ConfigurationId=cid, ConfigurationRevision="3")
    with pytest.raises(c.exceptions.BadRequestException):
        c.describe_configuration_revision(ConfigurationId=cid, ConfigurationRevision="two")
    with pytest.raises(c.exceptions.BadRequestException):
        c.update_configuration(ConfigurationId=cid, Data=base64.b64encode(b"<broker").decode())
    revisions = c.list_configuration_revisions(ConfigurationId=cid, MaxResults=1)
    assert [r["Revision"] for r in revisions["Revisions"]] == [1] and revisions["NextToken"]
    rest = c.list_configuration_revisions(ConfigurationId=cid, NextToken=revisions["NextToken"])
    assert [r["Revision"] for r in rest["Revisions"]] == [2] and "NextToken" not in rest
    described = c.describe_configuration(ConfigurationId=cid)
    assert described["EngineType"] == "ActiveMQ" and described["Tags"] == {"k": "v"}
    assert described["LatestRevision"]["Revision"] == 2
    rabbit = c.create_configuration(Name="conf-r", EngineType="RABBITMQ", EngineVersion="3.13")
    data = base64.b64decode(c.describe_configuration_revision(ConfigurationId=rabbit["Id"],
                                                               ConfigurationRevision="1")["Data"]).decode()
    assert "consumer_timeout = " in data
    assert c.delete_configuration(ConfigurationId=rabbit["Id"])["ConfigurationId"] == rabbit["Id"]
    with pytest.raises(c.exceptions.NotFoundException):
        c.describe_configuration(ConfigurationId=rabbit["Id"])


def test_list_brokers_and_configurations_are_paginated(aws):
    c = aws.client
    for i in range(5):
        c.create_configuration(Name=f"page-{i}", EngineType="RABBITMQ")
    names = []
    token = None
    while True:
        kwargs = {"MaxResults": 2, **({"NextToken": token} if token else {})}
        got = c.list_configurations(**kwargs)
        assert len(got["Configurations"]) <= 2
        names += [x["Name"] for x in got["Configurations"]]
        token = got.get("NextToken")
        if not token:
            break
    assert [n for n in names if n.startswith("page-")] == [f"page-{i}" for i in range(5)]
    paginator = c.get_paginator("list_brokers")  # the model's one paginator
    pages = list(paginator.paginate(PaginationConfig={"PageSize": 1}))
    assert all(len(p["BrokerSummaries"]) <= 1 for p in pages)
    engines = c.describe_broker_engine_types()["BrokerEngineTypes"]
    assert {e["EngineType"]: [v["Name"] for v in e["EngineVersions"]] for e in engines} == {
        "ACTIVEMQ": ["5.18", "5.17"], "RABBITMQ": ["4.2", "3.13"]}
    options = c.describe_broker_instance_options(EngineType="ACTIVEMQ", HostInstanceType="mq.m5.large",
                                                 StorageType="EFS")["BrokerInstanceOptions"]
    assert options[0]["SupportedDeploymentModes"] == ["SINGLE_INSTANCE", "ACTIVE_STANDBY_MULTI_AZ"]
    first = c.describe_broker_instance_options(MaxResults=5)
    assert len(first["BrokerInstanceOptions"]) == 5 and first["NextToken"]


def test_users_changes_are_pending_until_a_reboot(aws):
    c = aws.client
    b = c.create_broker(**_active("users", EngineVersion="5.17"))
    bid = b["BrokerId"]
    with pytest.raises(c.exceptions.BadRequestException):  # refused while it is created
        c.reboot_broker(BrokerId=bid)
    aws.wait_state(bid, "RUNNING")
    c.create_user(BrokerId=bid, Username="app", Password=PASSWORD, Groups=["users"])
    with pytest.raises(c.exceptions.ConflictException):
        c.create_user(BrokerId=bid, Username="app", Password=PASSWORD)
    with pytest.raises(c.exceptions.BadRequestException):
        c.create_user(BrokerId=bid, Username="x", Password=PASSWORD)
    c.update_user(BrokerId=bid, Username="admin", Groups=["admins", "ops"])
    assert c.describe_user(BrokerId=bid, Username="app")["Pending"] == {
        "PendingChange": "CREATE", "ConsoleAccess": False, "Groups": ["users"]}
    admin = c.describe_user(BrokerId=bid, Username="admin")
    assert admin["Groups"] == ["admins"] and admin["Pending"]["PendingChange"] == "UPDATE"
    assert admin["Pending"]["Groups"] == ["admins", "ops"]
    users = c.list_users(BrokerId=bid, MaxResults=5)["Users"]
    assert users == [{"Username": "admin", "PendingChange": "UPDATE"}, {"Username": "app", "PendingChange": "CREATE"}]
    with pytest.raises(c.exceptions.NotFoundException):
        c.describe_user(BrokerId=bid, Username="nobody")
    c.update_broker(BrokerId=bid, EngineVersion="5.18")
    assert c.describe_broker(BrokerId=bid)["PendingEngineVersion"] == "5.18"
    c.reboot_broker(BrokerId=bid)
    with pytest.raises(c.exceptions.ConflictException):  # updates wait for RUNNING
        c.update_broker(BrokerId=bid, AutoMinorVersionUpgrade=False)
    d = aws.wait_state(bid, "RUNNING")
    assert d["EngineVersion"] == "5.18" and "PendingEngineVersion" not in d
    assert _stomp_server(aws, *aws.endpoints(d, "stomp+ssl")[0]).startswith("ActiveMQ/5.18.")  # upgraded at the reboot
    assert c.list_users(BrokerId=bid)["Users"] == [{"Username": "admin"}, {"Username": "app"}]
    assert "Pending" not in c.describe_user(BrokerId=bid, Username="app")
    c.delete_user(BrokerId=bid, Username="app")
    assert c.describe_user(BrokerId=bid, Username="app")["Pending"] == {"PendingChange": "DELETE"}
    with pytest.raises(c.exceptions.ConflictException):  # pending deletion
        c.update_user(BrokerId=bid, Username="app", ConsoleAccess=True)
    for n in range(4):
        c.create_user(BrokerId=bid, Username=f"more-{n}", Password=PASSWORD)
    first = c.list_users(BrokerId=bid, MaxResults=5)
    assert len(first["Users"]) == 5 and first["MaxResults"] == 5 and first["NextToken"]
    rest = c.list_users(BrokerId=bid, MaxResults=5, NextToken=first["NextToken"])
    assert [u["Username"] for u in rest["Users"]] == ["more-3"] and "NextToken" not in rest
    with pytest.raises(c.exceptions.BadRequestException):  # not a replica
        c.promote(BrokerId=bid, Mode="SWITCHOVER")
    c.delete_broker(BrokerId=bid)
    with pytest.raises(c.exceptions.BadRequestException):
        c.reboot_broker(BrokerId=bid)
    aws.wait_gone(bid)


def test_update_broker_takes_a_configuration_at_the_next_reboot(aws):
    c = aws.client
    conf = c.create_configuration(Name="for-update", EngineType="ACTIVEMQ")
    other = c.create_configuration(Name="for-rabbit", EngineType="RABBITMQ")
    b = c.create_broker(**_active("updated"))
    bid = b["BrokerId"]
    aws.wait_state(bid, "RUNNING")
    with pytest.raises(c.exceptions.BadRequestException):
        c.update_broker(BrokerId=bid, Configuration={"Id": other["Id"], "Revision": 1})
    with pytest.raises(c.exceptions.BadRequestException):
        c.update_broker(BrokerId=bid, EngineVersion="5.16")
    out = c.update_broker(BrokerId=bid, Configuration={"Id": conf["Id"], "Revision": 1},
                          HostInstanceType="mq.m5.xlarge", AutoMinorVersionUpgrade=False)
    assert out["Configuration"] == {"Id": conf["Id"], "Revision": 1} and out["AutoMinorVersionUpgrade"] is False
    d = c.describe_broker(BrokerId=bid)
    assert d["Configurations"]["Pending"] == {"Id": conf["Id"], "Revision": 1}
    assert d["PendingHostInstanceType"] == "mq.m5.xlarge" and d["AutoMinorVersionUpgrade"] is False
    with pytest.raises(c.exceptions.ConflictException):  # in use
        c.delete_configuration(ConfigurationId=conf["Id"])
    c.reboot_broker(BrokerId=bid)
    d = aws.wait_state(bid, "RUNNING")
    assert d["Configurations"]["Current"] == {"Id": conf["Id"], "Revision": 1}
    assert len(d["Configurations"]["History"]) == 1 and d["HostInstanceType"] == "mq.m5.xlarge"
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)


def test_tags_on_brokers_and_configurations(aws):
    c = aws.client
    conf = c.create_configuration(Name="tagged", EngineType="ACTIVEMQ", Tags={"a": "1"})
    c.create_tags(ResourceArn=conf["Arn"], Tags={"b": "2", "c": "3"})
    assert c.list_tags(ResourceArn=conf["Arn"])["Tags"] == {"a": "1", "b": "2", "c": "3"}
    c.delete_tags(ResourceArn=conf["Arn"], TagKeys=["a", "c"])
    assert c.list_tags(ResourceArn=conf["Arn"])["Tags"] == {"b": "2"}


def test_rabbitmq_users_are_not_managed_through_amazon_mq(aws):
    c = aws.client
    b = c.create_broker(BrokerName="rabbit", DeploymentMode="SINGLE_INSTANCE", EngineType="RabbitMQ",
                        EngineVersion="3.13", HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                        Users=[{"Username": "admin", "Password": PASSWORD}])
    bid = b["BrokerId"]
    d = aws.wait_state(bid, "RUNNING")
    assert d["Users"] == [] and d["EngineType"] == "RabbitMQ" and d["EngineVersion"] == "3.13"
    with pytest.raises(c.exceptions.BadRequestException):
        c.create_user(BrokerId=bid, Username="other", Password=PASSWORD)
    assert c.list_users(BrokerId=bid)["Users"] == []
    # one instance, behind the NLB as on AWS: amqps only, no IpAddress; the one administrator
    # logs in over AMQP (pika, over TLS)
    import pika

    (instance,) = d["BrokerInstances"]
    assert sorted(instance) == ["ConsoleURL", "Endpoints"] and len(instance["Endpoints"]) == 1
    host, port = aws.endpoints(d, "amqps")[0]
    conn = pika.BlockingConnection(pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials(
        "admin", PASSWORD), connection_attempts=1, ssl_options=pika.SSLOptions(aws.ssl_context(), host)))
    conn.close()
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid)
