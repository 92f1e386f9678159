"""The control plane's pieces without processes: the model-driven parsing and rendering,
errors as botocore reads them (every error shape of the model, 500 included), the node
config a broker's users become, configuration sanitization and the timing profiles."""

from __future__ import annotations

import base64
import json
import tomllib

import pytest
from botocore.loaders import Loader
from botocore.model import ServiceModel as BotocoreModel
from botocore.parsers import RestJSONParser

from mqemu.broker.auth import check_password_hash
from mqemu.broker.config import load_config
from mqemu.ha.aws import configs
from mqemu.ha.aws.brokers import node_config
from mqemu.ha.aws.model import ApiError, ServiceModel, format_timestamp
from mqemu.ha.aws.server import _path, make_app
from mqemu.ha.aws.state import TIMINGS, State, Timing, hashed, page, parse_timing

MODEL = ServiceModel()
BOTO = BotocoreModel(Loader().load_service_model("mq", "service-2"))


class _Query(dict):
    def getlist(self, key):
        v = self.get(key)
        return [] if v is None else [v]


def test_every_operation_of_the_model_is_served():
    assert len(MODEL.operations) == 24
    class Stub:
        def __getattr__(self, name):
            return None

    routes = {(r.path, m) for r in make_app(MODEL, Stub()).routes for m in r.methods if m != "HEAD"}  # type: ignore
    assert {(_path(op.uri), op.method) for op in MODEL.operations.values()} <= routes
    assert _path("/v1/brokers/{broker-id}/users/{username}") == "/v1/brokers/{broker_id}/users/{username}"
    assert _path("/v1/broker-engine-types") == "/v1/broker-engine-types"
    from mqemu.ha.aws.service import Service

    assert all(callable(getattr(Service, name, None)) for name in MODEL.operations)


def test_inputs_are_read_where_the_model_puts_them_and_enums_in_any_case():
    op = MODEL.operations["CreateBroker"]
    body = json.dumps({"brokerName": "b", "deploymentMode": "single_instance", "engineType": "ActiveMQ",
                       "hostInstanceType": "mq.m5.large", "publiclyAccessible": False,
                       "users": [{"username": "u1", "password": "p"}], "unknownKey": 1}).encode()
    p = MODEL.parse(op, {}, _Query(), {}, body)
    assert p["DeploymentMode"] == "SINGLE_INSTANCE" and p["EngineType"] == "ACTIVEMQ"
    assert p["Users"] == [{"Username": "u1", "Password": "p"}] and "unknownKey" not in p
    with pytest.raises(ApiError) as e:
        MODEL.parse(op, {}, _Query(), {}, b"{}")
    assert e.value.attribute == "hostInstanceType"
    nested = json.dumps({"brokerName": "b", "deploymentMode": "SINGLE_INSTANCE", "engineType": "ACTIVEMQ",
                         "hostInstanceType": "m", "publiclyAccessible": False, "users": [{"username": "u1"}]})
    with pytest.raises(ApiError) as e:
        MODEL.parse(op, {}, _Query(), {}, nested.encode())
    assert e.value.attribute == "users.password" and "users.password" in e.value.message
    lst = MODEL.operations["ListUsers"]
    assert MODEL.parse(lst, {"broker_id": "b-1"}, _Query(maxResults="7"), {}, b"") == {"BrokerId": "b-1",
                                                                                       "MaxResults": 7}


@pytest.mark.parametrize("code", ["BadRequestException", "UnauthorizedException", "ForbiddenException",
                                  "NotFoundException", "ConflictException", "InternalServerErrorException"])
def test_every_error_shape_is_read_back_by_botocore_as_its_code(code):
    error = ApiError(code, "why", "brokerName")
    status = MODEL.status_of(code)
    assert status == {"BadRequestException": 400, "UnauthorizedException": 401, "ForbiddenException": 403,
                      "NotFoundException": 404, "ConflictException": 409, "InternalServerErrorException": 500}[code]
    response = {"status_code": status, "headers": {"x-amzn-errortype": code}, "body": MODEL.error_body(error)}
    parsed = RestJSONParser().parse(response, BOTO.operation_model("CreateBroker").output_shape)
    assert parsed["Error"]["Code"] == code and parsed["Error"]["Message"] == "why"
    assert json.loads(MODEL.error_body(error)) == {"errorAttribute": "brokerName", "message": "why"}


