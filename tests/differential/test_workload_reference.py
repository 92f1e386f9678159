"""The workload and the checker against the reference brokers: the same clients, reconnect
loop and verdict work on RabbitMQ 3.10 (AMQP, STOMP, MQTT) and ActiveMQ 5.17 (STOMP, MQTT),
so a failover scenario can be replayed there. Skips without the ``MQEMU_REF_*`` variables.

Each run uses its own queue (and MQTT client id) and removes what it left behind: the
RabbitMQ queues through AMQP, the MQTT sessions by a clean-session connect.
"""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from mqemu.ha.checker import check
from mqemu.ha.history import read_history
from mqemu.ha.workload import Workload, WorkloadOptions, parse_endpoints
from mqemu.ha.workload_clients import Settings

CASES = [("MQEMU_REF_AMQP", "amqp"), ("MQEMU_REF_RABBIT_STOMP", "stomp"), ("MQEMU_REF_RABBIT_MQTT", "mqtt"),
         ("MQEMU_REF_ACTIVEMQ_STOMP", "stomp"), ("MQEMU_REF_ACTIVEMQ_MQTT", "mqtt")]


def _clean_up(var: str, protocol: str, queue: str) -> None:
    if protocol == "mqtt":
        import paho.mqtt.client as mqtt
        host, port = os.environ[var].rsplit(":", 1)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{queue}-consumer", clean_session=True)
        connected = threading.Event()
        client.on_connect = lambda *a: connected.set()
        client.username_pw_set("guest", "guest")
        client.connect(host, int(port))
        client.loop_start()
        connected.wait(5)  # the CONNACK: the clean connect has dropped the session
        client.disconnect()
        client.loop_stop()
    elif var != "MQEMU_REF_ACTIVEMQ_STOMP" and os.environ.get("MQEMU_REF_AMQP"):
        import pika
        conn = pika.BlockingConnection(pika.URLParameters(os.environ["MQEMU_REF_AMQP"]))
        conn.channel().queue_delete(queue)
        conn.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("var, protocol", CASES, ids=[v.removeprefix("MQEMU_REF_").lower() for v, _ in CASES])
def test_the_workload_loses_nothing_on_the_reference_broker(var, protocol, tmp_path):
    if not os.environ.get(var):
        pytest.skip(f"{var} is not set (no reference broker)")
    endpoints, user, password = parse_endpoints(os.environ[var], protocol)
    queue = f"mqemu-checker-{uuid.uuid4().hex[:8]}"
    settings = Settings(queue=queue, timeout=3.0, user=user or "guest", password=password or "guest", client_id=queue)
    w = Workload(WorkloadOptions(protocol, endpoints, count=40, drain=3.0, settings=settings), tmp_path / "h.jsonl")
    try:
        assert w.start().wait(30), "the workload did not finish"
    finally:
        w.stop()
        _clean_up(var, protocol, queue)
    v = check(read_history(tmp_path / "h.jsonl"))
    c = v.counts
    assert (c.attempted, c.acknowledged, c.delivered, c.lost, c.unexpected, c.duplicated) == (40, 40, 40, 0, 0, 0)
    assert v.unavailable == []
