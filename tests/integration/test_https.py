"""The HTTPS listener: the management API (RabbitMQ) and the console (ActiveMQ) over TLS with
the node's certificate, verified by httpx against the node's CA; its ports per engine and
per layout; ``mqemu serve --tls --https-port``."""

import json
import signal
import ssl
import subprocess
import sys
import time

import httpx
import pytest
import trustme

from mqemu.broker.config import BrokerConfig
from mqemu.ha.node import Node, NodeOptions, NodeStartError
from mqemu.ha.tls import TLSOptions

pytestmark = pytest.mark.timeout(40)


def verified(ca_file):
    return ssl.create_default_context(cafile=ca_file)


def test_rabbitmq_management_api_over_https(mqemu_start):
    node = mqemu_start(tls=TLSOptions(generate=True), ports={"https": 0, "http": 0})
    assert node.ports["https"] != node.ports["http"]
    with httpx.Client(verify=verified(node.node.tls.ca_file), auth=("guest", "guest"), timeout=10) as client:
        for host in ("localhost", "127.0.0.1"):
            r = client.get(f"https://{host}:{node.ports['https']}/api/overview")
            assert r.status_code == 200 and r.json()["product_name"] == "RabbitMQ"
    # plain HTTP beside it, as RabbitMQ runs 15672 and 15671 side by side
    assert httpx.get(f"http://127.0.0.1:{node.ports['http']}/api/overview", auth=("guest", "guest"),
                     timeout=10).status_code == 200


def test_activemq_console_over_https_and_another_ca_is_refused(mqemu_start):
    node = mqemu_start(config=BrokerConfig(engine="activemq"), tls=TLSOptions(generate=True), ports={"https": 0})
    url = f"https://localhost:{node.ports['https']}"
    with httpx.Client(verify=verified(node.node.tls.ca_file), auth=("admin", "admin"), timeout=10) as client:
        assert client.post(f"{url}/api/message/secure?type=queue", data={"body": "over tls"}).text == "Message sent"
        r = client.get(f"{url}/admin/xml/queues.jsp")
        assert r.status_code == 200 and '<queue name="secure">' in r.text
    other = trustme.CA()
    with httpx.Client(verify=ssl.create_default_context(cadata=other.cert_pem.bytes().decode()),
                      timeout=10) as client:
        with pytest.raises(httpx.ConnectError):
            client.get(f"{url}/admin/xml/queues.jsp")


def test_https_ports_per_engine_and_layout():
    tls = TLSOptions(generate=True)
    for engine, default, amazon in (("rabbitmq", 15671, 443), ("activemq", 8162, 8162)):
        config = BrokerConfig(engine=engine)
        plain = {"rabbitmq": 15672, "activemq": 8161}[engine]
        node = Node(NodeOptions(config=config, tls=tls))
        assert node.http_plan() == [("http", plain), ("https", default)]
        node.tls.discard()
        node = Node(NodeOptions(config=config, layout="amazon-mq"))
        assert node.http_plan() == [("https", amazon)]  # Amazon MQ's console is TLS only
        node.tls.discard()
        node = Node(NodeOptions(config=config, ports={"https": "off"}))
        assert node.http_plan() == [("http", plain)]  # no TLS: no HTTPS
    with pytest.raises(NodeStartError, match="needs TLS"):
        Node(NodeOptions(ports={"https": 0}))


def test_serve_names_https_in_its_ready_file(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "mqemu.ha.cli", "serve", "--ready-file", str(ready),
                             "--amqp-port", "off", "--stomp-port", "off", "--mqtt-port", "off",
                             "--amqps-port", "off", "--stomps-port", "off", "--mqtts-port", "off",
                             "--http-port", "off", "--https-port", "0", "--tls"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        assert set(info) == {"https", "ca", "pid"}
        r = httpx.get(f"https://localhost:{info['https']}/api/whoami", auth=("guest", "guest"),
                      verify=verified(info["ca"]), timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "guest"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert f"listening protocol=https host=127.0.0.1 port={info['https']}" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
