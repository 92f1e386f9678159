"""ActiveMQ policies in the core: scheduled delivery, redelivery limit and ActiveMQ.DLQ."""

from __future__ import annotations

import pytest

from mqemu.broker.activemq import ActiveMQSettings
from mqemu.broker.config import BrokerConfig, ConfigError
from mqemu.broker.errors import PreconditionFailed

from test_activemq_support import consume, make_broker, publish


# -- scheduled delivery ---------------------------------------------------------------------
def test_delayed_message_is_held_then_routed():
    broker, clock = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, owner = consume(q, "c", no_ack=True)
    assert publish(vh, b"later", AMQ_SCHEDULED_DELAY="2000") == (1, False)
    assert owner.bodies() == [] and not q.ready
    clock.now += 1.999
    broker.timers.run_due(clock.now)
    assert owner.bodies() == []
    clock.now += 0.001
    broker.timers.run_due(clock.now)
    assert owner.bodies() == [b"later"]
    headers = owner.got[0][1].message.headers
    assert "AMQ_SCHEDULED_DELAY" not in headers and headers["scheduledJobId"].startswith("ID:")


def test_repeat_and_period():
    broker, clock = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    _, owner = consume(q, "c", no_ack=True)
    publish(vh, b"tick", AMQ_SCHEDULED_DELAY=1000, AMQ_SCHEDULED_PERIOD=500, AMQ_SCHEDULED_REPEAT=3)
    times = []
    for _ in range(40):
        clock.now += 0.1
        before = len(owner.got)
        broker.timers.run_due(clock.now)
        if len(owner.got) > before:
            times.append(round(clock.now - 1000.0, 1))
    assert times == [1.0, 1.5, 2.0, 2.5]  # repeat + 1 deliveries, one period apart
    assert len(broker.timers) == 0
    assert len({id(e.message) for _, e in owner.got}) == 4  # a fresh message each time


def test_period_without_delay_starts_after_one_period():
    broker, clock = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    publish(vh, b"p", AMQ_SCHEDULED_PERIOD="300")
    broker.timers.run_due(clock.now + 0.299)
    assert not q.ready
    broker.timers.run_due(clock.now + 0.3)
    assert len(q.ready) == 1


def test_scheduling_only_on_activemq():
    broker, clock = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    publish(vh, b"now", AMQ_SCHEDULED_DELAY="5000")
    assert len(q.ready) == 1


def test_scheduler_can_be_turned_off():
    broker, _ = make_broker(extra={"activemq": {"scheduler_support": False}})
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    publish(vh, b"now", AMQ_SCHEDULED_DELAY="5000")
    assert len(q.ready) == 1


@pytest.mark.parametrize("headers", [{"AMQ_SCHEDULED_DELAY": "soon"},
                                     {"AMQ_SCHEDULED_DELAY": 10, "AMQ_SCHEDULED_REPEAT": 1001}])
def test_bad_schedule_values(headers):
    broker, _ = make_broker()
    with pytest.raises(PreconditionFailed):
        publish(broker.vhosts["/"], b"x", **headers)


def test_cron_only_is_delivered_at_once():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    publish(vh, b"cron", AMQ_SCHEDULED_CRON="* * * * *")
    assert len(q.ready) == 1


# -- redelivery policy and ActiveMQ.DLQ -----------------------------------------------------
def _redeliver_until_dlq(broker, persistent=True, limit=6):
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "c")
    publish(vh, b"poison", persistent=persistent)
    deliveries = 0
    while owner.got:
        _, entry = owner.got.pop()
        deliveries += 1
        q.reject([entry], c, requeue=True)
        assert deliveries <= limit + 1
    return vh, q, deliveries


def test_message_goes_to_dlq_after_maximum_redeliveries():
    broker, _ = make_broker()
    vh, q, deliveries = _redeliver_until_dlq(broker)
    assert deliveries == 7  # the first delivery and 6 redeliveries
    assert not q.ready and q.unacked == 0
    dlq = vh.queues["ActiveMQ.DLQ"]
    assert dlq.durable and len(dlq.ready) == 1
    dead = dlq.ready[0].message
    assert dead.body == b"poison" and dead.persistent
    cause = dead.headers["dlqDeliveryFailureCause"]
    assert cause.startswith("java.lang.Throwable: Delivery[7] exceeds redelivery policy limit:RedeliveryPolicy {")
    assert "maximumRedeliveries = 6" in cause


def test_non_persistent_poison_messages_are_dropped():
    broker, _ = make_broker()
    vh, q, deliveries = _redeliver_until_dlq(broker, persistent=False)
    assert deliveries == 7 and "ActiveMQ.DLQ" not in vh.queues and not q.ready


def test_non_persistent_kept_when_configured():
    broker, _ = make_broker(extra={"activemq": {"process_non_persistent": True, "maximum_redeliveries": 2}})
    vh, q, deliveries = _redeliver_until_dlq(broker, persistent=False, limit=2)
    assert deliveries == 3
    dead = vh.queues["ActiveMQ.DLQ"].ready[0].message
    assert dead.persistent and dead.headers["originalDeliveryMode"] == "NON_PERSISTENT"


def test_connection_loss_counts_as_redelivery():
    broker, _ = make_broker(extra={"activemq": {"maximum_redeliveries": 0}})
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "c")
    publish(vh, b"m")
    q.remove_consumer(c)
    q.release_consumer_entries(c, [owner.got[0][1]])
    assert len(vh.queues["ActiveMQ.DLQ"].ready) == 1 and not q.ready


def test_reject_without_requeue_goes_to_dlq_without_cause():
    broker, _ = make_broker()
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "c")
    publish(vh, b"nacked")
    q.reject([owner.got[0][1]], c, requeue=False)
    dead = vh.queues["ActiveMQ.DLQ"].ready[0].message
    assert "dlqDeliveryFailureCause" not in dead.headers


def test_no_dlq_loop():
    broker, _ = make_broker(extra={"activemq": {"maximum_redeliveries": 0}})
    vh = broker.vhosts["/"]
    dlq = vh.declare_queue("ActiveMQ.DLQ", durable=True)
    c, owner = consume(dlq, "c")
    publish(vh, b"m", queue="ActiveMQ.DLQ")
    dlq.reject([owner.got[0][1]], c, requeue=True)
    assert not dlq.ready


def test_rabbitmq_requeue_is_unlimited():
    broker, _ = make_broker("rabbitmq")
    vh = broker.vhosts["/"]
    q = vh.declare_queue("q")
    c, owner = consume(q, "c")
    publish(vh, b"m")
    for _ in range(20):
        _, entry = owner.got.pop()
        q.reject([entry], c, requeue=True)
    assert len(owner.got) == 1


def test_settings_from_config():
    cfg = BrokerConfig(engine="activemq")
    cfg.extra = {"activemq": {"maximum_redeliveries": 2}}
    assert ActiveMQSettings.from_config(cfg).maximum_redeliveries == 2
    cfg.extra = {"activemq": {"maximum_redeliveries": "2"}}
    with pytest.raises(ConfigError):
        ActiveMQSettings.from_config(cfg)
    assert ActiveMQSettings.from_config(BrokerConfig()) == ActiveMQSettings()
