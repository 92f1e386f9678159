"""Management API clients, unchanged, against a node: the ``rabbitmqadmin`` RabbitMQ ships
(Debian's rabbitmq-server package installs RabbitMQ 3.10's script as /usr/bin/rabbitmqadmin;
PyPI has no such package) and pyrabbit2; and ``mqemu serve --definitions``."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from tests.integration.test_cli import start, wait_ready

pytestmark = pytest.mark.timeout(60)
RABBITMQADMIN = shutil.which("rabbitmqadmin") or "/usr/bin/rabbitmqadmin"


@pytest.fixture
def node(mqemu_start):
    return mqemu_start(ports={"http": 0})


def admin(node, *args):
    if not os.path.exists(RABBITMQADMIN):
        pytest.skip("rabbitmqadmin is not installed (Debian: apt-get install rabbitmq-server)")
    out = subprocess.run([sys.executable, RABBITMQADMIN, "-H", "127.0.0.1", "-P", str(node.ports["http"]),
                          "-u", "guest", "-p", "guest", *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    return out.stdout


def test_rabbitmqadmin_declare_list_publish_get_delete_export_import(node, tmp_path, mqemu_start):
    admin(node, "declare", "exchange", "name=jobs", "type=direct")
    admin(node, "declare", "queue", "name=work", "durable=true")
    admin(node, "declare", "binding", "source=jobs", "destination=work", "routing_key=run")
    assert "Message published" in admin(node, "publish", "exchange=jobs", "routing_key=run", "payload=hello")
    queues = json.loads(admin(node, "-f", "raw_json", "list", "queues"))
    assert [(q["name"], q["messages_ready"]) for q in queues] == [("work", 1)]
    got = json.loads(admin(node, "-f", "raw_json", "get", "queue=work", "ackmode=ack_requeue_false"))
    assert got[0]["payload"] == "hello" and got[0]["routing_key"] == "run"
    assert "jobs" in admin(node, "list", "exchanges", "name", "type")
    assert "run" in admin(node, "list", "bindings")
    assert "guest" in admin(node, "list", "users") and "/" in admin(node, "list", "vhosts")
    export = tmp_path / "defs.json"
    assert "Exported definitions" in admin(node, "export", str(export))
    defs = json.loads(export.read_text())
    assert [q["name"] for q in defs["queues"]] == ["work"]
    other = mqemu_start(ports={"http": 0})
    assert "Uploaded definitions" in admin(other, "import", str(export))
    assert json.loads(admin(other, "-f", "raw_json", "list", "bindings", "source", "destination"))[-1] == {
        "source": "jobs", "destination": "work"}
    admin(node, "delete", "queue", "name=work")
    admin(node, "delete", "exchange", "name=jobs")
    assert json.loads(admin(node, "-f", "raw_json", "list", "queues")) == []


def test_pyrabbit2_client(node):
    from pyrabbit2.api import Client

    c = Client(f"127.0.0.1:{node.ports['http']}", "guest", "guest", timeout=10)
    assert c.is_alive()
    assert "/" in c.get_vhost_names()
    c.create_exchange("/", "px", "fanout", durable=True)
    c.create_queue("/", "pq", durable=True)
    c.create_binding("/", "px", "pq", "")
    assert c.publish("/", "px", "", "payload-1")
    assert c.get_queue_depth("/", "pq") == 1
    msgs = c.get_messages("/", "pq", count=1, requeue=True)
    assert msgs[0]["payload"] == "payload-1"
    assert [b["source"] for b in c.get_queue_bindings("/", "pq")] == ["", "px"]
    c.purge_queue("/", "pq")
    assert c.get_queue_depth("/", "pq") == 0
    assert c.get_whoami()["name"] == "guest"
    assert "queues" in c.get_definitions()
    c.delete_queue("/", "pq")
    c.delete_exchange("/", "px")
    assert [q["name"] for q in c.get_queues()] == ["aliveness-test"]  # is_alive left it, as on RabbitMQ


def test_serve_loads_definitions_and_rejects_a_bad_file_whole(tmp_path):
    from mqemu.broker.auth import hash_password

    good = {"users": [{"name": "ops", "password_hash": hash_password("s3", "rabbit_password_hashing_md5"),
                       "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ["administrator"]}],
            "vhosts": [{"name": "/"}, {"name": "prod"}],
            "permissions": [{"user": "ops", "vhost": "prod", "configure": ".*", "write": ".*", "read": ".*"}],
            "queues": [{"name": "q1", "vhost": "prod", "durable": True, "auto_delete": False, "arguments": {}}],
            "exchanges": [], "bindings": [], "policies": []}
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(good))
    proc, ready = start(tmp_path, "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off",
                        "--http-port", "0", "--definitions", str(path))
    try:
        info = wait_ready(proc, ready)
        req = urllib.request.Request(f"http://127.0.0.1:{info['http']}/api/queues/prod")
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(b"ops:s3").decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            assert [q["name"] for q in json.load(r)] == ["q1"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    bad = dict(good, queues=good["queues"] + [{"name": "q2", "vhost": "nowhere", "durable": True}])
    path.write_text(json.dumps(bad))
    proc, _ = start(tmp_path, "--amqp-port", "0", "--stomp-port", "off", "--mqtt-port", "off",
                    "--http-port", "off", "--definitions", str(path))
    assert proc.wait(15) == 1
    err = proc.stderr.read()
    assert "rejected, nothing applied" in err and "queue 'q2': vhost 'nowhere' does not exist" in err


def test_definitions_vhosts_exist_before_recovery(tmp_path):
    """A durable queue in a vhost only the definitions file makes keeps its messages across
    a restart of a node with a data directory."""
    import base64

    defs = {"vhosts": [{"name": "/"}, {"name": "orders"}],
            "permissions": [{"user": "guest", "vhost": "orders", "configure": ".*", "write": ".*", "read": ".*"}],
            "queues": [{"name": "kept", "vhost": "orders", "durable": True, "auto_delete": False, "arguments": {}}]}
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(defs))
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()

    def call(port, method, url, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api{url}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", auth)
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    args = ("--amqp-port", "off", "--stomp-port", "off", "--mqtt-port", "off", "--http-port", "0",
            "--definitions", str(path), "--data-dir", str(tmp_path / "data"))
    proc, ready = start(tmp_path, *args)
    try:
        port = wait_ready(proc, ready)["http"]
        assert call(port, "POST", "/exchanges/orders/amq.default/publish", {
            "properties": {"delivery_mode": 2}, "routing_key": "kept", "payload": "p",
            "payload_encoding": "string"}) == {"routed": True}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    proc, ready = start(tmp_path, *args)
    try:
        port = wait_ready(proc, ready)["http"]
        assert call(port, "GET", "/queues/orders/kept")["messages_ready"] == 1
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_users_vhosts_permissions_and_policies_made_through_the_api_survive_a_restart(tmp_path):
    import base64

    def call(port, method, url, body=None, user=b"guest:guest"):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api{url}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Authorization", "Basic " + base64.b64encode(user).decode())
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    args = ("--amqp-port", "off", "--stomp-port", "off", "--mqtt-port", "off", "--http-port", "0",
            "--data-dir", str(tmp_path / "data"))
    proc, ready = start(tmp_path, *args)
    try:
        port = wait_ready(proc, ready)["http"]
        call(port, "PUT", "/vhosts/v2", {})
        call(port, "PUT", "/users/carol", {"password": "c", "tags": "administrator"})
        call(port, "PUT", "/permissions/v2/carol", {"configure": ".*", "write": ".*", "read": ".*"})
        call(port, "PUT", "/queues/v2/kept", {"durable": True})
        call(port, "PUT", "/policies/v2/cap", {"pattern": "^kept$", "definition": {"max-length": 7}})
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    proc, ready = start(tmp_path, *args)
    try:
        port = wait_ready(proc, ready)["http"]
        assert call(port, "GET", "/whoami", user=b"carol:c")["name"] == "carol"
        q = call(port, "GET", "/queues/v2/kept", user=b"carol:c")
        assert q["policy"] == "cap" and q["effective_policy_definition"] == {"max-length": 7}
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
