"""A CLUSTER_MULTI_AZ broker made with boto3: three RabbitMQ nodes behind the balancer, one
``amqps://`` endpoint (the balancer's, as AWS gives the NLB's), and a RebootBroker that
restarts one node at a time while a pika publisher keeps publishing with confirms through
that endpoint, reconnecting when its node goes.

The nodes share no queues yet (classic queues live on their node until the cluster's
queues land), so a reconnect through the balancer may land on another node and the
messages confirmed before it wait on the first one, in its store. The test holds to what is
true now: at the end it reads the queue on every node through that node's own endpoint
(``GET /mqemu/brokers/ID``, mqemu's own view) and the harness's checker finds every
confirmed message there (lost == 0). It does not claim that a consumer on the balancer sees
them all; once classic queues are reachable from every node, the reading side can move to
the balancer too.
"""

from __future__ import annotations

import threading
import time

import pytest

from mqemu.ha.checker import check
from mqemu.ha.history import HistoryWriter, read_history

pytestmark = pytest.mark.timeout(240)

PASSWORD = "mqemu-secret-1"
QUEUE = "orders"
ARGS = {"x-queue-type": "classic"}  # per node, said outright (4.2 would make a durable queue quorum)


def _params(aws, host, port):
    import pika

    return pika.ConnectionParameters(host, port, credentials=pika.PlainCredentials("admin", PASSWORD),
                                     connection_attempts=1, socket_timeout=5, blocked_connection_timeout=5,
                                     ssl_options=pika.SSLOptions(aws.ssl_context(), host))


class Publisher(threading.Thread):
    """Publishes ids m0, m1, ... with confirms through one endpoint, reconnecting (and
    publishing an unconfirmed id again) whenever its connection breaks; writes the history."""

    def __init__(self, params, history: HistoryWriter) -> None:
        super().__init__(name="publisher", daemon=True)
        self.params, self.history = params, history
        self.confirmed = 0
        self.connects = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _run(self) -> None:
        import pika

        seq, channel, conn = 0, None, None
        while not self.stop.is_set():
            if channel is None:
                self.history.record("publisher", "invoke", "connect", "balancer")
                try:
                    conn = pika.BlockingConnection(self.params)
                    channel = conn.channel()
                    channel.confirm_delivery()
                    channel.queue_declare(QUEUE, durable=True, arguments=ARGS)
                except (pika.exceptions.AMQPError, OSError) as e:  # pika lets a TLS handshake's errors through
                    self.history.record("publisher", "fail", "connect", "balancer", error=repr(e))
                    channel = None
                    time.sleep(0.05)
                    continue
                self.connects += 1
                self.history.record("publisher", "ok", "connect", "balancer")
            msg_id = f"m{seq}"
            self.history.record("publisher", "invoke", "enqueue", msg_id, publisher="publisher", seq=seq)
            try:
                channel.basic_publish("", QUEUE, msg_id.encode(), pika.BasicProperties(delivery_mode=2))
            except (pika.exceptions.AMQPError, OSError) as e:  # the node went: unknown, published again
                self.history.record("publisher", "info", "enqueue", msg_id, publisher="publisher", seq=seq,
                                    error=repr(e))
                self.history.record("publisher", "info", "error", "balancer", error=repr(e))
                channel = None
                continue
            self.history.record("publisher", "ok", "enqueue", msg_id, publisher="publisher", seq=seq)
            self.confirmed += 1
            seq += 1
        if conn is not None and conn.is_open:
            conn.close()
        self.history.record("publisher", "info", "done")


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_cluster_broker_reboots_one_node_at_a_time_and_loses_nothing_confirmed(mqemu_aws, tmp_path):
    import pika

    aws, c = mqemu_aws, mqemu_aws.client
    bid = c.create_broker(BrokerName="cluster", DeploymentMode="CLUSTER_MULTI_AZ", EngineType="RabbitMQ",
                          HostInstanceType="mq.m5.large", PubliclyAccessible=False,
                          Users=[{"Username": "admin", "Password": PASSWORD}])["BrokerId"]
    d = aws.wait_state(bid, "RUNNING", timeout=120)
    (instance,) = d["BrokerInstances"]  # one, the balancer's, as AWS gives the NLB's
    assert sorted(instance) == ["ConsoleURL", "Endpoints"]
    ((host, port),) = aws.endpoints(d, "amqps")
    nodes = aws.mqemu_broker(bid)["nodes"]
    assert [(n["name"], n["role"]) for n in nodes] == [(f"node-{i}", "member") for i in (1, 2, 3)]

    history = HistoryWriter(tmp_path / "history.jsonl", flush_every=1)
    publisher = Publisher(_params(aws, host, port), history)
    publisher.start()
    try:
        _wait(lambda: publisher.confirmed >= 50 or publisher.error, 60, "no confirms before the reboot")
        before = publisher.confirmed
        history.fault("reboot", bid, "invoke")
        c.reboot_broker(BrokerId=bid)
        assert c.describe_broker(BrokerId=bid)["BrokerState"] == "REBOOT_IN_PROGRESS"
        aws.wait_state(bid, "RUNNING", timeout=150)
        during = publisher.confirmed - before
        history.fault("reboot", bid, "ok")
        after = publisher.confirmed
        _wait(lambda: publisher.confirmed >= after + 50 or publisher.error, 60, "no confirms after the reboot")
    finally:
        publisher.stop.set()
        publisher.join(30)
    assert publisher.error is None, publisher.error
    assert during > 0  # two nodes served throughout the reboot
    assert publisher.connects >= 2  # every node restarted, the publisher's too: it reconnected
    assert aws.endpoints(aws.wait_state(bid, "RUNNING"), "amqps") == [(host, port)]  # the same endpoint

    # read the queue on every node, each through its own endpoint
    for node in aws.mqemu_broker(bid)["nodes"]:
        (url,) = node["endpoints"]
        nhost, _, nport = url.split("://")[1].rpartition(":")
        with pika.BlockingConnection(_params(aws, nhost, int(nport))) as conn:
            ch = conn.channel()
            ch.queue_declare(QUEUE, durable=True, arguments=ARGS)
            while (got := ch.basic_get(QUEUE))[0] is not None:
                body = got[2].decode()
                history.record(node["name"], "ok", "dequeue", body, redelivered=got[0].redelivered)
                ch.basic_ack(got[0].delivery_tag)
                history.record(node["name"], "ok", "ack", body)
    history.close()
    verdict = check(read_history(tmp_path / "history.jsonl"))
    counts = verdict.counts
    assert counts.lost == 0, counts.lost_ids
    assert counts.unexpected == 0
    assert counts.acknowledged == publisher.confirmed >= 150
    # the balancer's ports (the NLB's name) outlive a restart of mqemu aws too
    aws.restart()
    c = aws.client
    assert aws.wait_state(bid, "RUNNING", timeout=120)["BrokerInstances"] == [instance]
    c.delete_broker(BrokerId=bid)
    aws.wait_gone(bid, timeout=60)