async def _asgi(app, method, path, body=b"", headers=()):
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers], "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": "", "app": app}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def test_an_operation_that_fails_is_a_500_internal_server_error():
    class Broken:
        def __getattr__(self, name):
            async def fail(p):
                raise RuntimeError("boom")
            return fail

    app = make_app(MODEL, Broken())  # type: ignore[arg-type]
    status, headers, body = await _asgi(app, "GET", "/v1/brokers",
                                        headers=[("authorization", "AWS4-HMAC-SHA256 Credential=x")])
    assert status == 500 and headers["x-amzn-errortype"] == "InternalServerErrorException"
    assert "boom" in json.loads(body)["message"]
    status, headers, _ = await _asgi(app, "GET", "/v1/nowhere")
    assert status == 404 and headers["x-amzn-errortype"] == "NotFoundException"


def test_timestamps_are_iso8601_with_milliseconds():
    assert format_timestamp(0.5, "iso8601") == "1970-01-01T00:00:00.500Z"


def test_users_become_the_nodes_config_by_their_password_hashes():
    user = {"Username": "admin", **hashed('pa"ss-word-1'), "Groups": ["admins"]}
    text = node_config("activemq", "5.17", [user], [{"queue": ">", "read": "admins", "write": "admins",
                                                     "admin": "admins"}])
    assert 'pa"ss' not in text
    doc = tomllib.loads(text)
    assert doc["users"] == [{"name": "admin", "password_hash": user["PasswordHash"],
                             "hashing_algorithm": "rabbit_password_hashing_sha256", "groups": ["admins"]}]
    path_cfg = tomllib.loads(node_config("rabbitmq", "3.13", [{"Username": "a", **hashed("p" * 12)}], None))
    assert path_cfg["users"][0]["tags"] == ["administrator"] and path_cfg["engine_version"] == "3.13"


def test_node_config_loads_in_mqemu_and_its_users_log_in_by_the_hash(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(node_config("activemq", "5.17", [{"Username": "admin", **hashed("x" * 12), "Groups": ["admins"]}],
                                [{"queue": ">", "read": "admins", "write": "admins", "admin": "admins"}]))
    cfg = load_config(str(path), "activemq")
    assert cfg.engine_version == "5.17" and "admin" in cfg.auth.users
    assert cfg.auth.authorization is not None and len(cfg.auth.authorization) == 1
    assert cfg.auth.users["admin"].password == "" and cfg.auth.users["admin"].password_matches("x" * 12)
    assert not cfg.auth.users["admin"].password_matches("y" * 12)


def test_a_state_file_with_plain_passwords_is_hashed_when_read(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"brokers": {"b-1": {"Users": {"app": {
        "Current": {"Username": "app", "Password": "plain-secret-1"},
        "Pending": {"Username": "app", "Password": "plain-secret-2"}}}}}}))
    state = State(str(tmp_path))
    state.load()
    user = state.brokers["b-1"]["Users"]["app"]
    assert "Password" not in user["Current"] and "Password" not in user["Pending"]
    assert check_password_hash(user["Current"]["PasswordHash"], user["Current"]["HashingAlgorithm"], "plain-secret-1")
    assert "plain-secret" not in (tmp_path / "state.json").read_text()


def test_sanitization_keeps_what_amazon_mq_permits():
    xml = ('<broker xmlns="http://activemq.apache.org/schema/core"><destinationPolicy><policyMap><policyEntries>'
           '<policyEntry queue="&gt;" maxPageSize="${n}"/></policyEntries></policyMap></destinationPolicy>'
           '<sslContext/><plugins><jaasAuthenticationPlugin/></plugins></broker>')
    data, warnings = configs.sanitize("ACTIVEMQ", base64.b64encode(xml.encode()).decode())
    assert warnings == [
        {"ElementName": "policyEntry", "AttributeName": "maxPageSize", "Reason": "INVALID_ATTRIBUTE_VALUE_REMOVED"},
        {"ElementName": "sslContext", "Reason": "DISALLOWED_ELEMENT_REMOVED"},
        {"ElementName": "jaasAuthenticationPlugin", "Reason": "DISALLOWED_ELEMENT_REMOVED"}]
    kept = base64.b64decode(data).decode()
    assert "policyEntry" in kept and "sslContext" not in kept and "${n}" not in kept
    same, none = configs.sanitize("RABBITMQ", base64.b64encode(b"consumer_timeout = 10\n").decode())
    assert none == [] and base64.b64decode(same) == b"consumer_timeout = 10\n"
    with pytest.raises(ApiError):
        configs.sanitize("RABBITMQ", base64.b64encode(b"not a setting\n").decode())


def test_timing_profiles_and_pages():
    assert parse_timing("fast") == Timing() and parse_timing("aws") == TIMINGS["aws"]
    assert parse_timing("create=2,reboot=1") == Timing(2.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        parse_timing("slow")
    items, token = page(list(range(5)), 2, None)
    assert items == [0, 1]
    items, token = page(list(range(5)), 2, token)
    assert items == [2, 3]
    items, token = page(list(range(5)), 2, token)
    assert items == [4] and token is None
